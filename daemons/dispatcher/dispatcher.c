/* The dispatcher's front half: checks from intakes are normalised, routed
 * to their registry by suffix, answered from the cache when fresh, or
 * joined to the name's task in flight (one registry query however many
 * ask), and every waiter gets its answer when the querier's comes back. */
#include "dispatcher.h"

#include <stdlib.h>
#include <string.h>

#define SCAN_INTERVAL_MS 100
#define CACHE_RETRY_MS 1000
#define BATCH_MAX_BYTES (AV_MSG_MAX_BYTES / 2) /* answers to an intake in one message */

registry_state_t *
registry_find(dispatcher_t *ds, const char *name, size_t len)
{
    registry_state_t *r;
    SLIST_FOREACH(r, &ds->registries, entry)
        if (strlen(r->name) == len && memcmp(r->name, name, len) == 0)
            return r;
    return NULL;
}

/* ---- answering intakes ------------------------------------------------ */

static void
send_raw(dispatcher_t *ds, const peer_id_t *intake, const msgpack_sbuffer *body, uint32_t answers)
{
    void *s = zsock_resolve(ds->frontend);
    /* ROUTER_MANDATORY: an intake that went away fails the first frame;
     * its requests live in its journal and will be asked again. */
    if (zmq_send(s, intake->bytes, intake->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s, body->data, body->size, ZMQ_DONTWAIT) < 0)
        *ds->answers_lost += answers;
    else
        *ds->answers_out += answers;
}

static bool
same_peer(const peer_id_t *a, const peer_id_t *b)
{
    return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

static void
flush_peer(dispatcher_t *ds, intake_peer_t *p)
{
    if (p->count == 0)
        return;
    msgpack_packer pk;
    msgpack_sbuffer_clear(&ds->sbuf);
    msgpack_packer_init(&pk, &ds->sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2 + p->first_pairs + (p->count > 1 ? 1 : 0));
    av_pack_kv_str(&pk, "t", "answer");
    av_pack_kv_uint(&pk, "v", AV_PROTO_VERSION);
    msgpack_sbuffer_write(&ds->sbuf, p->first.data, p->first.size);
    if (p->count > 1) {
        av_pack_str(&pk, "more");
        msgpack_pack_array(&pk, p->count - 1);
        msgpack_sbuffer_write(&ds->sbuf, p->rest.data, p->rest.size);
    }
    send_raw(ds, &p->id, &ds->sbuf, p->count);
    msgpack_sbuffer_clear(&p->first);
    msgpack_sbuffer_clear(&p->rest);
    p->count = 0;
}

static int
on_flush(sd_event_source *s, void *userdata)
{
    (void)s;
    dispatcher_t *ds = userdata;
    for (uint32_t i = 0; i < ds->n_peers; i++)
        flush_peer(ds, &ds->peers[i]);
    return 0;
}

/* The intake's entry; NULL when it never said it reads batches. */
static intake_peer_t *
peer_of(dispatcher_t *ds, const peer_id_t *id, bool batches)
{
    intake_peer_t *oldest = NULL;
    for (uint32_t i = 0; i < ds->n_peers; i++) {
        intake_peer_t *p = &ds->peers[i];
        if (same_peer(&p->id, id)) {
            p->batches |= batches;
            p->last_seen_us = av_mono_us();
            return p->batches ? p : NULL;
        }
        if (!oldest || p->last_seen_us < oldest->last_seen_us)
            oldest = p;
    }
    if (!batches)
        return NULL;
    intake_peer_t *p = ds->n_peers < INTAKE_PEERS_MAX ? &ds->peers[ds->n_peers++] : oldest;
    if (p == oldest && oldest)
        flush_peer(ds, oldest); /* a gone intake's place */
    else {
        msgpack_sbuffer_init(&p->first);
        msgpack_sbuffer_init(&p->rest);
    }
    p->id = *id;
    p->batches = true;
    p->count = 0;
    p->last_seen_us = av_mono_us();
    return p;
}

void
answer_intake(void *arg, const peer_id_t *intake, const av_answer_t *a)
{
    dispatcher_t *ds = arg;
    intake_peer_t *p = peer_of(ds, intake, false);
    if (!p) {
        msgpack_sbuffer_clear(&ds->sbuf);
        if (av_encode_answer(&ds->sbuf, a) == 0)
            send_raw(ds, intake, &ds->sbuf, 1);
        return;
    }
    av_answer_t batched = *a;
    msgpack_packer pk;
    if (p->count == 0) {
        batched.batches = true;
        msgpack_packer_init(&pk, &p->first, msgpack_sbuffer_write);
        av_pack_answer_pairs(&pk, &batched);
        p->first_pairs = av_answer_pair_count(&batched);
    } else {
        msgpack_packer_init(&pk, &p->rest, msgpack_sbuffer_write);
        av_pack_answer_map(&pk, &batched);
    }
    /* Bounded by count (what the decoder takes) and by bytes: one answer
     * is at most ~7 KiB (a name and its query as asked, raw, reason), so a
     * message flushed past half the message bound stays below the bound,
     * which intake's socket enforces. */
    if (++p->count == AV_MORE_MAX + 1 || p->first.size + p->rest.size >= BATCH_MAX_BYTES)
        flush_peer(ds, p);
    else
        sd_event_source_set_enabled(ds->flush, SD_EVENT_ONESHOT);
}

static void
answer_now(dispatcher_t *ds, const peer_id_t *intake, const av_check_t *check, uint32_t idx, av_str_t query,
           const char *name, av_status_t status, const char *reason, const char *registry)
{
    av_answer_t a = {
        .id = check->id,
        .name = av_str(name),
        .query = query,
        .status = status,
        .reason = av_str(reason),
        .registry = av_str(registry),
        .source = AV_SOURCE_NONE,
        .at_ms = av_now_ms(),
        .rid = check->rid,
        .idx = check->idx + idx,
    };
    answer_intake(ds, intake, &a);
}

void
put_to_cache(dispatcher_t *ds, const av_answer_t *answer, const registry_state_t *reg)
{
    if (!ds->cache_push)
        return;
    av_put_t put = { .answer = *answer, .ttl_s = reg ? reg->ttl_s[answer->status] : 0, .timing = true };
    put.answer.id = AV_STR("");
    put.answer.rid = 0;
    put.answer.raw = (av_str_t){ "", 0 };
    msgpack_sbuffer_clear(&ds->sbuf);
    if (av_encode_put(&ds->sbuf, &put) == 0)
        av_zsock_send_nowait(ds->cache_push, ds->sbuf.data, ds->sbuf.size); /* best effort: a cache */
}

/* ---- taking checks ---------------------------------------------------- */

/* How long a registry whose queriers all left (or that we have not heard
 * from since we started) keeps checks pending: a restarting querier, or
 * one reconnecting to a restarted dispatcher, is back within that; past
 * it, `no_querier` at once. At least the heartbeat window. */
uint64_t
worker_grace_us(const av_config_t *cfg)
{
    uint64_t heartbeat = (uint64_t)cfg->dispatcher.heartbeat_ms * cfg->dispatcher.heartbeat_misses;
    uint64_t grace = cfg->dispatcher.querier_grace_ms > heartbeat ? cfg->dispatcher.querier_grace_ms : heartbeat;
    return grace * 1000;
}

static bool
answer_from_cache(dispatcher_t *ds, const peer_id_t *intake, const av_check_t *check, uint32_t idx, av_str_t query,
                  const char *name)
{
    uint64_t now_us = av_mono_us();
    if (!ds->cache && now_us >= ds->cache_retry_us) {
        /* availd-cache creates the environment, and rebuilds a damaged
         * one; until then every check is a miss, and we look again once a
         * second. */
        ds->cache = av_cache_open_reader(av_daemon_config(ds->d)->cache.path);
        ds->cache_retry_us = now_us + CACHE_RETRY_MS * 1000;
    }
    av_cached_t e;
    if (!ds->cache)
        return false;
    int rc = av_cache_get(ds->cache, name, &e);
    if (rc < 0) {
        /* Cut short, damaged or replaced: let go of it (a miss), and read
         * the one availd-cache makes in its place once it is whole. */
        av_cache_close(&ds->cache);
        ds->cache_retry_us = now_us + CACHE_RETRY_MS * 1000;
    }
    if (rc != 0)
        return false;
    uint64_t now = av_now_ms();
    if (e.expires_ms <= now)
        return false;
    av_answer_t a = {
        .id = check->id,
        .name = av_str(name),
        .query = query,
        .status = e.status,
        .reason = av_str(e.reason),
        .registry = av_str(e.registry),
        .source = AV_SOURCE_CACHE,
        .at_ms = e.at_ms,
        .rid = check->rid,
        .idx = check->idx + idx,
    };
    answer_intake(ds, intake, &a);
    (*ds->cache_hits)++;
    return true;
}

static void
take_name(dispatcher_t *ds, const av_config_t *cfg, const peer_id_t *intake, const av_check_t *check, uint32_t idx)
{
    char name[AV_DOMAIN_MAX + 1];
    const av_registry_cfg_t *rcfg;
    const char *reason;
    av_str_t query = av_check_name_at(check, idx);
    (*ds->checks)++;
    switch (av_names_route(ds->names, query.ptr, query.len, name, &rcfg, &reason)) {
    case AV_ROUTE_INVALID:
        (*ds->invalid)++;
        answer_now(ds, intake, check, idx, query, "", AV_STATUS_INVALID, reason, "");
        return;
    case AV_ROUTE_UNSUPPORTED:
        (*ds->unsupported)++;
        answer_now(ds, intake, check, idx, query, name, AV_STATUS_UNKNOWN, AV_REASON_UNSUPPORTED, "");
        return;
    case AV_ROUTE_OK:
        break;
    }
    if (!check->fresh && answer_from_cache(ds, intake, check, idx, query, name))
        return;
    uint64_t now_us = av_mono_us();
    task_ask_t ask = {
        .intake = *intake,
        .rid = check->rid,
        .idx = check->idx + idx,
        .query = query,
        .raw = check->raw,
        .deadline_us = now_us + (uint64_t)check->deadline_ms * 1000,
    };
    switch (task_join(&ds->tasks, name, &ask)) {
    case 1:
        (*ds->coalesced)++;
        return;
    case -1:
        answer_now(ds, intake, check, idx, query, name, AV_STATUS_UNKNOWN, AV_REASON_OVERLOADED, rcfg->name);
        return;
    }
    registry_state_t *reg = registry_find(ds, rcfg->name, strlen(rcfg->name));
    if (!reg || (reg->n_workers == 0 && now_us >= reg->workers_gone_us + worker_grace_us(cfg))) {
        (*ds->no_querier)++;
        answer_now(ds, intake, check, idx, query, name, AV_STATUS_UNKNOWN, AV_REASON_NO_QUERIER, rcfg->name);
        return;
    }
    if (ds->tasks.count >= cfg->dispatcher.max_inflight ||
        reg->pending.count + reg->sent.count >= cfg->dispatcher.max_inflight_per_registry ||
        ds->tasks.waiters >= 4 * cfg->dispatcher.max_inflight) {
        (*ds->overloaded)++;
        answer_now(ds, intake, check, idx, query, name, AV_STATUS_UNKNOWN, AV_REASON_OVERLOADED, rcfg->name);
        return;
    }
    /* Intake always says how long the frontend waits; a check from
     * elsewhere without deadline_ms gets the registry's timeout. */
    if (!check->deadline_ms)
        ask.deadline_us = now_us + (uint64_t)reg->timeout_ms * 1000;
    task_t *t = task_new(&ds->tasks, name, reg, &ask);
    if (!t) {
        answer_now(ds, intake, check, idx, query, name, AV_STATUS_UNKNOWN, AV_REASON_OVERLOADED, rcfg->name);
        return;
    }
    dispatch_task(ds, t);
}

static void
take_check(dispatcher_t *ds, const av_config_t *cfg, const peer_id_t *intake, const av_check_t *check)
{
    uint32_t n = av_check_count(check);
    for (uint32_t i = 0; i < n; i++)
        take_name(ds, cfg, intake, check, i);
}

static bool
peer_id_read(zframe_t *frame, peer_id_t *out)
{
    size_t n = zframe_size(frame);
    if (n == 0 || n > PEER_ID_MAX)
        return false;
    out->len = (uint8_t)n;
    memcpy(out->bytes, zframe_data(frame), n);
    return true;
}

static bool
on_frontend(av_daemon_t *d, zsock_t *sock, void *arg)
{
    dispatcher_t *ds = arg;
    av_envelope_t env;
    zframe_t *body = av_router_recv(sock, &env);
    if (!body && !env.identity)
        return false;
    peer_id_t intake;
    av_msg_t *msg = &ds->msg;
    int rc = body ? av_msg_decode(msg, zframe_data(body), zframe_size(body)) : AV_PROTO_E_NOT_MSGPACK;
    if (!env.identity || !peer_id_read(env.identity, &intake) || rc != 0 || msg->type != AV_MSG_CHECK) {
        char why[128];
        (*ds->malformed)++;
        av_report(d, AV_LOG_WARNING, NULL, "malformed_message", "dropped a message from an intake: %s",
                  rc ? av_msg_strerror(msg, rc, why, sizeof why) : "not a check");
    } else {
        const av_config_t *cfg = av_daemon_config(d);
        const av_check_t *check = &msg->u.check;
        if (check->batches)
            peer_of(ds, &intake, true);
        take_check(ds, cfg, &intake, check);
        for (uint32_t i = 0; i < check->n_more; i++) {
            av_check_t more;
            av_check_more_at(check, i, &more);
            take_check(ds, cfg, &intake, &more);
        }
        workers_forget_unreachable(ds);
    }
    zframe_destroy(&body);
    av_envelope_clear(&env);
    return true;
}

/* ---- timers ------------------------------------------------------------- */

/* A querier is judged silent only on what reached us: its messages that
 * came while this loop was not running (a busy machine) are read first, and
 * a scan far behind its time judges no one, for their heartbeats may still
 * be in ZeroMQ's I/O thread. */
#define SCAN_READ_MAX 10000
#define SCAN_LATE_US (3 * SCAN_INTERVAL_MS * 1000ULL)

/* Pending tasks past their time are given up; sent tasks past their
 * registry's timeout (plus margin) go to a querier again. */
static void
on_scan(av_daemon_t *d, void *arg)
{
    dispatcher_t *ds = arg;
    const av_config_t *cfg = av_daemon_config(d);
    for (int n = 0; n < SCAN_READ_MAX && (zsock_events(ds->workers) & ZMQ_POLLIN); n++)
        workers_on_message(d, ds->workers, ds);
    uint64_t now = av_mono_us();
    bool late = ds->last_scan_us && now - ds->last_scan_us > SCAN_LATE_US;
    ds->last_scan_us = now;
    if (!late)
        workers_scan(ds, now);
    if (av_daemon_stopping(d) && ds->tasks.count == 0) {
        av_daemon_drained(d);
        return;
    }
    registry_state_t *r;
    task_t *t;
    SLIST_FOREACH(r, &ds->registries, entry) {
        const char *why = r->n_workers ? AV_REASON_OVERLOADED : AV_REASON_NO_QUERIER;
        while ((t = TAILQ_FIRST(&r->pending.tasks)) && t->expires_us <= now)
            task_give_up(&ds->tasks, t, why, answer_intake, ds);
        while ((t = TAILQ_FIRST(&r->sent.tasks)) && t->expires_us <= now) {
            if (t->attempts >= cfg->dispatcher.max_attempts) {
                task_give_up(&ds->tasks, t, AV_REASON_TIMEOUT, answer_intake, ds);
                continue;
            }
            av_report(d, AV_LOG_NOTICE, r->name, "overdue", "no answer for %s from querier pid %u: re-dispatching",
                      t->name, t->worker ? t->worker->peer->pid : 0);
            (*ds->redispatched)++;
            dispatch_task(ds, t);
        }
    }
    workers_forget_unreachable(ds);
}

/* ---- registries, start, reload ----------------------------------------- */

static void
registry_configure(registry_state_t *r, const av_registry_cfg_t *cfg)
{
    r->configured = true;
    r->timeout_ms = cfg->timeout_ms;
    for (int s = 0; s < AV_STATUS_COUNT; s++)
        r->ttl_s[s] = cfg->ttl_s[s];
}

static int
sync_registries(dispatcher_t *ds, const av_config_t *cfg)
{
    registry_state_t *r;
    SLIST_FOREACH(r, &ds->registries, entry)
        r->configured = false;
    for (uint32_t i = 0; i < cfg->n_registries; i++) {
        const av_registry_cfg_t *rc = &cfg->registries[i];
        r = registry_find(ds, rc->name, strlen(rc->name));
        if (!r) {
            if (!(r = calloc(1, sizeof *r)))
                return -1;
            snprintf(r->name, sizeof r->name, "%s", rc->name);
            r->workers_gone_us = av_mono_us(); /* queriers may be reconnecting to a restarted us */
            LIST_INIT(&r->workers);
            task_list_init(&r->pending);
            task_list_init(&r->sent);
            SLIST_INSERT_HEAD(&ds->registries, r, entry);
        }
        registry_configure(r, rc);
        grants_configure(r, rc, ds);
    }
    return 0;
}

static uint64_t
gauge_tasks(av_daemon_t *d)
{
    return ((dispatcher_t *)av_daemon_state(d))->tasks.count;
}

static uint64_t
gauge_waiters(av_daemon_t *d)
{
    return ((dispatcher_t *)av_daemon_state(d))->tasks.waiters;
}

static uint64_t
gauge_queriers(av_daemon_t *d)
{
    return zhashx_size(((dispatcher_t *)av_daemon_state(d))->queriers);
}

static uint64_t
gauge_workers(av_daemon_t *d)
{
    return ((dispatcher_t *)av_daemon_state(d))->n_workers;
}

int
dispatcher_start(dispatcher_t *ds, av_daemon_t *d)
{
    const av_config_t *cfg = av_daemon_config(d);
    ds->d = d;
    msgpack_sbuffer_init(&ds->sbuf);
    av_msg_init(&ds->msg);
    av_msg_init(&ds->worker_msg);
    if (sd_event_add_defer(av_daemon_loop(d), &ds->flush, on_flush, ds) < 0)
        return -1;
    sd_event_source_set_enabled(ds->flush, SD_EVENT_OFF);
    ds->checks = av_daemon_counter(d, "checks");
    ds->cache_hits = av_daemon_counter(d, "cache_hits");
    ds->coalesced = av_daemon_counter(d, "coalesced");
    ds->dispatched = av_daemon_counter(d, "dispatched");
    ds->redispatched = av_daemon_counter(d, "redispatched");
    ds->answers_out = av_daemon_counter(d, "answers_out");
    ds->answers_lost = av_daemon_counter(d, "answers_lost");
    ds->invalid = av_daemon_counter(d, "invalid");
    ds->unsupported = av_daemon_counter(d, "unsupported");
    ds->no_querier = av_daemon_counter(d, "no_querier");
    ds->overloaded = av_daemon_counter(d, "overloaded");
    ds->stale_answers = av_daemon_counter(d, "stale_answers");
    ds->budget_waits = av_daemon_counter(d, "budget_waits");
    ds->malformed = av_daemon_counter(d, "malformed");
    ds->workers_lost = av_daemon_counter(d, "workers_lost");
    SLIST_INIT(&ds->registries);
    if (task_table_init(&ds->tasks) < 0 || !(ds->queriers = zhashx_new()))
        return -1;
    if (!(ds->names = av_names_new(cfg)) || sync_registries(ds, cfg) < 0)
        return -1;
    if (!(ds->frontend = av_daemon_bind(d, ZMQ_ROUTER, cfg->endpoints.dispatcher)) ||
        !(ds->workers = av_daemon_bind(d, ZMQ_ROUTER, cfg->endpoints.dispatcher_workers)) ||
        !(ds->cache_push = av_daemon_connect(d, ZMQ_PUSH, cfg->endpoints.cache_puts)))
        return -1;
    /* Puts are a cache: when availd-cache is away they are dropped at the
     * bound, not kept. */
    zsock_set_linger(ds->cache_push, 0);
    if (av_daemon_watch(d, ds->workers, workers_on_message, ds) < 0 ||
        av_daemon_watch(d, ds->frontend, on_frontend, ds) < 0)
        return -1;
    if (!(ds->scan_timer = av_daemon_every(d, SCAN_INTERVAL_MS, on_scan, ds)))
        return -1;
    av_daemon_gauge(d, "tasks", gauge_tasks);
    av_daemon_gauge(d, "waiters", gauge_waiters);
    av_daemon_gauge(d, "queriers", gauge_queriers);
    av_daemon_gauge(d, "workers", gauge_workers);
    av_daemon_status_text(d, "dispatching for %u registries", cfg->n_registries);
    return 0;
}

int
dispatcher_reload(dispatcher_t *ds, const av_config_t *next)
{
    av_names_t *names = av_names_new(next);
    if (!names || sync_registries(ds, next) < 0) {
        av_names_destroy(&names);
        return -1;
    }
    av_names_destroy(&ds->names);
    ds->names = names;
    return 0;
}

void
dispatcher_close(dispatcher_t *ds)
{
    if (ds->flush && ds->frontend)
        on_flush(ds->flush, ds); /* the turn's answers go out */
    task_table_clear(&ds->tasks);
    if (ds->queriers) {
        querier_peer_t *p;
        while ((p = zhashx_first(ds->queriers)))
            querier_forget(ds, p, "stopping");
    }
    registry_state_t *r;
    while ((r = SLIST_FIRST(&ds->registries))) {
        SLIST_REMOVE_HEAD(&ds->registries, entry);
        grants_release(r);
        free(r);
    }
    if (ds->frontend)
        av_daemon_unwatch(ds->d, ds->frontend);
    if (ds->workers)
        av_daemon_unwatch(ds->d, ds->workers);
    sd_event_source_disable_unref(ds->scan_timer);
    zsock_destroy(&ds->frontend);
    zsock_destroy(&ds->workers);
    zsock_destroy(&ds->cache_push);
    av_cache_close(&ds->cache);
    av_names_destroy(&ds->names);
    zhashx_destroy(&ds->queriers);
    sd_event_source_disable_unref(ds->flush);
    for (uint32_t i = 0; i < ds->n_peers; i++) {
        msgpack_sbuffer_destroy(&ds->peers[i].first);
        msgpack_sbuffer_destroy(&ds->peers[i].rest);
    }
    av_msg_release(&ds->msg);
    av_msg_release(&ds->worker_msg);
    msgpack_sbuffer_destroy(&ds->sbuf);
}
