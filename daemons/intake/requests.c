/* Requests from acceptance to their final answers. Each loop turn:
 *   1. requests read this turn are journaled and answers made this turn
 *      take their requests out of the journal, in one transaction;
 *   2. then the new requests go to the dispatcher and the answers go out.
 * So a request is durable before any work is done for it, and an answer is
 * sent only once the journal no longer holds its request: a crash at any
 * point loses no accepted request and sends no answer twice (a crash right
 * after a commit can lose that turn's answers in flight; the frontend's
 * retry gets them, see README "What survives").
 * When the commit fails (a full disk), the turn's new requests are not
 * durable: they are answered `unknown` (storage) and never forwarded. The
 * deletes and rewrites stay queued in the journal, and the answers that go
 * with them wait until a commit writes them; a stop before that leaves
 * their requests in the journal, for the next intake to answer once.
 * Each name's answer is taken once (a second is a duplicate), `unknown`
 * (deadline) answers what is not answered in time, and unanswered names
 * are sent again when the dispatcher comes back or after intake.resend_ms. */
#include "intake.h"

#include "journal.h"

#include <stdlib.h>
#include <string.h>

#define DEADLINE_MAX_MS (10 * 60 * 1000)
#define MONITOR_ENDPOINT "inproc://intake-dispatcher-monitor"

/* ---- the request table -------------------------------------------------- */

static void
deadline_insert(intake_t *in, request_t *r)
{
    /* Nearly every request has the default deadline, so the right place is
     * almost always the tail. */
    request_t *after = TAILQ_LAST(&in->by_deadline, request_list);
    while (after && after->deadline_us > r->deadline_us)
        after = TAILQ_PREV(after, request_list, deadline_entry);
    if (after)
        TAILQ_INSERT_AFTER(&in->by_deadline, after, r, deadline_entry);
    else
        TAILQ_INSERT_HEAD(&in->by_deadline, r, deadline_entry);
}

static void
sent_remove(intake_t *in, request_t *r)
{
    if (r->forwarded)
        TAILQ_REMOVE(&in->by_sent, r, sent_entry);
}

static void
rid_key(uint64_t rid, char *key)
{
    snprintf(key, 24, "%llu", (unsigned long long)rid);
}

/* Frees a request that is in no table or list. */
static void
request_destroy(request_t *r)
{
    if (r->encoded) {
        for (uint32_t i = 0; i < r->n_names; i++)
            free(r->encoded[i]);
        free(r->encoded);
    }
    free(r->encoded_len);
    if (r->conn)
        request_forget_conn(r);
    free(r->names);
    free(r->done);
    free(r->owned);
    zframe_destroy(&r->frame);
    av_envelope_clear(&r->env);
    free(r);
}

static void
request_free(intake_t *in, request_t *r)
{
    char key[24];
    rid_key(r->rid, key);
    zhashx_delete(in->requests, key);
    TAILQ_REMOVE(&in->by_deadline, r, deadline_entry);
    sent_remove(in, r);
    in->names_inflight -= r->n_names;
    request_destroy(r);
}

static void
end_turn_soon(intake_t *in)
{
    if (in->turn_end)
        sd_event_source_set_enabled(in->turn_end, SD_EVENT_ONESHOT);
}

/* Rids rather than pointers: a request may be answered (and freed) by a
 * deadline before its turn ends. */
static int
queue_rid(intake_t *in, rid_list_t *l, uint64_t rid)
{
    if (l->count == l->cap) {
        uint32_t cap = l->cap ? 2 * l->cap : 256;
        uint64_t *grown = realloc(l->rids, cap * sizeof *grown);
        if (!grown)
            return -1;
        l->rids = grown;
        l->cap = cap;
    }
    l->rids[l->count++] = rid;
    end_turn_soon(in);
    return 0;
}

static request_t *
find(intake_t *in, uint64_t rid)
{
    char key[24];
    rid_key(rid, key);
    return zhashx_lookup(in->requests, key);
}

/* ---- the journal --------------------------------------------------------- */

/* Queues the request as it is now for the turn's commit (names already
 * answered are left out): a new request's record (fresh), or a rewrite.
 * Returns 0, or -1 out of memory. */
static int
journal_request(intake_t *in, const request_t *r, bool fresh)
{
    journal_record_t rec = {
        .rid = r->rid,
        .origin = r->origin,
        .id = r->id,
        .batch = r->batch,
        .fresh = r->fresh,
        .raw = r->raw,
        .deadline_at_ms = r->deadline_at_ms,
        .delimiter = r->env.delimiter,
        .n_names = r->n_names,
        .names = r->names,
        .answered = r->done,
    };
    if (r->env.identity)
        rec.peer = (av_str_t){ (const char *)zframe_data(r->env.identity), (uint32_t)zframe_size(r->env.identity) };
    return fresh ? journal_put_new(in->journal, &rec) : journal_put(in->journal, &rec);
}

/* ---- delivering --------------------------------------------------------- */

/* Replies on the ROUTER are bounded by bytes, not only by ZeroMQ's count
 * of messages per peer (a batch's reply can be megabytes): each is handed
 * to ZeroMQ without a copy, and ZeroMQ's I/O thread gives its bytes back
 * (reply_released) once it has written them to the connection or dropped
 * them with it. A frontend that does not read its replies has at most
 * PEER_QUEUE_MAX_BYTES in ZeroMQ's queues and HOLD_PEER_MAX_BYTES held
 * here; the rest of its replies are lost (it asks again). */
#define PEER_QUEUE_MAX_BYTES (4u << 20)
#define ROUTER_QUEUE_MAX_BYTES (64u << 20) /* all peers together */
#define PEERS_SWEEP_US (1000 * 1000)

/* The bytes queued, shared by the peers: it outlives intake's state as
 * long as ZeroMQ holds a reply (the sockets close after it). */
struct reply_budget {
    size_t queued_bytes;         /* atomic */
    uint32_t refs;               /* atomic: intake's, and one per peer */
};

/* A frontend of the ROUTER with replies queued or held. */
struct reply_peer {
    struct reply_budget *budget;
    size_t queued_bytes;         /* atomic: in ZeroMQ's queues */
    uint32_t refs;               /* atomic: the table's, one per reply queued or held */
    size_t held_bytes;           /* in intake's held list (loop thread) */
};

/* What ZeroMQ hands back with a reply's bytes. */
typedef struct {
    reply_peer_t *peer;
    size_t size;
} reply_ticket_t;

static void
budget_unref(reply_budget_t *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}

static void
peer_unref(reply_peer_t *p)
{
    if (p && __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        budget_unref(p->budget);
        free(p);
    }
}

static void
peer_unref_fn(void **item)
{
    peer_unref(*item);
    *item = NULL;
}

/* Called by ZeroMQ (in its I/O thread, or ours when a send fails). */
static void
reply_released(void *data, void *hint)
{
    reply_ticket_t *t = hint;
    __atomic_sub_fetch(&t->peer->queued_bytes, t->size, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&t->peer->budget->queued_bytes, t->size, __ATOMIC_RELAXED);
    peer_unref(t->peer);
    free(t);
    free(data);
}

/* The peer's entry (NULL: out of memory). The key is the routing id in
 * hex: zhashx keys are strings. */
static reply_peer_t *
peer_of(intake_t *in, const zframe_t *identity)
{
    char key[2 * 255 + 1];
    size_t n = zframe_size((zframe_t *)identity);
    const uint8_t *id = zframe_data((zframe_t *)identity);
    if (n > 255)
        n = 255;
    for (size_t i = 0; i < n; i++)
        snprintf(key + 2 * i, 3, "%02x", id[i]);
    key[2 * n] = '\0';
    reply_peer_t *p = zhashx_lookup(in->reply_peers, key);
    if (p)
        return p;
    if (!(p = calloc(1, sizeof *p)))
        return NULL;
    p->budget = in->reply_budget;
    p->refs = 1;
    __atomic_add_fetch(&p->budget->refs, 1, __ATOMIC_ACQ_REL);
    if (zhashx_insert(in->reply_peers, key, p) != 0) {
        peer_unref(p);
        return NULL;
    }
    return p;
}

/* Forgets the peers with nothing queued or held (one reference left: the
 * table's; only this thread adds references). */
static void
sweep_peers(intake_t *in)
{
    zlistx_t *keys = zhashx_keys(in->reply_peers);
    if (!keys)
        return;
    for (const char *key = zlistx_first(keys); key; key = zlistx_next(keys)) {
        reply_peer_t *p = zhashx_lookup(in->reply_peers, key);
        if (p && __atomic_load_n(&p->refs, __ATOMIC_ACQUIRE) == 1 && p->held_bytes == 0)
            zhashx_delete(in->reply_peers, key);
    }
    zlistx_destroy(&keys);
}

static void
outgoing_free(outgoing_t *o)
{
    zframe_destroy(&o->identity);
    free(o->topic);
    free(o->bytes);
    o->bytes = NULL;
    peer_unref(o->peer);
    o->peer = NULL;
}

/* A reply to a frontend that is not connected (yet: after our restart it
 * reconnects within its reconnect interval), or that has its share of
 * ZeroMQ's queues, is kept and tried again, for HOLD_UNROUTABLE_MS, at
 * most HOLD_UNROUTABLE_MAX of them, HOLD_MAX_BYTES, and HOLD_PEER_MAX_BYTES
 * for one frontend (one that does not read cannot take the room of those
 * coming back). */
#define HOLD_UNROUTABLE_MS 5000
#define HOLD_UNROUTABLE_MAX 100000
#define HOLD_MAX_BYTES (64u << 20)
#define HOLD_PEER_MAX_BYTES (4u << 20)

static bool
hold(intake_t *in, outgoing_t *o)
{
    if (in->n_held == HOLD_UNROUTABLE_MAX || in->held_bytes + o->size > HOLD_MAX_BYTES)
        return false;
    if (!o->peer && o->origin == ORIGIN_ROUTER) {
        reply_peer_t *p = peer_of(in, o->identity);
        if (!p)
            return false;
        __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
        o->peer = p;
    }
    if (o->peer && o->peer->held_bytes + o->size > HOLD_PEER_MAX_BYTES)
        return false;
    if (in->n_held == in->cap_held) {
        uint32_t cap = in->cap_held ? 2 * in->cap_held : 64;
        outgoing_t *grown = realloc(in->held, cap * sizeof *grown);
        if (!grown)
            return false;
        in->held = grown;
        in->cap_held = cap;
    }
    o->held_until_us = av_mono_us() + (uint64_t)HOLD_UNROUTABLE_MS * 1000;
    in->held_bytes += o->size;
    if (o->peer)
        o->peer->held_bytes += o->size;
    in->held[in->n_held++] = *o;
    return true;
}

/* o leaves the held list (sent or given up). */
static void
unhold(intake_t *in, outgoing_t *o)
{
    in->held_bytes -= o->size;
    if (o->peer)
        o->peer->held_bytes -= o->size;
}

/* Sends a reply on the ROUTER: false when it should be held (the peer is
 * not connected, or has its share of the queues); true when it went (its
 * bytes now ZeroMQ's) or is lost. */
static bool
router_send(intake_t *in, outgoing_t *o)
{
    reply_peer_t *p = o->peer ? o->peer : peer_of(in, o->identity);
    if (!p) {
        (*in->answers_lost)++; /* out of memory */
        return true;
    }
    /* A peer with nothing queued may always send one: a reply larger than
     * the share still goes to a frontend that reads. */
    size_t queued = __atomic_load_n(&p->queued_bytes, __ATOMIC_RELAXED);
    size_t total = __atomic_load_n(&in->reply_budget->queued_bytes, __ATOMIC_RELAXED);
    if (queued > 0 && (queued + o->size > PEER_QUEUE_MAX_BYTES || total + o->size > ROUTER_QUEUE_MAX_BYTES))
        return false;
    void *s = zsock_resolve(in->router);
    /* ROUTER_MANDATORY: the identity fails when the peer is gone or its
     * queue full; past it, the message's other frames always go (or are
     * dropped by ZeroMQ with the peer). */
    if (zmq_send(s, zframe_data(o->identity), zframe_size(o->identity), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return false;
    if (o->delimiter)
        zmq_send(s, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    reply_ticket_t *t = malloc(sizeof *t);
    zmq_msg_t m;
    if (!t || zmq_msg_init_data(&m, o->bytes, o->size, reply_released, t) != 0) {
        free(t); /* out of memory: a copy, not counted */
        if (zmq_send(s, o->bytes, o->size, ZMQ_DONTWAIT) < 0)
            (*in->answers_lost)++;
        else
            (*in->answers_out)++;
        return true;
    }
    *t = (reply_ticket_t){ p, o->size };
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    __atomic_add_fetch(&p->queued_bytes, o->size, __ATOMIC_RELAXED);
    __atomic_add_fetch(&in->reply_budget->queued_bytes, o->size, __ATOMIC_RELAXED);
    o->bytes = NULL; /* reply_released frees them */
    if (zmq_msg_send(&m, s, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        (*in->answers_lost)++;
    } else {
        (*in->answers_out)++;
    }
    return true;
}

/* A PUB drops for a slow subscriber: by nature best effort (a frontend
 * reads promptly, and can ask again). */
static void
publish(intake_t *in, const outgoing_t *o)
{
    void *s = zsock_resolve(in->results);
    if (zmq_send(s, o->topic, o->topic_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        zmq_send(s, o->bytes, o->size, ZMQ_DONTWAIT) >= 0)
        (*in->answers_out)++;
    else
        (*in->answers_lost)++;
}

/* Returns true when o was handed to the socket (or given up), false when
 * it should be kept for another try. */
static bool
try_send(intake_t *in, outgoing_t *o)
{
    if (!(o->origin == ORIGIN_ROUTER ? in->router : in->results)) {
        (*in->answers_lost)++; /* closing down */
        return true;
    }
    if (o->origin == ORIGIN_ROUTER)
        return router_send(in, o);
    /* Nobody subscribed to it (yet): a frontend reconnecting to us after
     * our restart, or one whose subscription is still on its way (the slow
     * joiner). Held, for HOLD_UNROUTABLE_MS, instead of dropped; then
     * published all the same (ZeroMQ's own table decides), so that what a
     * peer may fake on the XPUB (an unsubscribe of another's prefix) can
     * delay an answer but not lose it. */
    if (in->subscriptions && (!o->held_until_us || av_mono_us() < o->held_until_us)) {
        uint64_t generation = subscriptions_generation(in->subscriptions) + 1;
        if (o->unmatched_at == generation)
            return false; /* no one came since it was last tried */
        if (!subscriptions_match(in->subscriptions, o->topic, o->topic_len)) {
            if (!o->unmatched_at)
                (*in->answers_held_for_subscriber)++;
            o->unmatched_at = generation;
            return false;
        }
    }
    publish(in, o);
    return true;
}

static void
send_now(intake_t *in, outgoing_t *o)
{
    if (try_send(in, o))
        outgoing_free(o);
    else if (!hold(in, o)) {
        if (o->origin == ORIGIN_ROUTER)
            (*in->answers_lost)++;
        else
            publish(in, o); /* no room to hold it: as a plain PUB would */
        outgoing_free(o);
    }
}

/* An answer whose journal changes are not written yet: kept until they
 * are. As many as the requests accepted before the journal failed, for
 * new ones are refused meanwhile. */
static void
keep_waiting(intake_t *in, outgoing_t *o)
{
    if (in->n_waiting == in->cap_waiting) {
        uint32_t cap = in->cap_waiting ? 2 * in->cap_waiting : 256;
        outgoing_t *grown = realloc(in->waiting, cap * sizeof *grown);
        if (!grown) {
            /* Its request stays in the journal: the next intake answers. */
            av_log_err("out of memory for an answer waiting for the journal; it goes with the next intake");
            (*in->answers_lost)++;
            outgoing_free(o);
            return;
        }
        in->waiting = grown;
        in->cap_waiting = cap;
    }
    in->waiting[in->n_waiting++] = *o;
}

/* The turn's answers go out, and those that waited for the journal once
 * nothing is left to write; while something is, the answers of journaled
 * requests wait (an answer out before its request leaves the journal
 * would be given again after a restart). */
static void
send_answers(intake_t *in)
{
    bool journal_behind = journal_pending(in->journal) > 0;
    if (!journal_behind && in->n_waiting) {
        for (uint32_t i = 0; i < in->n_waiting; i++)
            send_now(in, &in->waiting[i]);
        in->n_waiting = 0;
    }
    for (uint32_t i = 0; i < in->n_outbox; i++) {
        if (journal_behind && in->outbox[i].after_journal)
            keep_waiting(in, &in->outbox[i]);
        else
            send_now(in, &in->outbox[i]);
    }
    in->n_outbox = 0;
}

static void retry_held(intake_t *in, uint64_t now_us);

void
requests_subscriber_came(intake_t *in)
{
    if (in->n_held)
        retry_held(in, av_mono_us());
}

static void
retry_held(intake_t *in, uint64_t now_us)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < in->n_held; i++) {
        outgoing_t *o = &in->held[i];
        if (try_send(in, o)) {
            unhold(in, o);
            outgoing_free(o);
        } else if (o->held_until_us <= now_us) {
            (*in->answers_lost)++; /* the frontend did not come back; it asks again */
            unhold(in, o);
            outgoing_free(o);
        } else {
            in->held[kept++] = *o;
        }
    }
    in->n_held = kept;
}


/* Queues in->sbuf's bytes for the end of the turn (after the commit). */
static void
queue_out(intake_t *in, origin_t origin, const request_t *r, const av_envelope_t *env, av_str_t topic)
{
    if (in->n_outbox == in->cap_outbox) {
        uint32_t cap = in->cap_outbox ? 2 * in->cap_outbox : 256;
        outgoing_t *grown = realloc(in->outbox, cap * sizeof *grown);
        if (!grown) {
            (*in->answers_lost)++;
            return;
        }
        in->outbox = grown;
        in->cap_outbox = cap;
    }
    outgoing_t *o = &in->outbox[in->n_outbox];
    memset(o, 0, sizeof *o);
    o->origin = origin;
    o->after_journal = r && r->journaled;
    o->bytes = malloc(in->sbuf.size);
    if (origin == ORIGIN_ROUTER) {
        const av_envelope_t *e = r ? &r->env : env;
        o->identity = e && e->identity ? zframe_dup(e->identity) : NULL;
        o->delimiter = e && e->delimiter;
    } else {
        o->topic = malloc(topic.len ? topic.len : 1);
        if (o->topic && topic.len)
            memcpy(o->topic, topic.ptr, topic.len);
        o->topic_len = topic.len;
    }
    if (!o->bytes || (origin == ORIGIN_ROUTER ? !o->identity : !o->topic)) {
        outgoing_free(o);
        (*in->answers_lost)++;
        return;
    }
    memcpy(o->bytes, in->sbuf.data, in->sbuf.size);
    o->size = in->sbuf.size;
    in->n_outbox++;
    end_turn_soon(in);
}

static void
queue_batch_reply(intake_t *in, request_t *r)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(&in->sbuf);
    msgpack_packer_init(&pk, &in->sbuf, msgpack_sbuffer_write);
    av_pack_answers_begin(&pk, r->id, r->n_names);
    for (uint32_t i = 0; i < r->n_names; i++)
        msgpack_sbuffer_write(&in->sbuf, r->encoded[i], r->encoded_len[i]);
    queue_out(in, ORIGIN_ROUTER, r, NULL, r->id);
}

/* What a frontend wrote, echoed as valid UTF-8 (a byte that starts no
 * UTF-8 sequence is '?'): a frontend's msgpack library may refuse a str
 * that is not, and echoing bytes back is no answer. buf has size bytes. */
static av_str_t
echo_utf8(char *buf, size_t size, av_str_t s)
{
    return (av_str_t){ buf, (uint32_t)av_utf8_sanitize(buf, size, s.ptr, s.len) };
}

static void
deliver(intake_t *in, request_t *r, uint32_t idx, const av_answer_t *from)
{
    char id[AV_ID_MAX + 1], name[AV_NAME_MAX + 1], query[AV_NAME_MAX + 1];
    av_answer_t a = *from;
    a.id = echo_utf8(id, sizeof id, r->id);
    a.rid = 0;
    a.idx = idx;
    a.has_idx = r->batch;
    a.name = echo_utf8(name, sizeof name, from->name); /* as asked, when invalid */
    a.query = echo_utf8(query, sizeof query, r->names[idx]);
    if (!r->raw)
        a.raw = (av_str_t){ "", 0 };
    r->done[idx] = 1;
    r->answered++;
    bool complete = r->answered == r->n_names;
    switch (r->origin) {
    case ORIGIN_PULL:
        msgpack_sbuffer_clear(&in->sbuf);
        if (av_encode_answer(&in->sbuf, &a) == 0)
            queue_out(in, ORIGIN_PULL, r, NULL, r->id);
        /* A pushed batch publishes name by name: the journal must forget
         * each name as it goes out, or a restart would publish it again.
         * The record is rewritten once per turn, not once per name. */
        if (!complete && r->batch && r->journaled && !r->journal_dirty) {
            r->journal_dirty = true;
            queue_rid(in, &in->to_rejournal, r->rid);
        }
        break;
    case ORIGIN_ROUTER:
        msgpack_sbuffer_clear(&in->sbuf);
        if (!r->batch) {
            if (av_encode_answer(&in->sbuf, &a) == 0)
                queue_out(in, ORIGIN_ROUTER, r, NULL, r->id);
            break;
        }
        {
            msgpack_packer pk;
            msgpack_packer_init(&pk, &in->sbuf, msgpack_sbuffer_write);
            av_pack_answer_map(&pk, &a);
            r->encoded[idx] = malloc(in->sbuf.size);
            if (r->encoded[idx]) {
                memcpy(r->encoded[idx], in->sbuf.data, in->sbuf.size);
                r->encoded_len[idx] = (uint32_t)in->sbuf.size;
            }
            if (complete)
                queue_batch_reply(in, r);
        }
        break;
    case ORIGIN_GATEWAY:
        /* Not journaled (its connection dies with the process): no commit
         * to wait for. */
        if (r->conn) {
            char line[AV_NAME_MAX + AV_REASON_MAX + 64];
            gateway_conn_t *conn = r->conn;
            r->conn = NULL; /* the connection closes once the line is out */
            int n = snprintf(line, sizeof line, "%.*s %s%s%.*s\r\n", (int)r->names[idx].len, r->names[idx].ptr,
                             av_status_name(a.status), a.reason.len ? " " : "", (int)a.reason.len, a.reason.ptr);
            gateway_answer(conn, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
            (*in->answers_out)++;
        }
        break;
    }
    if (complete) {
        if (r->journaled && journal_delete(in->journal, r->rid) < 0)
            av_log_err("out of memory: request %llu stays in the journal", (unsigned long long)r->rid);
        request_free(in, r);
    }
}

/* An answer availd makes itself (overloaded, deadline). */
static void
deliver_unknown(intake_t *in, request_t *r, uint32_t idx, const char *reason)
{
    av_answer_t a = {
        .name = r->names[idx],
        .status = AV_STATUS_UNKNOWN,
        .reason = av_str(reason),
        .source = AV_SOURCE_NONE,
        .at_ms = av_now_ms(),
    };
    deliver(in, r, idx, &a);
}

/* Answers every name not answered yet with `unknown` (reason), counted
 * in *counter; frees r. */
static void
answer_rest_unknown(intake_t *in, request_t *r, const char *reason, uint64_t *counter)
{
    uint32_t left = r->n_names - r->answered;
    *counter += left;
    for (uint32_t i = 0; left && i < r->n_names; i++) { /* left first: the last answer frees r */
        if (r->done[i])
            continue;
        left--;
        deliver_unknown(in, r, i, reason);
    }
}

/* ---- forwarding --------------------------------------------------------- */

/* The check asking the dispatcher for name idx of r, or for all its names
 * (whole). The names go as views: the request's own bytes may be a gateway
 * line, a journal record or hold keys not for the dispatcher. */
static av_check_t
check_of(const request_t *r, uint32_t idx, bool whole, uint64_t now_us)
{
    av_check_t c = {
        .id = r->id,
        .fresh = r->fresh,
        .raw = r->raw,
        .deadline_ms = r->deadline_us > now_us ? (uint32_t)((r->deadline_us - now_us) / 1000) : 1,
        .rid = r->rid,
        .idx = idx,
        .batches = true, /* we read answers in batches too */
    };
    if (whole && r->n_names > 1) {
        c.name_views = r->names;
        c.n_names = r->n_names;
        c.idx = 0;
    } else {
        c.name = r->names[idx];
    }
    return c;
}

static int
send_check(intake_t *in, const request_t *r, uint32_t idx, bool whole)
{
    av_check_t c = check_of(r, idx, whole, av_mono_us());
    msgpack_sbuffer_clear(&in->sbuf);
    if (av_encode_check(&in->sbuf, &c) != 0)
        return -1;
    return av_zsock_send_nowait(in->dispatcher, in->sbuf.data, in->sbuf.size);
}

/* r went to the dispatcher: the resend timer counts from now. */
static void
mark_sent(intake_t *in, request_t *r, uint64_t now_us)
{
    sent_remove(in, r);
    r->forwarded = true;
    r->last_sent_us = now_us;
    TAILQ_INSERT_TAIL(&in->by_sent, r, sent_entry);
}

/* First sending: the whole request in one message. */
static void
forward(intake_t *in, request_t *r)
{
    int rc = 0;
    if (r->answered == 0) {
        rc = send_check(in, r, 0, true);
    } else {
        for (uint32_t i = 0; i < r->n_names && rc == 0; i++)
            if (!r->done[i])
                rc = send_check(in, r, i, false);
    }
    mark_sent(in, r, av_mono_us());
    if (rc < 0) {
        /* The dispatcher's queue is full: the resend timer tries again
         * while the deadline lasts. */
        av_log_debug("dispatcher queue full; request %llu waits for a resend", (unsigned long long)r->rid);
    }
}

static void
resend(intake_t *in, request_t *r)
{
    for (uint32_t i = 0; i < r->n_names; i++)
        if (!r->done[i] && send_check(in, r, i, false) == 0)
            (*in->resent)++;
    mark_sent(in, r, av_mono_us());
}

void
requests_resend_all(intake_t *in)
{
    request_t *r, *last = TAILQ_LAST(&in->by_sent, request_list);
    /* resend moves each to the tail: stop after the one that was last */
    while ((r = TAILQ_FIRST(&in->by_sent))) {
        resend(in, r);
        if (r == last)
            break;
    }
}

/* One message per turn for the single-name requests of the turn (each
 * ZeroMQ message costs both daemons more than its content), when the
 * dispatcher said it reads batches; the others go one by one. */
#define FORWARD_BATCH 512

static void
send_batch(intake_t *in, const av_check_t *checks, request_t **reqs, uint32_t n, uint64_t now_us)
{
    msgpack_sbuffer_clear(&in->sbuf);
    if (av_encode_checks(&in->sbuf, checks, n) == 0)
        av_zsock_send_nowait(in->dispatcher, in->sbuf.data, in->sbuf.size); /* else: resend */
    for (uint32_t k = 0; k < n; k++)
        mark_sent(in, reqs[k], now_us);
}

static void
forward_all(intake_t *in)
{
    av_check_t batch[FORWARD_BATCH];
    request_t *sent[FORWARD_BATCH];
    uint32_t n = 0;
    uint64_t now = av_mono_us();
    for (uint32_t i = 0; i < in->to_forward.count; i++) {
        request_t *r = find(in, in->to_forward.rids[i]);
        if (!r || r->forwarded)
            continue;
        if (!in->dispatcher_batches || r->n_names != 1 || r->answered) {
            forward(in, r);
            continue;
        }
        batch[n] = check_of(r, 0, false, now);
        sent[n++] = r;
        if (n == FORWARD_BATCH) {
            send_batch(in, batch, sent, n, now);
            n = 0;
        }
    }
    if (n)
        send_batch(in, batch, sent, n, now);
    in->to_forward.count = 0;
}

/* The turn's new requests after the commit: durable (committed), or
 * refused, for what cannot be journaled must not be taken: their records
 * were dropped, so they leave no trace and are never forwarded. */
static void
settle_new(intake_t *in, bool committed)
{
    for (uint32_t i = 0; i < in->to_forward.count; i++) {
        request_t *r = find(in, in->to_forward.rids[i]);
        if (!r || !r->journaled || r->durable)
            continue;
        if (committed) {
            r->durable = true;
            continue;
        }
        r->journaled = false;
        answer_rest_unknown(in, r, AV_REASON_STORAGE, in->storage_refused);
    }
}

/* The end of a loop turn: commit, then act. now: try the journal even
 * while it fails (a stop). */
static void
turn_end(intake_t *in, bool now)
{
    for (uint32_t i = 0; i < in->to_rejournal.count; i++) {
        request_t *r = find(in, in->to_rejournal.rids[i]);
        if (r && r->journal_dirty) {
            r->journal_dirty = false;
            if (journal_request(in, r, false) < 0)
                av_log_err("out of memory: request %llu is rewritten in the journal later",
                           (unsigned long long)r->rid);
        }
    }
    in->to_rejournal.count = 0;
    if (in->journal)
        settle_new(in, (now ? journal_commit_now(in->journal) : journal_commit(in->journal)) == 0);
    forward_all(in);
    send_answers(in);
}

static int
on_turn_end(sd_event_source *s, void *userdata)
{
    (void)s;
    turn_end(userdata, false);
    return 0;
}


/* ---- accepting ---------------------------------------------------------- */

void
request_reject(intake_t *in, origin_t origin, av_str_t id, const av_envelope_t *env, const char *why)
{
    char id_utf8[AV_ID_MAX + 1];
    av_answer_t a = {
        .id = echo_utf8(id_utf8, sizeof id_utf8, id), /* the topic stays as sent */
        .name = AV_STR(""),
        .status = AV_STATUS_INVALID,
        .reason = av_str(why),
        .source = AV_SOURCE_NONE,
        .at_ms = av_now_ms(),
    };
    (*in->invalid_requests)++;
    msgpack_sbuffer_clear(&in->sbuf);
    if (av_encode_answer(&in->sbuf, &a) == 0)
        queue_out(in, origin, NULL, env, id);
}

void
request_pong(intake_t *in, origin_t origin, av_str_t id, const av_envelope_t *env)
{
    char id_utf8[AV_ID_MAX + 1];
    msgpack_packer pk;
    msgpack_sbuffer_clear(&in->sbuf);
    msgpack_packer_init(&pk, &in->sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    av_pack_kv_str(&pk, "t", "pong");
    av_pack_kv_uint(&pk, "v", AV_PROTO_VERSION);
    av_pack_kv_strn(&pk, "id", echo_utf8(id_utf8, sizeof id_utf8, id));
    queue_out(in, origin, NULL, env, id);
}

/* Builds the request; NULL when out of memory. */
static request_t *
request_new(uint64_t rid, origin_t origin, uint32_t n)
{
    request_t *r = calloc(1, sizeof *r);
    if (!r || !(r->names = calloc(n, sizeof *r->names)) || !(r->done = calloc(n, 1))) {
        if (r)
            free(r->names);
        free(r);
        return NULL;
    }
    r->rid = rid;
    r->origin = origin;
    r->n_names = n;
    return r;
}

static void
request_register(intake_t *in, request_t *r)
{
    char key[24];
    rid_key(r->rid, key);
    zhashx_insert(in->requests, key, r);
    deadline_insert(in, r);
    in->names_inflight += r->n_names;
}

request_t *
request_accept(intake_t *in, origin_t origin, zframe_t *frame, char *owned, const av_check_t *check,
               const av_envelope_t *env, gateway_conn_t *conn)
{
    const av_config_t *cfg = av_daemon_config(in->d);
    uint32_t n = av_check_count(check);
    request_t *r = request_new(++in->next_rid, origin, n);
    if (!r) {
        zframe_destroy(&frame);
        free(owned);
        return NULL;
    }
    r->frame = frame;
    r->owned = owned;
    r->id = check->id;
    r->batch = check->n_names > 0;
    r->fresh = check->fresh;
    r->raw = check->raw;
    r->conn = conn;
    if (conn)
        gateway_conn_bind(conn, r);
    for (uint32_t i = 0; i < n; i++)
        r->names[i] = av_check_name_at(check, i);
    if (env) {
        r->env.identity = env->identity ? zframe_dup(env->identity) : NULL;
        r->env.delimiter = env->delimiter;
    }
    if (origin == ORIGIN_ROUTER && r->batch) {
        r->encoded = calloc(n, sizeof *r->encoded);
        r->encoded_len = calloc(n, sizeof *r->encoded_len);
    }
    uint32_t deadline_ms = check->deadline_ms ? check->deadline_ms : cfg->intake.deadline_ms;
    if (deadline_ms > DEADLINE_MAX_MS)
        deadline_ms = DEADLINE_MAX_MS;
    r->deadline_us = av_mono_us() + (uint64_t)deadline_ms * 1000;
    r->deadline_at_ms = av_now_ms() + deadline_ms;
    request_register(in, r);
    (*in->requests_in)++;
    *in->names_in += n;

    bool storage_failed = origin == ORIGIN_ROUTER && r->batch && (!r->encoded || !r->encoded_len);
    if (in->names_inflight > cfg->intake.max_inflight || storage_failed || queue_rid(in, &in->to_forward, r->rid) < 0) {
        /* Past the bound: say so now rather than hold the request. */
        answer_rest_unknown(in, r, AV_REASON_OVERLOADED, in->overloaded); /* frees r */
        return NULL;
    }
    if (in->journal && origin != ORIGIN_GATEWAY) {
        r->journaled = true;
        if (journal_request(in, r, true) < 0) {
            r->journaled = false;
            answer_rest_unknown(in, r, AV_REASON_OVERLOADED, in->overloaded); /* frees r */
            return NULL;
        }
    }
    av_daemon_count_work(in->d, 1); /* may begin a recycling stop: the journal keeps the rest */
    return r;
}

/* A journal record back into a request, to be asked again. */
static int
resubmit(void *arg, journal_record_t *rec)
{
    intake_t *in = arg;
    request_t *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    /* The request takes the record's memory. */
    r->names = rec->names;
    r->done = rec->answered;
    r->owned = rec->strings;
    rec->names = NULL;
    rec->answered = NULL;
    rec->strings = NULL;
    r->rid = rec->rid;
    r->origin = rec->origin;
    r->id = rec->id;
    r->n_names = rec->n_names;
    for (uint32_t i = 0; i < r->n_names; i++)
        r->answered += r->done[i];
    r->batch = rec->batch;
    r->fresh = rec->fresh;
    r->raw = rec->raw;
    r->journaled = true;
    r->durable = true;
    /* A routing id that libzmq made up (its first byte is 0) named a
     * connection to our predecessor: the same bytes may name another
     * frontend's connection now (libzmq numbers them from a start that is
     * the same in every process). Its answers go to the cache, and are
     * counted lost; a frontend that wants them sets its own routing id. */
    bool routable = rec->peer.len && rec->peer.ptr[0] != '\0';
    if (routable) {
        r->env.identity = zframe_new(rec->peer.ptr, rec->peer.len);
        r->env.delimiter = rec->delimiter;
    }
    if (r->origin == ORIGIN_ROUTER && r->batch) {
        r->encoded = calloc(r->n_names, sizeof *r->encoded);
        r->encoded_len = calloc(r->n_names, sizeof *r->encoded_len);
    }
    bool storage_failed = r->origin == ORIGIN_ROUTER && r->batch && (!r->encoded || !r->encoded_len);
    if ((routable && !r->env.identity) || storage_failed) {
        request_destroy(r);
        return -1;
    }
    /* The time left, by the wall clock (monotonic time does not outlive a
     * process), and never more than a deadline can be (a clock set back). */
    uint64_t now_ms = av_now_ms();
    uint64_t left_ms = rec->deadline_at_ms > now_ms ? rec->deadline_at_ms - now_ms : 0;
    if (left_ms > DEADLINE_MAX_MS)
        left_ms = DEADLINE_MAX_MS;
    r->deadline_us = av_mono_us() + left_ms * 1000;
    r->deadline_at_ms = rec->deadline_at_ms;
    request_register(in, r);
    (*in->resubmitted)++;
    if (r->rid > in->next_rid)
        in->next_rid = r->rid;
    queue_rid(in, &in->to_forward, r->rid); /* past its deadline, the first scan answers it */
    return 0;
}

int
requests_resubmit_journal(intake_t *in)
{
    return journal_load(in->journal, resubmit, in);
}

/* ---- answers from the dispatcher --------------------------------------- */

static void
take_answer(intake_t *in, const av_answer_t *a)
{
    request_t *r = a->rid ? find(in, a->rid) : NULL;
    if (!r)
        (*in->stale)++; /* answered already, or past its deadline */
    else if (a->idx >= r->n_names || r->done[a->idx])
        (*in->duplicates)++;
    else
        deliver(in, r, a->idx, a);
}

static bool
on_answer(av_daemon_t *d, zsock_t *sock, void *arg)
{
    intake_t *in = arg;
    zframe_t *frame = zframe_recv(sock);
    if (!frame)
        return false;
    int rc = av_msg_decode(&in->msg, zframe_data(frame), zframe_size(frame));
    if (rc != 0 || in->msg.type != AV_MSG_ANSWER || in->msg.u.answer.rid == 0) {
        char why[128];
        (*in->malformed)++;
        av_report(d, AV_LOG_WARNING, NULL, "malformed_message", "dropped a message from the dispatcher: %s",
                  rc ? av_msg_strerror(&in->msg, rc, why, sizeof why) : "not an answer to a request of ours");
        zframe_destroy(&frame);
        return true;
    }
    const av_answer_t *a = &in->msg.u.answer;
    if (a->batches)
        in->dispatcher_batches = true;
    take_answer(in, a);
    for (uint32_t i = 0; i < a->n_more; i++) {
        av_answer_t more;
        av_answer_more_at(a, i, &more);
        take_answer(in, &more);
    }
    zframe_destroy(&frame);
    return true;
}

/* The DEALER's connection events: when the dispatcher comes back (a new
 * process), what the old one held is gone: send it all again now rather
 * than after resend_ms. */
static bool
on_monitor(av_daemon_t *d, zsock_t *sock, void *arg)
{
    (void)d;
    intake_t *in = arg;
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return false;
    zframe_t *head = msg ? zmsg_first(msg) : NULL;
    if (head && zframe_size(head) >= 2) {
        uint16_t event;
        memcpy(&event, zframe_data(head), 2);
        if (event == ZMQ_EVENT_DISCONNECTED) {
            in->dispatcher_was_lost = true;
            in->dispatcher_batches = false; /* the next one may be older: it says so */
            av_log_notice("lost the dispatcher; unanswered checks go again when it is back");
        } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && in->dispatcher_was_lost) {
            in->dispatcher_was_lost = false;
            av_log_notice("the dispatcher is back: sending %zu requests again", zhashx_size(in->requests));
            requests_resend_all(in);
        }
    }
    zmsg_destroy(&msg);
    return true;
}

void
requests_scan(intake_t *in, uint64_t now_us)
{
    request_t *r;
    while ((r = TAILQ_FIRST(&in->by_deadline)) && r->deadline_us <= now_us)
        answer_rest_unknown(in, r, AV_REASON_DEADLINE, in->deadlines);
    if (in->n_held)
        retry_held(in, now_us);
    if (now_us >= in->peers_swept_us + PEERS_SWEEP_US) {
        in->peers_swept_us = now_us;
        sweep_peers(in);
    }
    if (journal_retry_due(in->journal, now_us))
        end_turn_soon(in); /* the commit tries what failed again */
    uint64_t resend_us = (uint64_t)av_daemon_config(in->d)->intake.resend_ms * 1000;
    while ((r = TAILQ_FIRST(&in->by_sent)) && r->last_sent_us + resend_us <= now_us)
        resend(in, r);
}

int
requests_init(intake_t *in)
{
    TAILQ_INIT(&in->by_deadline);
    TAILQ_INIT(&in->by_sent);
    if (!(in->reply_budget = calloc(1, sizeof *in->reply_budget)) || !(in->reply_peers = zhashx_new()))
        return -1;
    in->reply_budget->refs = 1;
    zhashx_set_destructor(in->reply_peers, peer_unref_fn);
    return (in->requests = zhashx_new()) ? 0 : -1;
}

static uint64_t
gauge_waiting(av_daemon_t *d)
{
    return ((intake_t *)av_daemon_state(d))->n_waiting;
}

int
requests_start(intake_t *in)
{
    const av_config_t *cfg = av_daemon_config(in->d);
    in->resent = av_daemon_counter(in->d, "resent");
    in->resubmitted = av_daemon_counter(in->d, "resubmitted");
    in->storage_refused = av_daemon_counter(in->d, "storage_refused");
    av_daemon_gauge(in->d, "answers_waiting_for_journal", gauge_waiting);
    if (requests_init(in) < 0)
        return -1;
    if (sd_event_add_defer(av_daemon_loop(in->d), &in->turn_end, on_turn_end, in) < 0)
        return -1;
    sd_event_source_set_enabled(in->turn_end, SD_EVENT_OFF);
    if (cfg->intake.journal[0] && !(in->journal = journal_open(in->d, &cfg->intake)))
        return -1;
    in->dispatcher = av_daemon_connect(in->d, ZMQ_DEALER, cfg->endpoints.dispatcher);
    if (!in->dispatcher || av_daemon_watch(in->d, in->dispatcher, on_answer, in) < 0)
        return -1;
    if (zmq_socket_monitor(zsock_resolve(in->dispatcher), MONITOR_ENDPOINT,
                           ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED) < 0 ||
        !(in->monitor = zsock_new_pair(">" MONITOR_ENDPOINT)) ||
        av_daemon_watch(in->d, in->monitor, on_monitor, in) < 0)
        return -1;
    if (in->journal)
        requests_resubmit_journal(in);
    return 0;
}

void
requests_flush(intake_t *in)
{
    if (in->turn_end)
        turn_end(in, true);
}

bool
requests_all_durable(const intake_t *in)
{
    return journal_pending(in->journal) == 0 && in->n_waiting == 0;
}

void
requests_close(intake_t *in)
{
    /* What is still in the journal is asked again by the next intake;
     * the turn's answers went out with requests_flush. Answers still
     * waiting for the journal are not sent, and their changes not
     * written now (the sockets may be closed): their requests stay in the
     * journal, for the next intake to answer once. */
    if (in->n_waiting)
        av_log_warning("%u answers not sent: the journal could not be written; their requests stay in it for "
                       "the next intake",
                       in->n_waiting);
    else
        requests_flush(in);
    for (uint32_t i = 0; i < in->n_waiting; i++)
        outgoing_free(&in->waiting[i]);
    free(in->waiting);
    in->waiting = NULL;
    in->n_waiting = 0;
    if (in->requests) {
        request_t *r;
        while ((r = TAILQ_FIRST(&in->by_deadline)))
            request_free(in, r);
    }
    zhashx_destroy(&in->requests);
    if (in->monitor)
        av_daemon_unwatch(in->d, in->monitor);
    if (in->dispatcher) {
        zmq_socket_monitor(zsock_resolve(in->dispatcher), NULL, 0);
        av_daemon_unwatch(in->d, in->dispatcher);
    }
    zsock_destroy(&in->monitor);
    zsock_destroy(&in->dispatcher);
    sd_event_source_disable_unref(in->turn_end);
    in->turn_end = NULL;
    journal_close(&in->journal);
    for (uint32_t i = 0; i < in->n_held; i++)
        outgoing_free(&in->held[i]);
    free(in->held);
    in->n_held = 0;
    zhashx_destroy(&in->reply_peers);
    budget_unref(in->reply_budget); /* ZeroMQ may still hold replies: the last frees it */
    in->reply_budget = NULL;
    free(in->to_forward.rids);
    free(in->to_rejournal.rids);
    free(in->outbox);
}
