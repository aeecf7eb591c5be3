/* Per-registry timing: answers, unknown answers, rate-limited answers and a
 * latency histogram, over a registry's lifetime and the last few minutes.
 * The record is what availd-cache stores per registry (cache_store.c). */
#ifndef TIMING_H
#define TIMING_H

#include "av_proto.h"

#define TIMING_BUCKETS 128  /* latency histogram: 4 buckets per power of two of microseconds */
#define TIMING_WINDOWS 5    /* one-minute windows kept for "recent" figures */
#define TIMING_VERSION 1

typedef struct {
    uint64_t count;
    uint64_t errors;        /* answers that were unknown */
    uint64_t rate_limited;
    uint32_t hist[TIMING_BUCKETS];
} timing_counts_t;

/* A registry's figures as `stats` shows them. */
typedef struct {
    char registry[AV_REGISTRY_MAX + 1];
    timing_counts_t total;
    timing_counts_t recent; /* the last TIMING_WINDOWS minutes */
    uint64_t last_ms;
} timing_t;

/* The stored record: the lifetime counts and a ring of one-minute windows. */
typedef struct {
    uint32_t version;
    uint32_t pad;
    uint64_t last_ms;
    timing_counts_t total;
    uint64_t window_minute[TIMING_WINDOWS];
    timing_counts_t window[TIMING_WINDOWS];
} timing_record_t;

/* An empty record of this version. */
void timing_record_init(timing_record_t *rec);
/* Counts answer a as a sample taken at now_ms. */
void timing_record_add(timing_record_t *rec, const av_answer_t *a, uint64_t now_ms);
/* The record's figures at now_ms: the lifetime, and the windows of the
 * last TIMING_WINDOWS minutes summed. */
void timing_record_view(const timing_record_t *rec, uint64_t now_ms, av_str_t registry, timing_t *out);

/* Latency at quantile q (0..1) from a histogram, in microseconds. */
uint64_t timing_quantile(const timing_counts_t *c, double q);
int timing_bucket(uint64_t latency_us);
/* The largest latency bucket b holds, in microseconds. */
uint64_t timing_bucket_upper_us(int b);

#endif
