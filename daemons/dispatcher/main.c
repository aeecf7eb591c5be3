/*
 * NAME
 *   availd-dispatcher - routes checks to the cache or to a registry's querier
 *
 * SUMMARY
 *   availd-dispatcher [-c FILE] [-n] [-f]
 *
 * DESCRIPTION
 *   Intakes send `check`s (a name, or a batch of names) to the dispatcher's
 *   ROUTER (endpoints.dispatcher). For each name the dispatcher:
 *
 *   - normalises it (IDNA2008/UTS #46 to A-labels, lower case, no trailing
 *     dot, label and total lengths, LDH): a bad name is answered `invalid`
 *     with a reason (empty_name, name_too_long, label_too_long, empty_label,
 *     bad_character, bad_hyphen, idna_error, single_label, subdomain);
 *   - finds its registry by the longest configured suffix; none is
 *     `unknown` (unsupported_tld) at once;
 *   - answers from the cache when the entry is fresh (unless `fresh` is
 *     asked), reading availd-cache's LMDB environment read-only itself;
 *   - otherwise joins the name's task in flight (identical names are
 *     coalesced into one registry query) or makes one and sends it to the
 *     querier of the registry with the most credit.
 *
 *   Queriers connect to endpoints.dispatcher_workers and say `ready` with
 *   their credit, then heartbeat. A querier silent for
 *   dispatcher.heartbeat_misses x heartbeat_ms is dead: its checks go to
 *   another querier. An answer overdue by the registry's timeout_ms plus
 *   dispatcher.overdue_margin_ms is asked again, at most
 *   dispatcher.max_attempts times, then answered `unknown` (timeout). A
 *   registry whose queriers are all gone keeps its checks for
 *   dispatcher.querier_grace_ms (a restarting querier is back by then);
 *   past it new checks are answered `unknown` (no_querier) at once.
 *
 *   Bounds: dispatcher.max_inflight names in flight in all,
 *   max_inflight_per_registry per registry, and 4 x max_inflight waiters;
 *   past them a check is answered `unknown` (overloaded) at once.
 *
 *   Every registry answer is pushed to availd-cache (`put`, with the TTL of
 *   the registry for that status, and the latency as a timing sample).
 *
 *   SIGTERM: stops taking checks and waits (within process.drain_ms) for
 *   the answers in flight; what is left unanswered the intakes ask again.
 *
 * CONFIGURATION PARAMETERS
 *   endpoints.dispatcher, endpoints.dispatcher_workers, endpoints.cache_puts,
 *   cache.path, dispatcher.*, registries (tlds, timeout_ms, ttl), and the
 *   process settings.
 */
#include "dispatcher.h"

#include <stdlib.h>

static int
dispatcher_init(av_daemon_t *d)
{
    dispatcher_t *ds = calloc(1, sizeof *ds);
    if (!ds)
        return -1;
    av_daemon_set_state(d, ds);
    return dispatcher_start(ds, d);
}

/* Its endpoints and the cache it reads. Registries, routing, limits,
 * heartbeats and timeouts apply at once (dispatcher_reload). */
static const av_setting_t dispatcher_restart_settings[] = {
    AV_SETTING("endpoints.dispatcher", endpoints.dispatcher, AV_SETTING_STR),
    AV_SETTING("endpoints.dispatcher_workers", endpoints.dispatcher_workers, AV_SETTING_STR),
    AV_SETTING("endpoints.cache_puts", endpoints.cache_puts, AV_SETTING_STR),
    AV_SETTING("cache.path", cache.path, AV_SETTING_STR),
    { NULL, 0, 0 },
};

static int
dispatcher_on_reload(av_daemon_t *d, const av_config_t *next)
{
    return dispatcher_reload(av_daemon_state(d), next);
}

static int
dispatcher_on_stop(av_daemon_t *d)
{
    dispatcher_t *ds = av_daemon_state(d);
    av_daemon_unwatch(d, ds->frontend); /* no new checks; answers still come */
    return ds->tasks.count == 0;
}

static void
dispatcher_fini(av_daemon_t *d)
{
    dispatcher_t *ds = av_daemon_state(d);
    if (!ds)
        return;
    dispatcher_close(ds);
    free(ds);
    av_daemon_set_state(d, NULL);
}

int
main(int argc, char **argv)
{
    return av_daemon_main(argc, argv,
                          &(av_daemon_hooks_t){
                              .name = "dispatcher",
                              .summary = "availd-dispatcher: routes checks to the cache or to a registry's querier",
                              .init = dispatcher_init,
                              .on_reload = dispatcher_on_reload,
                              .restart_settings = dispatcher_restart_settings,
                              .on_stop = dispatcher_on_stop,
                              .fini = dispatcher_fini,
                          });
}
