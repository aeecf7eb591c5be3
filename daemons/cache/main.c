/*
 * NAME
 *   availd-cache - the single writer of availd's answer cache and timing
 *
 * SUMMARY
 *   availd-cache [-c FILE] [-n] [-f]
 *
 * DESCRIPTION
 *   The dispatcher pushes a `put` for every answer a registry gave: the
 *   answer with the TTL its registry's config sets for its status (unknown
 *   answers are not stored unless a TTL is configured for them), and a
 *   latency sample for the timing database. availd-cache stores them in
 *   one LMDB environment (cache.path), one write transaction per loop turn
 *   (at most cache.batch_max puts). Readers (the dispatcher) open the same
 *   environment read-only and never wait for this daemon; when it is down,
 *   checks are still answered, only not cached.
 *
 *   Expired entries are swept every cache.sweep_interval_s. Past
 *   cache.max_entries the entries nearest to expiry are evicted. Commits do
 *   not fsync; the environment is synced every second: a crash of this
 *   process loses nothing committed, a power loss at most a second of
 *   cache, which only costs registry queries.
 *
 *   The timing database keeps per registry the number of answers, unknown
 *   answers, rate-limited answers and a latency histogram, over the
 *   daemon's lifetime and the last five minutes (p50/p90/p99).
 *
 *   Control commands: `get` {name}, `purge` {name} or {all: true},
 *   `stats` (entries and timing per registry); `availctl cache` uses them.
 *
 * CONFIGURATION PARAMETERS
 *   endpoints.cache_puts, cache.path, cache.map_size_mb, cache.max_entries,
 *   cache.sweep_interval_s, cache.batch_max, and the process settings.
 */
#include "cache.h"

int
main(int argc, char **argv)
{
    return av_daemon_main(argc, argv,
                          &(av_daemon_hooks_t){
                              .name = "cache",
                              .summary = "availd-cache: the single writer of the answer cache and timing database",
                              .init = cache_init,
                              .on_reload = cache_reload,
                              .restart_settings = cache_restart_settings,
                              .on_stop = cache_stop,
                              .fini = cache_fini,
                          });
}
