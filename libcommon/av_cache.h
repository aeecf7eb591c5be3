/* The answer cache as its readers see it: an LMDB environment that
 * availd-cache alone writes (daemons/cache/cache_store.c) and that readers
 * (the dispatcher) open read-only and never wait for. The record layout is
 * here once, for the writer and the readers. */
#ifndef AV_CACHE_H
#define AV_CACHE_H

#include "av_daemon.h"
#include "av_names.h"
#include "av_proto.h"

#define AV_CACHE_REASON_MAX 63
/* The database of answers in the environment: A-label name -> record. */
#define AV_CACHE_ANSWERS "answers"
/* An encoded record: a fixed header, then the registry and reason bytes. */
#define AV_CACHE_RECORD_HEAD 32
#define AV_CACHE_RECORD_MAX (AV_CACHE_RECORD_HEAD + AV_REGISTRY_MAX + AV_CACHE_REASON_MAX)

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

/* The record of an answer into buf; returns its size in bytes. */
size_t av_cache_record_encode(const av_cached_t *cached, uint8_t buf[AV_CACHE_RECORD_MAX]);
/* A record read back; one it cannot read (another version, cut short) is
 * an `unknown` with nothing else set. */
void av_cache_record_decode(const void *data, size_t size, av_cached_t *out);

/* A reader: NULL while the environment does not exist yet, or its file is
 * damaged (said once per file) until availd-cache rebuilds it: try again
 * later, every lookup a miss meanwhile. */
av_cache_t *av_cache_open_reader(const char *path);
void av_cache_close(av_cache_t **self_p);

/* 0 found (fresh or not: compare expires_ms), 1 absent, <0 this reader can
 * read no more: its file was cut short, damaged or replaced by a new one
 * (availd-cache rebuilt it), or LMDB failed. Close it and open a reader
 * again later. */
int av_cache_get(av_cache_t *self, const char *name, av_cached_t *out);

#endif
