/*
 * NAME
 *   availd-querier - asks registries whether names are available
 *
 * SUMMARY
 *   availd-querier --group GROUP[.N] [-c FILE] [-n] [-f]
 *
 * DESCRIPTION
 *   One process per querier group (systemd: availd-querier@GROUP), serving
 *   the group's registries (`queriers:` in availd.yaml; a registry no group
 *   names is a group of its own, named after it, and `queriers: N` in its
 *   entry gives it N processes: NAME, NAME.2 ...; --registry is another
 *   spelling of --group; a GROUP the config lacks is refused, by -n too,
 *   with exit status 78, so systemd does not restart it in a loop). Each
 *   registry keeps its own budget: concurrency cap, token bucket, backoff
 *   after a rate-limit reply, connections,
 *   patterns, timeouts; one registry's slowness or throttling never delays
 *   another's checks. The querier connects to the dispatcher as a worker:
 *   `ready` with every registry and its credit (how many checks it can
 *   take: concurrency + queue), then a heartbeat with the credits every
 *   dispatcher.heartbeat_ms. The dispatcher sends it `check`s of normalised
 *   names, each naming its registry; it answers each exactly once.
 *
 *   On a reload the group's registries follow the file: a registry added is
 *   set up, one moved to another group is handed back to the dispatcher
 *   (its checks, waiting and in flight, go to its new querier), the others
 *   take their new settings; a registry whose protocol changed keeps its
 *   old settings until a restart (`availctl reload` says so).
 *
 *   The registry's host is looked up (c-ares, on the loop) when the first
 *   query needs it, and again after a reload; a querier nobody asks sends
 *   nothing anywhere. A failed lookup answers queries `unknown`
 *   (registry_error) and is tried again after 10 s.
 *
 *   Queries go out on one event loop, non-blocking, at most `concurrency`
 *   at a time and no faster than the registry's rate_limit (a token
 *   bucket). Each reply is read until the server closes, up to
 *   max_reply_bytes, within timeout_ms, and classified with the registry's
 *   patterns: rate-limit wording first, then reserved, registered,
 *   available; no match is `unknown` (unparseable), never `available`.
 *
 *   Protocols: whois (RFC 3912) and registry availability services (DAS:
 *   the same exchange, their own status lines and RC codes) on TCP; RDAP
 *   (RFC 9082/9083) over HTTPS with libcurl (200 registered, or reserved;
 *   redemption and pending delete stay registered; 404 available; 429/503
 *   rate limited, Retry-After honoured), base_url from the registry or the
 *   IANA bootstrap (rdap_bootstrap). With dns_precheck, a name delegated
 *   in its TLD's zone (NS records, c-ares) is answered registered without
 *   asking the registry; no delegation sends it on to the registry.
 *
 *   On a rate-limit reply the querier stops asking that registry for
 *   backoff_s, answers what waits `unknown` (rate_limited) at once, and
 *   reports a `rate_limited` error event. Timeouts and connection errors
 *   are `unknown` with reason timeout or registry_error, and reported.
 *
 *   SIGTERM: the checks not yet sent are handed back to the dispatcher (a
 *   `bye` with their task numbers) to go to another querier at once; those
 *   in flight are finished, within process.drain_ms.
 *
 * CONFIGURATION PARAMETERS
 *   queriers.GROUP.*, registries.NAME.*, implicit.*, endpoints.dispatcher_workers,
 *   dispatcher.heartbeat_ms, and the process settings.
 */
#include "querier.h"

#include <stdlib.h>
#include <sys/resource.h>

static int
querier_init(av_daemon_t *d)
{
    querier_t *q = calloc(1, sizeof *q);
    if (!q)
        return -1;
    av_daemon_set_state(d, q);
    /* Thousands of queries in flight are thousands of sockets. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return querier_start(q, d);
}

/* Where the querier finds the dispatcher. Registry settings all apply live
 * but a changed protocol (see querier_reload). */
static const av_setting_t querier_restart_settings[] = {
    AV_SETTING("endpoints.dispatcher_workers", endpoints.dispatcher_workers, AV_SETTING_STR),
    { NULL, 0, 0 },
};

static int
querier_on_reload(av_daemon_t *d, const av_config_t *next)
{
    querier_t *q = av_daemon_state(d);
    return querier_reload(q, next);
}

static int
querier_on_stop(av_daemon_t *d)
{
    querier_t *q = av_daemon_state(d);
    querier_stop(q);
    return querier_idle(q);
}

static void
querier_fini(av_daemon_t *d)
{
    querier_t *q = av_daemon_state(d);
    if (!q)
        return;
    querier_close(q);
    free(q);
    av_daemon_set_state(d, NULL);
}

static int
querier_instance_check(const av_config_t *cfg, const char *instance, char *err, size_t errlen)
{
    if (av_config_group(cfg, instance))
        return 0;
    snprintf(err, errlen, "%s: no querier group or registry '%s' (availctl registries lists them)", cfg->path,
             instance);
    return -1;
}

int
main(int argc, char **argv)
{
    return av_daemon_main(argc, argv,
                          &(av_daemon_hooks_t){
                              .name = "querier",
                              .summary = "availd-querier: asks the registries of its group whether names are available",
                              .instance_required = true,
                              .instance_option = "group",
                              .instance_check = querier_instance_check,
                              .init = querier_init,
                              .on_reload = querier_on_reload,
                              .restart_settings = querier_restart_settings,
                              .restart_keys_own = (const char *const[]){ "registries.NAME.protocol", NULL },
                              .on_stop = querier_on_stop,
                              .fini = querier_fini,
                          });
}
