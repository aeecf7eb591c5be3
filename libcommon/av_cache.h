/* The answer cache and the timing database: one LMDB environment with a
 * single writer (availd-cache) and readers that never wait for it (the
 * dispatcher). Records are fixed binary layouts, read in place. */
#ifndef AV_CACHE_H
#define AV_CACHE_H

#include "av_daemon.h"
#include "av_names.h"
#include "av_proto.h"

#define AV_CACHE_REASON_MAX 63
#define AV_TIMING_BUCKETS 128   /* latency histogram: 4 buckets per power of two of microseconds */
#define AV_TIMING_WINDOWS 5     /* one-minute windows kept for "recent" figures */

typedef struct av_cache av_cache_t;

typedef struct {
    av_status_t status;
    av_source_t source;
    uint64_t at_ms;         /* when the verdict was made */
    uint64_t expires_ms;
    uint32_t latency_us;
    char registry[AV_REGISTRY_MAX + 1];
    char reason[AV_CACHE_REASON_MAX + 1];
} av_cached_t;

typedef struct {
    uint64_t count;
    uint64_t errors;        /* answers that were unknown */
    uint64_t rate_limited;
    uint32_t hist[AV_TIMING_BUCKETS];
} av_timing_counts_t;

typedef struct {
    char registry[AV_REGISTRY_MAX + 1];
    av_timing_counts_t total;
    av_timing_counts_t recent; /* the last AV_TIMING_WINDOWS minutes */
    uint64_t last_ms;
} av_timing_t;

/* Writer: creates the environment. */
av_cache_t *av_cache_open_writer(av_daemon_t *d, const av_cache_cfg_t *cfg);
/* Reader: NULL while the environment does not exist yet (try again later). */
av_cache_t *av_cache_open_reader(const char *path);
void av_cache_close(av_cache_t **self_p);

/* 0 found (fresh or not: compare expires_ms), 1 absent, <0 error. */
int av_cache_get(av_cache_t *self, const char *name, av_cached_t *out);

/* Stores a batch of puts in one transaction: answers with ttl_s > 0, and
 * timing samples where put->timing. Evicts the soonest-expiring entries
 * past max_entries. Returns 0 or <0. */
int av_cache_put_batch(av_cache_t *self, const av_put_t *const *puts, size_t n, uint64_t now_ms);
/* Deletes up to max expired entries; returns how many. */
uint64_t av_cache_sweep(av_cache_t *self, uint64_t now_ms, uint64_t max);
/* One name (A-label) or, with NULL, everything. Returns entries removed. */
int64_t av_cache_purge(av_cache_t *self, const char *name);
uint64_t av_cache_entries(av_cache_t *self);
void av_cache_sync(av_cache_t *self);
/* Frees reader slots of killed processes; returns how many. */
int av_cache_reader_check(av_cache_t *self);

/* Every registry's timing, in name order. */
typedef void (*av_timing_fn)(void *arg, const av_timing_t *t);
int av_cache_timing(av_cache_t *self, uint64_t now_ms, av_timing_fn fn, void *arg);
/* Latency at quantile q (0..1) from a histogram, in microseconds. */
uint64_t av_timing_quantile(const av_timing_counts_t *c, double q);
int av_timing_bucket(uint64_t latency_us);
/* The largest latency bucket b holds, in microseconds. */
uint64_t av_timing_bucket_upper_us(int b);

#endif
