/* The dispatcher's back half: queriers connect as workers (Paranoid Pirate
 * with Malamute-style credit). A querier says `ready` with its registries
 * and each one's credit, then sends heartbeats; each answer returns one
 * credit. A querier silent for heartbeat_misses intervals is dead and its
 * checks go to another; a `bye` hands checks back at once (for all its
 * registries, or those it gives up). The dispatcher never sends a querier
 * more checks of a registry than it has credit for. */
#include "dispatcher.h"

#include <stdlib.h>
#include <string.h>

static void
key_of(const peer_id_t *id, char *key)
{
    static const char hex[] = "0123456789abcdef";
    for (uint8_t i = 0; i < id->len; i++) {
        key[2 * i] = hex[id->bytes[i] >> 4];
        key[2 * i + 1] = hex[id->bytes[i] & 15];
    }
    key[2 * id->len] = '\0';
}

/* How long a querier may take: the registry's timeout, or the waiters'
 * deadline when that is later (a check may wait in the querier's queue
 * for its rate limit), plus a margin. */
static uint64_t
overdue_us(const dispatcher_t *ds, const task_t *t, uint64_t now)
{
    const av_config_t *cfg = av_daemon_config(ds->d);
    uint64_t wait = (uint64_t)t->registry->timeout_ms * 1000;
    if (t->deadline_us > now && t->deadline_us - now > wait)
        wait = t->deadline_us - now;
    return wait + (uint64_t)cfg->dispatcher.overdue_margin_ms * 1000;
}

static int
send_check(dispatcher_t *ds, worker_t *w, const task_t *t)
{
    uint64_t now = av_mono_us();
    av_check_t c = {
        .id = AV_STR(""),
        .name = av_str(t->name),
        .rid = t->id,
        .raw = t->raw,
        .deadline_ms = t->deadline_us > now ? (uint32_t)((t->deadline_us - now) / 1000) : 1,
        .registry = av_str(t->registry->name),
    };
    msgpack_sbuffer_clear(&ds->sbuf);
    if (av_encode_check(&ds->sbuf, &c) != 0)
        return -1;
    void *s = zsock_resolve(ds->workers);
    if (zmq_send(s, w->peer->id.bytes, w->peer->id.len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    return zmq_send(s, ds->sbuf.data, ds->sbuf.size, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

static worker_t *
best_worker(registry_state_t *r)
{
    worker_t *w, *best = NULL;
    LIST_FOREACH(w, &r->workers, entry)
        if (!w->leaving && w->credit > 0 && (!best || w->credit > best->credit))
            best = w;
    return best;
}

static void worker_stops_working(registry_state_t *r, worker_t *w);

static void
querier_unreachable(querier_peer_t *p)
{
    worker_t *w;
    p->unreachable = true;
    LIST_FOREACH(w, &p->workers, of_peer)
        worker_stops_working(w->registry, w);
}

bool
dispatch_task(dispatcher_t *ds, task_t *t)
{
    registry_state_t *r = t->registry;
    uint64_t now = av_mono_us();
    task_detach(t);
    worker_t *w;
    while (grants_available(r, now) && (w = best_worker(r))) {
        if (send_check(ds, w, t) == 0) {
            task_sent(t, w, now + overdue_us(ds, t, now));
            grants_take(r);
            (*ds->dispatched)++;
            return true;
        }
        /* Its ROUTER pipe is gone (or full): that querier is of no use now.
         * Only marked here: the handler that led to this dispatch may be
         * walking that querier's workers (ASan saw on_ready use one freed
         * this way at shutdown). */
        querier_unreachable(w->peer);
    }
    /* No querier with credit: wait for one, bounded. Without any querier,
     * wait only for the grace a restarting querier needs. */
    uint64_t limit = now + overdue_us(ds, t, now);
    if (r->n_workers == 0) {
        uint64_t grace_end = r->workers_gone_us + worker_grace_us(av_daemon_config(ds->d));
        limit = grace_end > now ? grace_end : now;
    }
    task_wait(t, limit);
    return r->n_workers > 0;
}

void
dispatch_pending(dispatcher_t *ds, registry_state_t *r)
{
    worker_t *w;
    task_t *t;
    while ((t = TAILQ_FIRST(&r->pending.tasks)) && grants_available(r, av_mono_us()) && (w = best_worker(r)))
        dispatch_task(ds, t);
}

static void
worker_stops_working(registry_state_t *r, worker_t *w)
{
    if (w->leaving)
        return;
    w->leaving = true;
    r->n_workers--;
    if (r->n_workers == 0)
        r->workers_gone_us = av_mono_us();
}

void
worker_forget(dispatcher_t *ds, worker_t *w, const char *why)
{
    registry_state_t *r = w->registry;
    bool was_leaving = w->leaving;
    worker_stops_working(r, w);
    LIST_REMOVE(w, entry);
    LIST_REMOVE(w, of_peer);
    ds->n_workers--;
    if (strcmp(why, "stopping") != 0 && (w->peer->unreachable || !(was_leaving && w->tasks == 0))) {
        (*ds->workers_lost)++;
        av_report(ds->d, AV_LOG_WARNING, r->name, "querier_lost", "querier pid %u %s; %u checks re-dispatched",
                  w->peer->pid, why, w->tasks);
    }
    /* Its checks go to another querier now. All are taken off it first:
     * sending one may find another querier gone and forget that one too. */
    task_list_t orphans;
    task_t *t;
    task_list_init(&orphans);
    task_list_take(&orphans, &r->sent, w);
    free(w);
    while ((t = TAILQ_FIRST(&orphans.tasks))) {
        (*ds->redispatched)++;
        dispatch_task(ds, t);
    }
}

void
querier_forget(dispatcher_t *ds, querier_peer_t *p, const char *why)
{
    worker_t *w;
    /* Taken out of the table first: re-dispatching its checks may find it
     * unreachable again, and must not forget it twice. */
    zhashx_delete(ds->queriers, p->key);
    while ((w = LIST_FIRST(&p->workers)))
        worker_forget(ds, w, why);
    free(p);
}

void
workers_forget_unreachable(dispatcher_t *ds)
{
    querier_peer_t *p;
    /* From the start after each: re-dispatching its checks may find
     * another unreachable. */
again:
    for (p = zhashx_first(ds->queriers); p; p = zhashx_next(ds->queriers))
        if (p->unreachable) {
            querier_forget(ds, p, "unreachable");
            goto again;
        }
}

void
workers_scan(dispatcher_t *ds, uint64_t now_us)
{
    const av_config_t *cfg = av_daemon_config(ds->d);
    uint64_t silence = (uint64_t)cfg->dispatcher.heartbeat_ms * cfg->dispatcher.heartbeat_misses * 1000;
    querier_peer_t *p;
    /* From the start after each: forgetting one may forget others. */
again:
    for (p = zhashx_first(ds->queriers); p; p = zhashx_next(ds->queriers))
        if (now_us - p->last_seen_us > silence) {
            bool leaving = true;
            worker_t *w;
            LIST_FOREACH(w, &p->workers, of_peer)
                leaving &= w->leaving;
            querier_forget(ds, p, p->unreachable ? "unreachable" : leaving ? "left" : "went silent");
            goto again;
        }
    workers_forget_unreachable(ds);
}

static worker_t *
worker_of(const querier_peer_t *p, const registry_state_t *r)
{
    worker_t *w;
    LIST_FOREACH(w, &p->workers, of_peer)
        if (w->registry == r)
            return w;
    return NULL;
}

static worker_t *
worker_register(dispatcher_t *ds, querier_peer_t *p, av_str_t registry, uint32_t credit)
{
    registry_state_t *r = registry_find(ds, registry.ptr, registry.len);
    if (!r || !r->configured) {
        av_report(ds->d, AV_LOG_WARNING, NULL, "unknown_registry",
                  "a querier (pid %u) works for registry '%.*s', which is not configured here", p->pid,
                  (int)registry.len, registry.ptr);
        return NULL;
    }
    worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->peer = p;
    w->registry = r;
    w->credit = credit;
    LIST_INSERT_HEAD(&r->workers, w, entry);
    LIST_INSERT_HEAD(&p->workers, w, of_peer);
    r->n_workers++;
    ds->n_workers++;
    av_log_info("querier pid %u of %s is up (credit %u)", p->pid, r->name, credit);
    return w;
}

static querier_peer_t *
querier_register(dispatcher_t *ds, const peer_id_t *id, const char *key, uint32_t pid)
{
    querier_peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->id = *id;
    memcpy(p->key, key, strlen(key) + 1);
    p->pid = pid;
    LIST_INIT(&p->workers);
    zhashx_insert(ds->queriers, p->key, p);
    return p;
}

/* A ready or heartbeat: the registries it serves now. A worker for each is
 * made when new (with the credit the querier gives); `ready` sets every
 * credit, a heartbeat only a new worker's: after that each check sent takes
 * one and each answer returns one, so checks in transit are never counted
 * twice. A registry it no longer names has left it (a reload moved it). */
static void
on_ready(dispatcher_t *ds, querier_peer_t *p, const av_ready_t *ready, bool is_ready)
{
    uint32_t n = ready->n_registries ? ready->n_registries : 1;
    uint64_t mark = ++p->announcements;
    worker_t *w, *next;
    for (uint32_t i = 0; i < n; i++) {
        av_credit_t c = { ready->registry, ready->credit };
        if (ready->n_registries)
            av_ready_credit_at(ready, i, &c);
        registry_state_t *r = registry_find(ds, c.registry.ptr, c.registry.len);
        if (!(w = r ? worker_of(p, r) : NULL))
            w = worker_register(ds, p, c.registry, c.credit);
        else if (is_ready && !w->leaving)
            w->credit = c.credit;
        if (w)
            w->announced = mark;
    }
    for (w = LIST_FIRST(&p->workers); w; w = next) {
        next = LIST_NEXT(w, of_peer);
        if (w->announced != mark)
            worker_forget(ds, w, "stopped serving it");
    }
    LIST_FOREACH(w, &p->workers, of_peer)
        if (!w->leaving)
            dispatch_pending(ds, w->registry);
}

static void
on_answer(dispatcher_t *ds, querier_peer_t *p, const av_answer_t *a)
{
    task_t *t = a->rid ? task_by_id(&ds->tasks, a->rid) : NULL;
    registry_state_t *r = t ? t->registry : registry_find(ds, a->registry.ptr, a->registry.len);
    worker_t *w = p && r ? worker_of(p, r) : NULL;
    if (w)
        w->credit++;
    if (!t || strlen(t->name) != a->name.len || memcmp(t->name, a->name.ptr, a->name.len) != 0) {
        /* Its task was answered by another querier, or we restarted: the
         * verdict still teaches the cache. */
        (*ds->stale_answers)++;
        if (a->source != AV_SOURCE_NONE)
            put_to_cache(ds, a, r);
    } else {
        if (a->source != AV_SOURCE_NONE)
            put_to_cache(ds, a, t->registry);
        task_complete(&ds->tasks, t, a, answer_intake, ds);
    }
    if (w && !w->leaving)
        dispatch_pending(ds, w->registry);
}

/* A querier leaving (no registries named: all of them) or giving some up,
 * with the checks it hands back. */
static void
on_bye(dispatcher_t *ds, querier_peer_t *p, const av_ready_t *bye)
{
    worker_t *w;
    if (bye->n_registries == 0) {
        LIST_FOREACH(w, &p->workers, of_peer)
            worker_stops_working(w->registry, w);
    }
    for (uint32_t i = 0; i < bye->n_registries; i++) {
        av_credit_t c;
        av_ready_credit_at(bye, i, &c);
        registry_state_t *r = registry_find(ds, c.registry.ptr, c.registry.len);
        if (r && (w = worker_of(p, r)))
            worker_stops_working(r, w);
    }
    uint32_t back = 0;
    for (uint32_t i = 0; i < bye->n_ids; i++) {
        task_t *t = task_by_id(&ds->tasks, av_bye_id_at(bye, i));
        if (t && t->worker && t->worker->peer == p) {
            t->attempts--; /* handed back, not failed */
            dispatch_task(ds, t);
            back++;
        }
    }
    av_log_info("querier pid %u %s; %u checks handed back", p->pid,
                bye->n_registries ? "gives registries up" : "is leaving", back);
}

bool
workers_on_message(av_daemon_t *d, zsock_t *sock, void *arg)
{
    dispatcher_t *ds = arg;
    av_envelope_t env;
    zframe_t *body = av_router_recv(sock, &env);
    if (!body && !env.identity)
        return false;
    av_msg_t *msg = &ds->worker_msg;
    peer_id_t id = { 0 };
    char key[2 * PEER_ID_MAX + 1];
    int rc = body ? av_msg_decode(msg, zframe_data(body), zframe_size(body)) : AV_PROTO_E_NOT_MSGPACK;
    size_t idlen = env.identity ? zframe_size(env.identity) : 0;
    if (rc != 0 || idlen == 0 || idlen > PEER_ID_MAX) {
        char why[128];
        (*ds->malformed)++;
        av_report(d, AV_LOG_WARNING, NULL, "malformed_message", "dropped a message from a querier: %s",
                  rc ? av_msg_strerror(msg, rc, why, sizeof why) : "bad routing id");
        goto out;
    }
    id.len = (uint8_t)idlen;
    memcpy(id.bytes, zframe_data(env.identity), idlen);
    key_of(&id, key);
    querier_peer_t *p = zhashx_lookup(ds->queriers, key);
    if (p)
        p->last_seen_us = av_mono_us();
    switch (msg->type) {
    case AV_MSG_READY:
    case AV_MSG_HEARTBEAT:
        /* A heartbeat from a querier we do not know: we restarted and it
         * reconnected. Its heartbeat carries what a ready would. */
        if (!p && msg->u.ready.registry.len && (p = querier_register(ds, &id, key, msg->u.ready.pid)))
            p->last_seen_us = av_mono_us();
        if (p)
            on_ready(ds, p, &msg->u.ready, msg->type == AV_MSG_READY);
        break;
    case AV_MSG_ANSWER:
        on_answer(ds, p, &msg->u.answer);
        break;
    case AV_MSG_BYE:
        if (p)
            on_bye(ds, p, &msg->u.ready);
        break;
    default:
        (*ds->malformed)++;
        av_report(d, AV_LOG_WARNING, NULL, "malformed_message", "a querier sent a %s message",
                  av_msg_type_name(msg->type));
        break;
    }
out:
    workers_forget_unreachable(ds);
    zframe_destroy(&body);
    av_envelope_clear(&env);
    return true;
}
