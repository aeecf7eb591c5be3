/* The names a run asks for. Every name is a pure function of a counter, so
 * the engine stores nothing per name yet can tell which name an answer
 * should be about, and the hash-rule truth of each. */
#include "load.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXED_COUNT_MAX 10000000u

static uint64_t
splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int
parse_u32(const char *text, size_t len, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char buf[16];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    unsigned long v = strtoul(buf, &end, 10);
    if (errno || *end || buf[0] == '-' || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* A TLD we can put after our labels: letters, digits, hyphens and dots. */
static int
set_tld(workload_t *w, const char *tld)
{
    size_t n = strlen(tld);
    if (n == 0 || n > LOAD_TLD_MAX || tld[0] == '.' || tld[n - 1] == '.')
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)tld[i];
        if (!isalnum(c) && c != '-' && c != '.')
            return -1;
        w->tld[i] = (char)tolower(c);
    }
    w->tld[n] = '\0';
    return 0;
}

int
workload_parse(workload_t *w, const char *spec)
{
    const char *f[4];
    size_t flen[4];
    int n = 0;
    const char *p = spec;
    int colons = 0;
    for (const char *q = spec; *q; q++)
        colons += *q == ':';
    if (colons > 3)
        goto bad;
    for (;;) {
        const char *colon = strchr(p, ':');
        f[n] = p;
        flen[n] = colon ? (size_t)(colon - p) : strlen(p);
        n++;
        if (!colon)
            break;
        p = colon + 1;
    }
    memset(w->tld, 0, sizeof w->tld);
    if (n == 3 && flen[0] == 3 && memcmp(f[0], "hit", 3) == 0) {
        w->kind = NAMES_HIT;
        w->hit_percent = 100;
        if (parse_u32(f[1], flen[1], 1, FIXED_COUNT_MAX, &w->fixed_count) < 0 || set_tld(w, f[2]) < 0)
            goto bad;
    } else if (n == 2 && flen[0] == 4 && memcmp(f[0], "miss", 4) == 0) {
        w->kind = NAMES_MISS;
        w->hit_percent = 0;
        w->fixed_count = 0;
        if (set_tld(w, f[1]) < 0)
            goto bad;
    } else if (n == 4 && flen[0] == 3 && memcmp(f[0], "mix", 3) == 0) {
        w->kind = NAMES_MIX;
        if (parse_u32(f[1], flen[1], 0, 100, &w->hit_percent) < 0 ||
            parse_u32(f[2], flen[2], 1, FIXED_COUNT_MAX, &w->fixed_count) < 0 || set_tld(w, f[3]) < 0)
            goto bad;
    } else {
        goto bad;
    }
    return 0;
bad:
    fprintf(stderr, "availd-load: --names %s: want hit:N:TLD, miss:TLD or mix:P:N:TLD "
                    "(N 1..%u, P 0..100, TLD of letters, digits, '-' and '.')\n",
            spec, FIXED_COUNT_MAX);
    return -1;
}

static size_t
fixed_name(const workload_t *w, uint64_t k, char *out, size_t size)
{
    int n = snprintf(out, size, "bench-%llu.%s", (unsigned long long)k, w->tld);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

size_t
workload_name(const workload_t *w, names_from_t from, uint64_t counter, char *out, size_t size)
{
    if (from == NAMES_FROM_FIXED)
        return fixed_name(w, w->fixed_count ? counter % w->fixed_count : counter, out, size);
    switch (w->kind) {
    case NAMES_HIT:
        return fixed_name(w, counter % w->fixed_count, out, size);
    case NAMES_MIX: {
        /* A hash of the counter, not the counter itself: hits and misses
         * interleave instead of coming in runs. */
        uint64_t r = splitmix64(counter ^ w->seed);
        if (r % 100 < w->hit_percent)
            return fixed_name(w, (r >> 32) % w->fixed_count, out, size);
        break;
    }
    case NAMES_MISS:
        break;
    }
    int n = snprintf(out, size, "m%sx%llu.%s", w->run, (unsigned long long)counter, w->tld);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

av_status_t
workload_truth(const char *name, size_t len)
{
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        h = (h ^ c) * 0x01000193u;
    }
    return h % 2 == 0 ? AV_STATUS_AVAILABLE : AV_STATUS_REGISTERED;
}
