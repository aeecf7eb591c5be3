/* The querier process: a worker of the dispatcher for the registries of its
 * querier group. It says `ready` with each registry's credit, heartbeats,
 * takes checks, sends back one answer per check, and on a stop hands back
 * (`bye`) what it has not asked yet. Each registry keeps its own budget,
 * queues and protocol state (registry.c): one registry's slowness or
 * throttling never delays another's checks. */
#include "querier.h"
#include "resolver.h"

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
    registry_t *r;
    TAILQ_FOREACH(r, &q->registries, link)
        if (r->inflight.count)
            return false;
    return true;
}

static registry_t *
registry_by_name(const querier_t *q, av_str_t name)
{
    char key[AV_REGISTRY_MAX + 1];
    if (name.len == 0 || name.len > AV_REGISTRY_MAX)
        return NULL;
    memcpy(key, name.ptr, name.len);
    key[name.len] = '\0';
    return zhashx_lookup(q->by_name, key);
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

/* A bye: the checks (task numbers) go back to the dispatcher; `leaving`
 * names the registries we stop serving (NULL: we are stopping). */
static void
send_bye(querier_t *q, const char *leaving, const uint64_t *ids, uint32_t n)
{
    av_credit_t one = { av_str(leaving), 0 };
    registry_t *first = TAILQ_FIRST(&q->registries);
    av_ready_t bye = {
        .registry = leaving ? av_str(leaving) : first ? av_str(first->cfg->name) : AV_STR(""),
        .credits = leaving ? &one : NULL,
        .n_registries = leaving ? 1 : 0,
    };
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    uint32_t off = 0;
    do {
        uint32_t chunk = n - off < AV_HANDBACK_MAX ? n - off : AV_HANDBACK_MAX;
        msgpack_sbuffer_clear(&sbuf);
        if (av_encode_bye(&sbuf, &bye, ids + off, chunk) == 0)
            av_zsock_send_nowait(q->dispatcher, sbuf.data, sbuf.size);
        off += chunk;
    } while (off < n);
    msgpack_sbuffer_destroy(&sbuf);
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
    if (n) {
        send_bye(q, r->leaving ? r->cfg->name : NULL, ids, n);
        *q->handed_back += n;
        av_log_notice("handed %u check%s of %s back to the dispatcher", n, n == 1 ? "" : "s", r->cfg->name);
    }
    free(ids);
}

/* Every registry with its credit; the first also as `registry` and
 * `credit`, which is what an older dispatcher reads. */
static void
send_credit(querier_t *q, av_msg_type_t type)
{
    registry_t *r;
    uint32_t n = 0;
    if (q->n_registries == 0)
        return;
    TAILQ_FOREACH(r, &q->registries, link)
        q->credits[n++] = (av_credit_t){ av_str(r->cfg->name), registry_credit(r) };
    av_ready_t ready = {
        .registry = q->credits[0].registry, .credit = q->credits[0].credit, .pid = (uint32_t)getpid(),
        .credits = q->n_registries > 1 ? q->credits : NULL, .n_registries = q->n_registries > 1 ? n : 0,
    };
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

/* The registry of a check: the one it names, or from an older dispatcher
 * (which names none) ours when we serve one. */
static registry_t *
registry_of(const querier_t *q, const av_check_t *check)
{
    if (check->registry.len)
        return registry_by_name(q, check->registry);
    return q->n_registries == 1 ? TAILQ_FIRST(&q->registries) : NULL;
}

void
querier_take(querier_t *q, const av_check_t *check)
{
    const char *reason = NULL;
    registry_t *r = registry_of(q, check);
    (*q->checks)++;
    if (!r) {
        /* A registry we no longer serve (a reload moved it away while the
         * check was on its way): back to the dispatcher, for its new querier. */
        char name[AV_REGISTRY_MAX + 1];
        av_str_copy(name, sizeof name, check->registry);
        (*q->handed_back)++;
        send_bye(q, name[0] ? name : NULL, &check->rid, 1);
        return;
    }
    query_t *x = registry_query_new(r, check);
    if (!x) {
        av_log_err("out of memory for a check");
        return;
    }
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
    if (!frame)
        return false;
    int rc = av_msg_decode(&q->msg, zframe_data(frame), zframe_size(frame));
    if (rc == 0 && q->msg.type == AV_MSG_CHECK && q->msg.u.check.n_names == 0) {
        querier_take(q, &q->msg.u.check);
    } else if (rc == 0 && q->msg.type == AV_MSG_HEARTBEAT) {
        /* the dispatcher is there; nothing to do */
    } else {
        char why[128];
        (*q->malformed)++;
        av_report(d, AV_LOG_WARNING, NULL, "malformed_message", "dropped a message from the dispatcher: %s",
                  rc ? av_msg_strerror(&q->msg, rc, why, sizeof why) : av_msg_type_name(q->msg.type));
    }
    zframe_destroy(&frame);
    return true;
}

static void
on_timeout_scan(av_daemon_t *d, void *arg)
{
    (void)d;
    querier_t *q = arg;
    uint64_t now = av_mono_us();
    registry_t *r;
    TAILQ_FOREACH(r, &q->registries, link)
        registry_expire(r, now);
}

/* ---- the registries of the group ---------------------------------------- */

static int
add_registry(querier_t *q, const av_registry_cfg_t *cfg)
{
    av_credit_t *credits = realloc(q->credits, (q->n_registries + 1) * sizeof *credits);
    if (!credits)
        return -1;
    q->credits = credits;
    registry_t *r = registry_new(q, cfg);
    if (!r) {
        av_log_err("registry '%s': cannot set up its %s queries", cfg->name, protocol_for(cfg->protocol)->name);
        return -1;
    }
    TAILQ_INSERT_TAIL(&q->registries, r, link);
    q->n_registries++;
    zhashx_insert(q->by_name, cfg->name, r);
    return 0;
}

/* A registry the group no longer holds: what waits and what is in flight
 * goes back to the dispatcher, for its new querier. */
static void
drop_registry(querier_t *q, registry_t *r)
{
    av_log_notice("registry '%s' left this querier's group: its checks go back to the dispatcher", r->cfg->name);
    r->leaving = true;
    querier_hand_back(q, r, &r->prechecking);
    querier_hand_back(q, r, &r->waiting);
    querier_hand_back(q, r, &r->inflight);
    zhashx_delete(q->by_name, r->cfg->name);
    TAILQ_REMOVE(&q->registries, r, link);
    q->n_registries--;
    registry_destroy(&r);
}

/* The status line: which registry, by which protocol, where; or how many. */
static void
describe(querier_t *q)
{
    registry_t *r = TAILQ_FIRST(&q->registries);
    if (q->n_registries != 1 || !r) {
        av_daemon_status_text(q->d, "querying %u registries (querier group %s)", q->n_registries, q->group);
        return;
    }
    const av_registry_cfg_t *rc = r->cfg;
    if (rc->protocol == AV_PROTO_RDAP)
        av_daemon_status_text(q->d, "querying %s (rdap %s)", rc->name, rc->base_url);
    else
        av_daemon_status_text(q->d, "querying %s (%s %s:%u)", rc->name, r->protocol->name, rc->host, rc->port);
}

/* ---- gauges ---------------------------------------------------------------- */

static uint64_t
sum(av_daemon_t *d, size_t list_offset)
{
    querier_t *q = av_daemon_state(d);
    uint64_t n = 0;
    registry_t *r;
    TAILQ_FOREACH(r, &q->registries, link)
        n += ((const query_list_t *)((const char *)r + list_offset))->count;
    return n;
}

static uint64_t
gauge_inflight(av_daemon_t *d)
{
    return sum(d, offsetof(registry_t, inflight));
}

static uint64_t
gauge_waiting(av_daemon_t *d)
{
    return sum(d, offsetof(registry_t, waiting));
}

static uint64_t
gauge_dns_pending(av_daemon_t *d)
{
    return sum(d, offsetof(registry_t, prechecking));
}

static uint64_t
gauge_credit(av_daemon_t *d)
{
    querier_t *q = av_daemon_state(d);
    uint64_t n = 0;
    registry_t *r;
    TAILQ_FOREACH(r, &q->registries, link)
        n += registry_credit(r);
    return n;
}

/* The longest pause of any of its registries. */
static uint64_t
gauge_backoff_ms(av_daemon_t *d)
{
    querier_t *q = av_daemon_state(d);
    uint64_t now = av_mono_us(), longest = 0;
    registry_t *r;
    TAILQ_FOREACH(r, &q->registries, link) {
        uint64_t left = budget_backoff_left_us(&r->budget, now);
        if (left > longest)
            longest = left;
    }
    return longest / 1000;
}

static uint64_t
gauge_registries(av_daemon_t *d)
{
    return ((querier_t *)av_daemon_state(d))->n_registries;
}

/* `registries`: each registry's load, for `availctl registries`. */
static int
cmd_registries(av_daemon_t *d, const msgpack_object *req, msgpack_packer *pk, char *err, size_t errlen)
{
    (void)req;
    (void)err;
    (void)errlen;
    querier_t *q = av_daemon_state(d);
    uint64_t now = av_mono_us();
    registry_t *r;
    av_pack_ctl_reply_begin(pk, true, NULL, 2);
    av_pack_kv_str(pk, "group", q->group);
    av_pack_str(pk, "registries");
    msgpack_pack_array(pk, q->n_registries);
    TAILQ_FOREACH(r, &q->registries, link) {
        msgpack_pack_map(pk, 6);
        av_pack_kv_str(pk, "registry", r->cfg->name);
        av_pack_kv_uint(pk, "inflight", r->inflight.count);
        av_pack_kv_uint(pk, "waiting", r->waiting.count);
        av_pack_kv_uint(pk, "dns_pending", r->prechecking.count);
        av_pack_kv_uint(pk, "credit", registry_credit(r));
        av_pack_kv_uint(pk, "backoff_ms", budget_backoff_left_us(&r->budget, now) / 1000);
    }
    return 0;
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
    av_daemon_gauge(q->d, "registries", gauge_registries);
    av_daemon_command(q->d, "registries", cmd_registries);
}

/* ---- lifecycle ---------------------------------------------------------- */

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
    const av_group_cfg_t *group = av_config_group(cfg, av_daemon_instance(d));
    q->d = d;
    TAILQ_INIT(&q->registries);
    msgpack_sbuffer_init(&q->sbuf);
    av_msg_init(&q->msg);
    if (!group) {
        av_log_err("no querier group or registry '%s' in %s", av_daemon_instance(d), cfg->path);
        return -1;
    }
    snprintf(q->group, sizeof q->group, "%s", group->name);
    register_counters(q);
    if (!(q->by_name = zhashx_new()) || !(q->poller = av_poller_new(av_daemon_loop(d))))
        return -1;
    q->dispatcher = av_daemon_connect(d, ZMQ_DEALER, cfg->endpoints.dispatcher_workers);
    if (!q->dispatcher)
        return -1;
    for (uint32_t i = 0; i < group->n_members; i++)
        if (add_registry(q, &cfg->registries[group->members[i]]) < 0)
            return -1;
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
keep_registry_running(querier_t *q, registry_t *r, const char *what)
{
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

/* The group's registries of the new file: new ones are set up, those it no
 * longer holds go back to the dispatcher, the others take their new
 * settings. A group gone from the file keeps running as it is. */
int
querier_reload(querier_t *q, const av_config_t *next_cfg)
{
    const av_group_cfg_t *group = av_config_group(next_cfg, av_daemon_instance(q->d));
    registry_t *r, *tmp;
    if (next_cfg->dispatcher.heartbeat_ms != q->heartbeat_ms && set_heartbeat(q, next_cfg->dispatcher.heartbeat_ms) < 0)
        return -1;
    if (!group) {
        TAILQ_FOREACH(r, &q->registries, link)
            if (keep_registry_running(q, r, " (its querier is gone from the file: stop it)") < 0)
                return -1;
        return 0;
    }
    uint8_t *kept = calloc(group->n_members ? group->n_members : 1, 1);
    if (!kept)
        return -1;
    for (r = TAILQ_FIRST(&q->registries); r; r = tmp) {
        tmp = TAILQ_NEXT(r, link);
        const av_registry_cfg_t *next = NULL;
        for (uint32_t i = 0; i < group->n_members && !next; i++)
            if (strcmp(next_cfg->registries[group->members[i]].name, r->cfg->name) == 0) {
                next = &next_cfg->registries[group->members[i]];
                kept[i] = 1;
            }
        int rc = 0;
        if (!next)
            drop_registry(q, r);
        else if (next->protocol != r->cfg->protocol)
            rc = keep_registry_running(q, r, ".protocol");
        else if ((rc = registry_configure(r, next)) == 0)
            av_registry_cfg_free(&r->kept_cfg);
        if (rc < 0) {
            free(kept);
            return -1;
        }
    }
    int rc = 0;
    for (uint32_t i = 0; i < group->n_members && rc == 0; i++)
        if (!kept[i])
            rc = add_registry(q, &next_cfg->registries[group->members[i]]);
    free(kept);
    if (rc < 0)
        return -1;
    describe(q);
    /* The dispatcher learns of registries added now, not at the next beat. */
    send_credit(q, AV_MSG_HEARTBEAT);
    TAILQ_FOREACH(r, &q->registries, link)
        registry_pump(r); /* what waited for an old address goes on */
    return 0;
}

void
querier_stop(querier_t *q)
{
    /* Checks not yet sent go back to the dispatcher now, to another
     * querier of the registry; those in flight finish here. */
    registry_t *r;
    TAILQ_FOREACH(r, &q->registries, link)
        querier_hand_back(q, r, &r->waiting);
    if (querier_idle(q))
        av_daemon_drained(q->d);
}

void
querier_close(querier_t *q)
{
    registry_t *r;
    if (q->dispatcher)
        av_daemon_unwatch(q->d, q->dispatcher);
    while ((r = TAILQ_FIRST(&q->registries))) {
        TAILQ_REMOVE(&q->registries, r, link);
        registry_destroy(&r);
    }
    q->n_registries = 0;
    zhashx_destroy(&q->by_name);
    resolvers_close(q);
    sd_event_source_disable_unref(q->timeout_timer);
    sd_event_source_disable_unref(q->heartbeat_timer);
    zsock_destroy(&q->dispatcher);
    av_poller_destroy(&q->poller);
    av_msg_release(&q->msg);
    msgpack_sbuffer_destroy(&q->sbuf);
    free(q->credits);
}
