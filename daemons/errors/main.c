/*
 * NAME
 *   availd-errors - the global error recorder of availd
 *
 * SUMMARY
 *   availd-errors [-c FILE] [-n] [-f]
 *
 * DESCRIPTION
 *   Every availd daemon pushes `error` events (daemon, registry, level,
 *   code, text) to this daemon's PULL endpoint. availd-errors stores each
 *   in the global error database (LMDB) and then republishes it on its PUB
 *   endpoint with the topic LEVEL.DAEMON.REGISTRY (for example
 *   "warning.querier-verisign.verisign"), so monitoring can subscribe to a
 *   prefix such as "err." or "warning.querier-denic.". An event is
 *   published only once it is stored.
 *
 *   Writes are grouped: the events read in one loop turn are committed in
 *   one transaction (at most errors.batch_max). Commits do not fsync; the
 *   database is synced every second, so a crash of the process loses
 *   nothing committed and a power loss at most the last second.
 *
 *   Retention is bounded by count (errors.retention_count) and by age
 *   (errors.retention_s); the oldest events go first. Malformed events are
 *   counted (counter `malformed`) and dropped.
 *
 *   Its control endpoint answers `status`, `reload`, `recent` (the newest
 *   events, filtered by daemon, registry, level, newer than a sequence
 *   number) and `counts` (events held per registry and code); `availctl
 *   errors` uses them.
 *
 * CONFIGURATION PARAMETERS
 *   endpoints.errors_events, endpoints.errors_publish, errors.path,
 *   errors.map_size_mb, errors.retention_count, errors.retention_s,
 *   errors.batch_max, and the process settings.
 */
#include "errors.h"

int
main(int argc, char **argv)
{
    return av_daemon_main(argc, argv,
                          &(av_daemon_hooks_t){
                              .name = "errors",
                              .summary = "availd-errors: stores and republishes the error events of every availd daemon",
                              .init = errors_init,
                              .on_reload = errors_reload,
                              .restart_settings = errors_restart_settings,
                              .on_stop = errors_stop,
                              .fini = errors_fini,
                          });
}
