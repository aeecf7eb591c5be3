/* Requests from acceptance to their final answers: forwarded to the
 * dispatcher under an intake request number (rid), each name's answer
 * taken once (a second is a duplicate and dropped), delivered the way the
 * request came, and `unknown` (deadline) for whatever is not answered by
 * the request's deadline. */
#include "intake.h"

#include <stdlib.h>
#include <string.h>

#define DEADLINE_MAX_MS (10 * 60 * 1000)

static void
list_insert_by_deadline(request_list_t *l, request_t *r)
{
    /* Nearly every request has the default deadline, so the right place is
     * almost always the tail. */
    request_t *after = l->tail;
    while (after && after->deadline_us > r->deadline_us)
        after = after->prev;
    r->prev = after;
    r->next = after ? after->next : l->head;
    if (r->next)
        r->next->prev = r;
    else
        l->tail = r;
    if (after)
        after->next = r;
    else
        l->head = r;
    l->count++;
}

static void
list_remove(request_list_t *l, request_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->count--;
}

static void
rid_key(uint64_t rid, char *key)
{
    snprintf(key, 24, "%llu", (unsigned long long)rid);
}

static void
request_free(intake_t *in, request_t *r)
{
    char key[24];
    rid_key(r->rid, key);
    zhashx_delete(in->requests, key);
    list_remove(&in->by_deadline, r);
    in->names_inflight -= r->n_names;
    if (r->encoded) {
        for (uint32_t i = 0; i < r->n_names; i++)
            free(r->encoded[i]);
        free(r->encoded);
        free(r->encoded_len);
    }
    if (r->conn)
        request_forget_conn(r);
    free(r->names);
    free(r->done);
    free(r->owned);
    zframe_destroy(&r->frame);
    av_envelope_clear(&r->env);
    free(r);
}

/* ---- delivering ------------------------------------------------------- */

static void
reply_router(intake_t *in, const av_envelope_t *env, const void *data, size_t size)
{
    if (av_router_send(in->router, env, data, size) == 0)
        (*in->answers_out)++;
    else
        (*in->answers_lost)++; /* the frontend left; nothing to wait for */
}

static void
publish(intake_t *in, av_str_t topic, const void *data, size_t size)
{
    void *s = zsock_resolve(in->results);
    /* A PUB drops for a slow or absent subscriber: by nature best effort
     * (a frontend subscribes before it pushes, and can ask again). */
    if (zmq_send(s, topic.ptr, topic.len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        zmq_send(s, data, size, ZMQ_DONTWAIT) >= 0)
        (*in->answers_out)++;
    else
        (*in->answers_lost)++;
}

static void
send_batch_reply(intake_t *in, request_t *r)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(&in->sbuf);
    msgpack_packer_init(&pk, &in->sbuf, msgpack_sbuffer_write);
    av_pack_answers_begin(&pk, r->id, r->n_names);
    for (uint32_t i = 0; i < r->n_names; i++)
        msgpack_sbuffer_write(&in->sbuf, r->encoded[i], r->encoded_len[i]);
    reply_router(in, &r->env, in->sbuf.data, in->sbuf.size);
}

static void
deliver(intake_t *in, request_t *r, uint32_t idx, const av_answer_t *from)
{
    av_answer_t a = *from;
    a.id = r->id;
    a.rid = 0;
    a.idx = idx;
    a.has_idx = r->batch;
    a.query = r->names[idx];
    if (!r->raw)
        a.raw = (av_str_t){ "", 0 };
    r->done[idx] = 1;
    r->answered++;
    switch (r->origin) {
    case ORIGIN_PULL:
        msgpack_sbuffer_clear(&in->sbuf);
        if (av_encode_answer(&in->sbuf, &a) == 0)
            publish(in, r->id, in->sbuf.data, in->sbuf.size);
        break;
    case ORIGIN_ROUTER:
        if (!r->batch) {
            msgpack_sbuffer_clear(&in->sbuf);
            if (av_encode_answer(&in->sbuf, &a) == 0)
                reply_router(in, &r->env, in->sbuf.data, in->sbuf.size);
            break;
        }
        {
            msgpack_packer pk;
            msgpack_sbuffer_clear(&in->sbuf);
            msgpack_packer_init(&pk, &in->sbuf, msgpack_sbuffer_write);
            av_pack_answer_map(&pk, &a);
            r->encoded[idx] = malloc(in->sbuf.size);
            if (r->encoded[idx]) {
                memcpy(r->encoded[idx], in->sbuf.data, in->sbuf.size);
                r->encoded_len[idx] = (uint32_t)in->sbuf.size;
            }
            if (r->answered == r->n_names)
                send_batch_reply(in, r);
        }
        break;
    case ORIGIN_GATEWAY:
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
    if (r->answered == r->n_names)
        request_free(in, r);
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

/* ---- accepting --------------------------------------------------------- */

void
request_reject(intake_t *in, origin_t origin, av_str_t id, const av_envelope_t *env, const char *why)
{
    av_answer_t a = {
        .id = id,
        .name = AV_STR(""),
        .status = AV_STATUS_INVALID,
        .reason = av_str(why),
        .source = AV_SOURCE_NONE,
        .at_ms = av_now_ms(),
    };
    (*in->invalid_requests)++;
    msgpack_sbuffer_clear(&in->sbuf);
    if (av_encode_answer(&in->sbuf, &a) != 0)
        return;
    if (origin == ORIGIN_ROUTER)
        reply_router(in, env, in->sbuf.data, in->sbuf.size);
    else
        publish(in, id, in->sbuf.data, in->sbuf.size);
}

static int
forward(intake_t *in, request_t *r)
{
    uint64_t now = av_mono_us();
    av_check_t c = {
        .id = r->id,
        .fresh = r->fresh,
        .raw = r->raw,
        .rid = r->rid,
        .deadline_ms = r->deadline_us > now ? (uint32_t)((r->deadline_us - now) / 1000) : 1,
    };
    msgpack_sbuffer_clear(&in->sbuf);
    if (r->n_names == 1) {
        c.name = r->names[0];
    } else {
        /* Names re-packed from their views: the request's own bytes may be
         * a gateway line or a check with keys the dispatcher need not see. */
        msgpack_packer pk;
        msgpack_packer_init(&pk, &in->sbuf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 8);
        av_pack_kv_str(&pk, "t", "check");
        av_pack_kv_uint(&pk, "v", AV_PROTO_VERSION);
        av_pack_kv_strn(&pk, "id", c.id);
        av_pack_str(&pk, "names");
        msgpack_pack_array(&pk, r->n_names);
        for (uint32_t i = 0; i < r->n_names; i++)
            av_pack_strn(&pk, r->names[i]);
        av_pack_kv_bool(&pk, "fresh", c.fresh);
        av_pack_kv_bool(&pk, "raw", c.raw);
        av_pack_kv_uint(&pk, "rid", c.rid);
        av_pack_kv_uint(&pk, "deadline_ms", c.deadline_ms);
        return av_zsock_send_nowait(in->dispatcher, in->sbuf.data, in->sbuf.size);
    }
    if (av_encode_check(&in->sbuf, &c) != 0)
        return -1;
    return av_zsock_send_nowait(in->dispatcher, in->sbuf.data, in->sbuf.size);
}

request_t *
request_accept(intake_t *in, origin_t origin, zframe_t *frame, char *owned, const av_check_t *check,
               const av_envelope_t *env, gateway_conn_t *conn)
{
    const av_config_t *cfg = av_daemon_config(in->d);
    uint32_t n = av_check_count(check);
    request_t *r = calloc(1, sizeof *r);
    if (!r || !(r->names = calloc(n, sizeof *r->names)) || !(r->done = calloc(n, 1))) {
        if (r)
            free(r->names);
        free(r);
        zframe_destroy(&frame);
        free(owned);
        return NULL;
    }
    r->rid = ++in->next_rid;
    r->origin = origin;
    r->frame = frame;
    r->owned = owned;
    r->id = check->id;
    r->n_names = n;
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
    char key[24];
    rid_key(r->rid, key);
    zhashx_insert(in->requests, key, r);
    list_insert_by_deadline(&in->by_deadline, r);
    in->names_inflight += n;
    (*in->requests_in)++;
    *in->names_in += n;

    bool batch_storage_failed = origin == ORIGIN_ROUTER && r->batch && (!r->encoded || !r->encoded_len);
    if (in->names_inflight > cfg->intake.max_inflight || batch_storage_failed || forward(in, r) < 0) {
        /* Past the bound, or the dispatcher's queue is full: say so now
         * rather than hold the request. */
        *in->overloaded += n;
        for (uint32_t i = 0; i < n; i++)
            deliver_unknown(in, r, i, AV_REASON_OVERLOADED); /* frees r with the last */
        return NULL;
    }
    return r;
}

/* ---- answers from the dispatcher -------------------------------------- */

static void
on_answer(av_daemon_t *d, zsock_t *sock, void *arg)
{
    intake_t *in = arg;
    zframe_t *frame = zframe_recv(sock);
    if (!frame)
        return;
    int rc = av_msg_decode(&in->msg, zframe_data(frame), zframe_size(frame));
    if (rc != 0 || in->msg.type != AV_MSG_ANSWER || in->msg.u.answer.rid == 0) {
        char why[128];
        (*in->malformed)++;
        av_report(d, AV_LOG_WARNING, NULL, "malformed_message", "dropped a message from the dispatcher: %s",
                  rc ? av_msg_strerror(&in->msg, rc, why, sizeof why) : "not an answer to a request of ours");
        zframe_destroy(&frame);
        return;
    }
    const av_answer_t *a = &in->msg.u.answer;
    char key[24];
    rid_key(a->rid, key);
    request_t *r = zhashx_lookup(in->requests, key);
    if (!r)
        (*in->stale)++; /* answered already, or past its deadline */
    else if (a->idx >= r->n_names || r->done[a->idx])
        (*in->duplicates)++;
    else
        deliver(in, r, a->idx, a);
    zframe_destroy(&frame);
}

void
requests_scan(intake_t *in, uint64_t now_us)
{
    while (in->by_deadline.head && in->by_deadline.head->deadline_us <= now_us) {
        request_t *r = in->by_deadline.head;
        uint32_t left = r->n_names - r->answered;
        *in->deadlines += left;
        for (uint32_t i = 0; left && i < r->n_names; i++) { /* left first: the last answer frees r */
            if (r->done[i])
                continue;
            left--;
            deliver_unknown(in, r, i, AV_REASON_DEADLINE); /* frees r with the last */
        }
    }
}

int
requests_start(intake_t *in)
{
    const av_config_t *cfg = av_daemon_config(in->d);
    if (!(in->requests = zhashx_new()))
        return -1;
    in->dispatcher = av_daemon_connect(in->d, ZMQ_DEALER, cfg->endpoints.dispatcher);
    if (!in->dispatcher || av_daemon_watch(in->d, in->dispatcher, on_answer, in) < 0)
        return -1;
    return 0;
}

void
requests_close(intake_t *in)
{
    if (in->requests) {
        request_t *r;
        while ((r = in->by_deadline.head))
            request_free(in, r);
    }
    zhashx_destroy(&in->requests);
    if (in->dispatcher)
        av_daemon_unwatch(in->d, in->dispatcher);
    zsock_destroy(&in->dispatcher);
}
