/* The latency histogram: log-linear buckets (HdrHistogram's layout) in one
 * fixed array, so recording a sample is a few instructions and never
 * allocates, however long the run. */
#include "load.h"

#define SUB_COUNT (1u << LOAD_HIST_SUB_BITS) /* buckets per power of two */

static uint32_t
bucket_of(uint64_t v)
{
    if (v < 2 * SUB_COUNT)
        return (uint32_t)v;
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(v);
    uint32_t shift = msb - LOAD_HIST_SUB_BITS;
    return shift * SUB_COUNT + (uint32_t)(v >> shift);
}

/* The highest value that falls into bucket i. */
static uint64_t
bucket_top(uint32_t i)
{
    if (i < 2 * SUB_COUNT)
        return i;
    uint32_t shift = i / SUB_COUNT - 1;
    uint64_t sub = i - shift * SUB_COUNT;
    return ((sub + 1) << shift) - 1;
}

void
hist_record(load_hist_t *h, uint64_t value_us)
{
    if (value_us > LOAD_HIST_MAX_US)
        value_us = LOAD_HIST_MAX_US;
    h->counts[bucket_of(value_us)]++;
    h->total++;
    h->sum_us += value_us;
    if (value_us > h->max_us)
        h->max_us = value_us;
}

uint64_t
hist_quantile(const load_hist_t *h, double q)
{
    if (h->total == 0)
        return 0;
    /* The rank of the sample at q, counted from 1, as "nearest rank". */
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < LOAD_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return top < h->max_us ? top : h->max_us;
        }
    }
    return h->max_us;
}
