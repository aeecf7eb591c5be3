/* The querier process: a worker of the dispatcher. It says `ready` with its
 * credit, heartbeats, takes checks for its registry, sends back one answer
 * per check, and on a stop hands back (`bye`) what it has not asked yet. */
#include "querier.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TIMEOUT_SCAN_MS 50

uint64_t *
querier_counter(querier_t *q, const char *name)
{
    return av_daemon_counter(q->d, name);
}

bool
querier_idle(const querier_t *q)
{
    return !q->registry || q->registry->inflight.count == 0;
}

/* ---- the dispatcher link --------------------------------------------- */

void
querier_answer(querier_t *q, const query_t *x, const av_answer_t *a)
{
    msgpack_sbuffer_clear(&q->sbuf);
    if (av_encode_answer(&q->sbuf, a) == 0 && av_zsock_send_nowait(q->dispatcher, q->sbuf.data, q->sbuf.size) == 0)
        (*q->answers[a->status])++;
    else
        av_report(q->d, AV_LOG_ERR, x->registry->cfg->name, "answer_dropped",
                  "could not send the answer for %s to the dispatcher (queue full)", x->name);
    /* max_requests counts answers, not checks taken: a querier still
     * looking up its registry's address would otherwise hand back all it
     * took, and its successor the same, without answering any. The stop
     * it may begin hands back what waits; what is in flight finishes. */
    av_daemon_count_work(q->d, 1);
}

void
querier_hand_back(querier_t *q, registry_t *r, query_list_t *list)
{
    uint32_t n = 0;
    uint64_t *ids = calloc(list->count ? list->count : 1, sizeof *ids);
    if (!ids || !q->dispatcher) {
        free(ids);
        return;
    }
    query_t *x;
    while ((x = TAILQ_FIRST(&list->head))) {
        ids[n++] = x->rid;
        registry_query_free(r, x);
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    for (uint32_t off = 0; off < n; off += AV_HANDBACK_MAX) {
        uint32_t chunk = n - off < AV_HANDBACK_MAX ? n - off : AV_HANDBACK_MAX;
        msgpack_sbuffer_clear(&sbuf);
        if (av_encode_bye(&sbuf, av_str(r->cfg->name), ids + off, chunk) == 0)
            av_zsock_send_nowait(q->dispatcher, sbuf.data, sbuf.size);
    }
    msgpack_sbuffer_destroy(&sbuf);
    if (n) {
        *q->handed_back += n;
        av_log_notice("handed %u check%s back to the dispatcher", n, n == 1 ? "" : "s");
    }
    free(ids);
}

static void
send_credit(querier_t *q, av_msg_type_t type)
{
    registry_t *r = q->registry;
    av_ready_t ready = { .registry = av_str(r->cfg->name), .credit = registry_credit(r), .pid = (uint32_t)getpid() };
    msgpack_sbuffer_clear(&q->sbuf);
    if (av_encode_ready(&q->sbuf, type, &ready) == 0)
        av_zsock_send_nowait(q->dispatcher, q->sbuf.data, q->sbuf.size);
}

static void
on_heartbeat(av_daemon_t *d, void *arg)
{
    querier_t *q = arg;
    if (!av_daemon_stopping(d))
        send_credit(q, AV_MSG_HEARTBEAT);
}

void
querier_take(querier_t *q, const av_check_t *check)
{
    registry_t *r = q->registry;
    const char *reason = NULL;
    query_t *x = registry_query_new(r, check);
    if (!x) {
        av_log_err("out of memory for a check");
        return;
    }
    (*q->checks)++;
    if (av_name_normalize(check->name.ptr, check->name.len, x->name, &reason) < 0) {
        /* The dispatcher normalises; a name that fails here came from a
         * daemon that does not. Answer rather than drop. */
        (*q->malformed)++;
        av_str_copy(x->name, sizeof x->name, check->name);
        av_answer_t a = {
            .id = AV_STR(""), .name = av_str(x->name), .status = AV_STATUS_INVALID, .reason = av_str(reason),
            .registry = av_str(r->cfg->name), .source = AV_SOURCE_NONE, .at_ms = av_now_ms(), .rid = x->rid,
        };
        querier_answer(q, x, &a);
        registry_query_free(r, x);
        return;
    }
    registry_take(r, x);
}

static bool
on_dispatcher(av_daemon_t *d, zsock_t *sock, void *arg)
{
    querier_t *q = arg;
    zframe_t *frame = zframe_recv(sock);
    av_msg_t msg;
    if (!frame)
        return false;
    av_msg_init(&msg);
    int rc = av_msg_decode(&msg, zframe_data(frame), zframe_size(frame));
    if (rc == 0 && msg.type == AV_MSG_CHECK && msg.u.check.n_names == 0) {
        querier_take(q, &msg.u.check);
    } else if (rc == 0 && msg.type == AV_MSG_HEARTBEAT) {
        /* the dispatcher is there; nothing to do */
    } else {
        char why[128];
        (*q->malformed)++;
        av_report(d, AV_LOG_WARNING, q->registry->cfg->name, "malformed_message",
                  "dropped a message from the dispatcher: %s",
                  rc ? av_msg_strerror(&msg, rc, why, sizeof why) : av_msg_type_name(msg.type));
    }
    av_msg_release(&msg);
    zframe_destroy(&frame);
    return true;
}

static void
on_timeout_scan(av_daemon_t *d, void *arg)
{
    (void)d;
    querier_t *q = arg;
    registry_expire(q->registry, av_mono_us());
}

/* ---- lifecycle ---------------------------------------------------------- */

/* The instance is REGISTRY, or REGISTRY.N for the N-th querier of a
 * registry with `queriers: N` (registry names hold no dot). */
const av_registry_cfg_t *
querier_registry(const av_config_t *cfg, const char *instance)
{
    char name[AV_REGISTRY_MAX + 1];
    size_t n = strcspn(instance, ".");
    if (n > AV_REGISTRY_MAX)
        return NULL;
    memcpy(name, instance, n);
    name[n] = '\0';
    return av_config_registry(cfg, name);
}

static uint64_t
gauge_inflight(av_daemon_t *d)
{
    return ((querier_t *)av_daemon_state(d))->registry->inflight.count;
}

static uint64_t
gauge_waiting(av_daemon_t *d)
{
    return ((querier_t *)av_daemon_state(d))->registry->waiting.count;
}

static uint64_t
gauge_dns_pending(av_daemon_t *d)
{
    return ((querier_t *)av_daemon_state(d))->registry->prechecking.count;
}

static uint64_t
gauge_credit(av_daemon_t *d)
{
    return registry_credit(((querier_t *)av_daemon_state(d))->registry);
}

static uint64_t
gauge_backoff_ms(av_daemon_t *d)
{
    querier_t *q = av_daemon_state(d);
    return budget_backoff_left_us(&q->registry->budget, av_mono_us()) / 1000;
}

/* The status line: which registry, by which protocol, where. */
static void
describe(querier_t *q)
{
    const av_registry_cfg_t *rc = q->registry->cfg;
    if (rc->protocol == AV_PROTO_RDAP)
        av_daemon_status_text(q->d, "querying %s (rdap %s)", rc->name, rc->base_url);
    else
        av_daemon_status_text(q->d, "querying %s (%s %s:%u)", rc->name, q->registry->protocol->name, rc->host,
                              rc->port);
}

static void
register_counters(querier_t *q)
{
    size_t n;
    const verdict_reason_t *reasons = verdict_reasons(&n);
    q->checks = querier_counter(q, "checks");
    for (int s = 0; s < AV_STATUS_COUNT; s++) {
        char name[32];
        snprintf(name, sizeof name, "answered_%s", av_status_name((av_status_t)s));
        q->answers[s] = querier_counter(q, name);
    }
    for (size_t i = 0; i < n; i++)
        if (reasons[i].counter)
            querier_counter(q, reasons[i].counter);
    q->backoffs = querier_counter(q, "backoffs");
    q->rate_limit_waits = querier_counter(q, "rate_limit_waits");
    q->malformed = querier_counter(q, "malformed");
    q->handed_back = querier_counter(q, "handed_back");
    av_daemon_gauge(q->d, "inflight", gauge_inflight);
    av_daemon_gauge(q->d, "waiting", gauge_waiting);
    av_daemon_gauge(q->d, "credit", gauge_credit);
    av_daemon_gauge(q->d, "backoff_ms", gauge_backoff_ms);
    av_daemon_gauge(q->d, "dns_pending", gauge_dns_pending);
}

static int
set_heartbeat(querier_t *q, uint32_t interval_ms)
{
    sd_event_source *timer = av_daemon_every(q->d, interval_ms, on_heartbeat, q);
    if (!timer)
        return -1;
    /* However busy the registry sockets keep the loop, the dispatcher must
     * hear from us, or it thinks we are dead. */
    sd_event_source_set_priority(timer, SD_EVENT_PRIORITY_IMPORTANT);
    sd_event_source_disable_unref(q->heartbeat_timer);
    q->heartbeat_timer = timer;
    q->heartbeat_ms = interval_ms;
    return 0;
}

int
querier_start(querier_t *q, av_daemon_t *d)
{
    const av_config_t *cfg = av_daemon_config(d);
    const av_registry_cfg_t *rc = querier_registry(cfg, av_daemon_instance(d));
    q->d = d;
    msgpack_sbuffer_init(&q->sbuf);
    if (!rc) {
        av_log_err("no registry for instance '%s' in %s", av_daemon_instance(d), cfg->path);
        return -1;
    }
    register_counters(q);
    if (!(q->poller = av_poller_new(av_daemon_loop(d))))
        return -1;
    q->dispatcher = av_daemon_connect(d, ZMQ_DEALER, cfg->endpoints.dispatcher_workers);
    if (!q->dispatcher)
        return -1;
    if (!(q->registry = registry_new(q, rc))) {
        av_log_err("registry '%s': cannot set up its %s queries", rc->name, protocol_for(rc->protocol)->name);
        return -1;
    }
    q->timeout_timer = av_daemon_every(d, TIMEOUT_SCAN_MS, on_timeout_scan, q);
    if (!q->timeout_timer || set_heartbeat(q, cfg->dispatcher.heartbeat_ms) < 0)
        return -1;
    if (av_daemon_watch(d, q->dispatcher, on_dispatcher, q) < 0)
        return -1;
    send_credit(q, AV_MSG_READY);
    describe(q);
    return 0;
}

/* A registry the new file removed, or whose protocol it changed, keeps
 * running on its old settings (a copy of them) until a restart; `availctl
 * reload` says so. */
static int
keep_registry_running(querier_t *q, const char *what)
{
    registry_t *r = q->registry;
    if (r->cfg != r->kept_cfg) {
        av_registry_cfg_t *copy = av_registry_cfg_dup(r->cfg);
        if (!copy || registry_configure(r, copy) < 0) {
            av_registry_cfg_free(&copy);
            return -1;
        }
        r->kept_cfg = copy;
    }
    av_daemon_needs_restart(q->d, "registries.%s%s", r->cfg->name, what);
    return 0;
}

int
querier_reload(querier_t *q, const av_config_t *next_cfg)
{
    registry_t *r = q->registry;
    const av_registry_cfg_t *next = querier_registry(next_cfg, av_daemon_instance(q->d));
    if (next_cfg->dispatcher.heartbeat_ms != q->heartbeat_ms && set_heartbeat(q, next_cfg->dispatcher.heartbeat_ms) < 0)
        return -1;
    if (!next)
        return keep_registry_running(q, " (removed from the file: this querier has nothing else to serve)");
    if (next->protocol != r->cfg->protocol)
        return keep_registry_running(q, ".protocol");
    if (registry_configure(r, next) < 0)
        return -1;
    av_registry_cfg_free(&r->kept_cfg);
    describe(q);
    registry_pump(r); /* what waited for the old address goes on */
    return 0;
}

void
querier_stop(querier_t *q)
{
    /* Checks not yet sent go back to the dispatcher now, to another
     * querier of the registry; those in flight finish here. */
    querier_hand_back(q, q->registry, &q->registry->waiting);
    if (querier_idle(q))
        av_daemon_drained(q->d);
}

void
querier_close(querier_t *q)
{
    if (q->dispatcher)
        av_daemon_unwatch(q->d, q->dispatcher);
    registry_destroy(&q->registry);
    sd_event_source_disable_unref(q->timeout_timer);
    sd_event_source_disable_unref(q->heartbeat_timer);
    zsock_destroy(&q->dispatcher);
    av_poller_destroy(&q->poller);
    msgpack_sbuffer_destroy(&q->sbuf);
}
