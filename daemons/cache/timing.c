/* The timing histogram and its per-minute windows: pure arithmetic on a
 * record, stored and read back by cache_store.c. */
#include "timing.h"

#include <string.h>

#define MINUTE_MS 60000

int
timing_bucket(uint64_t us)
{
    if (us < 4)
        return (int)us;
    int msb = 63 - __builtin_clzll(us);
    int frac = (int)((us >> (msb - 2)) & 3);
    int b = msb * 4 + frac;
    return b >= TIMING_BUCKETS ? TIMING_BUCKETS - 1 : b;
}

uint64_t
timing_bucket_upper_us(int b)
{
    /* Buckets 4-7 are never used (timing_bucket maps 4 us to 8). */
    if (b < 8)
        return b < 4 ? (uint64_t)b : 3;
    int msb = b / 4, frac = b % 4;
    return ((uint64_t)(5 + frac) << (msb - 2)) - 1;
}

uint64_t
timing_quantile(const timing_counts_t *c, double q)
{
    uint64_t total = 0, seen = 0;
    for (int b = 0; b < TIMING_BUCKETS; b++)
        total += c->hist[b];
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total + 0.5);
    if (want == 0)
        want = 1;
    for (int b = 0; b < TIMING_BUCKETS; b++) {
        seen += c->hist[b];
        if (seen >= want)
            return timing_bucket_upper_us(b);
    }
    return timing_bucket_upper_us(TIMING_BUCKETS - 1);
}

static void
counts_add(timing_counts_t *c, const av_answer_t *a)
{
    c->count++;
    if (a->status == AV_STATUS_UNKNOWN)
        c->errors++;
    if (av_str_eq(a->reason, AV_REASON_RATE_LIMITED))
        c->rate_limited++;
    c->hist[timing_bucket(a->latency_us)]++;
}

static void
counts_sum(timing_counts_t *into, const timing_counts_t *c)
{
    into->count += c->count;
    into->errors += c->errors;
    into->rate_limited += c->rate_limited;
    for (int b = 0; b < TIMING_BUCKETS; b++)
        into->hist[b] += c->hist[b];
}

void
timing_record_init(timing_record_t *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->version = TIMING_VERSION;
}

void
timing_record_add(timing_record_t *rec, const av_answer_t *a, uint64_t now_ms)
{
    uint64_t minute = now_ms / MINUTE_MS;
    int slot = (int)(minute % TIMING_WINDOWS);
    if (rec->window_minute[slot] != minute) {
        memset(&rec->window[slot], 0, sizeof rec->window[slot]);
        rec->window_minute[slot] = minute;
    }
    counts_add(&rec->total, a);
    counts_add(&rec->window[slot], a);
    rec->last_ms = now_ms;
}

void
timing_record_view(const timing_record_t *rec, uint64_t now_ms, av_str_t registry, timing_t *out)
{
    uint64_t minute = now_ms / MINUTE_MS;
    memset(out, 0, sizeof *out);
    av_str_copy(out->registry, sizeof out->registry, registry);
    out->total = rec->total;
    out->last_ms = rec->last_ms;
    for (int w = 0; w < TIMING_WINDOWS; w++)
        if (rec->window_minute[w] + TIMING_WINDOWS > minute)
            counts_sum(&out->recent, &rec->window[w]);
}
