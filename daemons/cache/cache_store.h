/* availd-cache's store: the single writer of the answer cache (whose record
 * layout readers share through av_cache.h) and of the timing database, in
 * one LMDB environment. Times are parameters (now_ms), never the clock. */
#ifndef CACHE_STORE_H
#define CACHE_STORE_H

#include "av_cache.h"
#include "timing.h"

typedef struct cache_store cache_store_t;

/* Creates the environment when it does not exist; moves a damaged one
 * aside (data.mdb.damaged-TIMESTAMP), reports it and starts empty
 * (av_lmdb_open_rebuildable). d may be NULL (tests). */
cache_store_t *cache_store_open(av_daemon_t *d, const av_cache_cfg_t *cfg);
void cache_store_close(cache_store_t **self_p);

/* 0 found (fresh or not: compare expires_ms), 1 absent, <0 error. */
int cache_store_get(cache_store_t *self, const char *name, av_cached_t *out);
/* Stores a batch of puts in one transaction: answers with ttl_s > 0, and
 * timing samples where put->timing. Evicts the soonest-expiring entries
 * past max_entries. Returns 0 or <0. */
int cache_store_put_batch(cache_store_t *self, const av_put_t *const *puts, size_t n, uint64_t now_ms);
/* Deletes up to max expired entries; returns how many. */
uint64_t cache_store_sweep(cache_store_t *self, uint64_t now_ms, uint64_t max);
/* One name (A-label) or, with NULL, everything. Returns entries removed. */
int64_t cache_store_purge(cache_store_t *self, const char *name);
uint64_t cache_store_entries(cache_store_t *self);
void cache_store_sync(cache_store_t *self);
/* Frees reader slots of killed processes; returns how many. */
int cache_store_reader_check(cache_store_t *self);

/* Every registry's timing, in name order. */
typedef void (*cache_timing_fn)(void *arg, const timing_t *t);
int cache_store_timing(cache_store_t *self, uint64_t now_ms, cache_timing_fn fn, void *arg);

#endif
