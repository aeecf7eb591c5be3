/* The two ZeroMQ ways into intake: push (PUSH checks to intake_pull, answers
 * from intake_results on a SUB subscribed to this run's id prefix) and
 * dealer (request-reply on one or a few DEALERs to intake_router, many
 * requests outstanding on each, told apart by id). Plain libzmq rather
 * than CZMQ: CZMQ would take over SIGINT, which stops our run instead. */
#include "load.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define DEALERS_MAX      64
/* Messages read from one socket per turn, so sends and timeouts keep up. */
#define RECV_BURST_MAX   4096
/* Queues on our side of each socket: deep enough that we, not ZeroMQ, are
 * what bounds the requests in flight, and that intake's PUB or ROUTER does
 * not drop an answer because our pipe was full. */
#define QUEUE_MAX_MSGS   1000000
#define TOPIC_MAX_BYTES  (AV_ID_MAX + 1)

typedef struct {
    const load_mode_ops_t *ops;
    void *ctx;
    void *push;                  /* push: checks go here ... */
    void *sub;                   /* ... and answers come back here */
    void *dealers[DEALERS_MAX];  /* dealer */
    uint32_t n_dealers;
    uint32_t next_dealer;
    uint32_t deadline_ms;
    msgpack_sbuffer sbuf;        /* reused for every request */
    char *rbuf;                  /* AV_MSG_MAX_BYTES, reused for every reply */
    av_msg_t msg;                /* reused: no allocation per answer */
} mode_zmq_t;

static void *
zmq_socket_to(mode_zmq_t *m, int type, const char *endpoint)
{
    void *s = zmq_socket(m->ctx, type);
    int zero = 0, depth = QUEUE_MAX_MSGS;
    if (!s)
        return NULL;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &depth, sizeof depth);
    zmq_setsockopt(s, ZMQ_RCVHWM, &depth, sizeof depth);
    if (zmq_connect(s, endpoint) < 0) {
        fprintf(stderr, "availd-load: cannot connect to %s: %s\n", endpoint, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

void *
mode_zmq_open(const load_mode_ops_t *ops, const load_mode_cfg_t *cfg, load_engine_t *e)
{
    mode_zmq_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->ops = ops;
    m->deadline_ms = cfg->deadline_ms;
    msgpack_sbuffer_init(&m->sbuf);
    av_msg_init(&m->msg);
    m->rbuf = malloc(AV_MSG_MAX_BYTES);
    m->ctx = zmq_ctx_new();
    if (!m->rbuf || !m->ctx)
        goto fail;
    if (ops == &load_mode_push) {
        const char *prefix = load_engine_id_prefix(e);
        /* Subscribe before the first push: the PUB drops what a subscriber
         * has not yet joined for. The probes (main.c) wait for the join. */
        if (!(m->sub = zmq_socket_to(m, ZMQ_SUB, cfg->results)) ||
            zmq_setsockopt(m->sub, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) < 0 ||
            !(m->push = zmq_socket_to(m, ZMQ_PUSH, cfg->endpoint)))
            goto fail;
    } else {
        uint32_t n = cfg->sockets ? cfg->sockets : 1;
        for (m->n_dealers = 0; m->n_dealers < n && m->n_dealers < DEALERS_MAX; m->n_dealers++)
            if (!(m->dealers[m->n_dealers] = zmq_socket_to(m, ZMQ_DEALER, cfg->endpoint)))
                goto fail;
    }
    return m;
fail:
    {
        void *self = m;
        mode_zmq_close(&self);
    }
    return NULL;
}

void
mode_zmq_close(void **self_p)
{
    mode_zmq_t *m = self_p ? *self_p : NULL;
    if (!m)
        return;
    if (m->push)
        zmq_close(m->push);
    if (m->sub)
        zmq_close(m->sub);
    for (uint32_t i = 0; i < m->n_dealers; i++)
        if (m->dealers[i])
            zmq_close(m->dealers[i]);
    if (m->ctx)
        zmq_ctx_term(m->ctx);
    av_msg_release(&m->msg);
    msgpack_sbuffer_destroy(&m->sbuf);
    free(m->rbuf);
    free(m);
    *self_p = NULL;
}

/* ---- sending -------------------------------------------------------------- */

static void
pack_request(mode_zmq_t *m, load_engine_t *e, uint32_t slot)
{
    char id[LOAD_ID_BYTES], name[LOAD_NAME_BYTES];
    uint32_t n = load_engine_names(e, slot);
    msgpack_packer pk;
    msgpack_sbuffer_clear(&m->sbuf);
    msgpack_packer_init(&pk, &m->sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4 + (m->deadline_ms ? 1 : 0));
    av_pack_kv_str(&pk, "t", "check");
    av_pack_kv_uint(&pk, "v", AV_PROTO_VERSION);
    size_t id_len = load_engine_id(e, slot, id, sizeof id);
    av_pack_kv_strn(&pk, "id", (av_str_t){ id, (uint32_t)id_len });
    /* One name goes as `name`, more as a `names` batch; a batch of one
     * would change what intake answers (an `answers` message). */
    if (n == 1) {
        size_t len = load_engine_name(e, slot, 0, name, sizeof name);
        av_pack_kv_strn(&pk, "name", (av_str_t){ name, (uint32_t)len });
    } else {
        av_pack_str(&pk, "names");
        msgpack_pack_array(&pk, n);
        for (uint32_t i = 0; i < n; i++) {
            size_t len = load_engine_name(e, slot, i, name, sizeof name);
            av_pack_strn(&pk, (av_str_t){ name, (uint32_t)len });
        }
    }
    if (m->deadline_ms)
        av_pack_kv_uint(&pk, "deadline_ms", m->deadline_ms);
}

static int
zmq_issue(void *mode, load_engine_t *e, uint32_t slot)
{
    mode_zmq_t *m = mode;
    pack_request(m, e, slot);
    void *s = m->push ? m->push : m->dealers[m->next_dealer];
    if (zmq_send(s, m->sbuf.data, m->sbuf.size, ZMQ_DONTWAIT) < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 1;
        load_engine_stats(e)->errors++;
        return -1;
    }
    if (!m->push)
        m->next_dealer = (m->next_dealer + 1) % m->n_dealers;
    return 0;
}

/* ---- receiving ------------------------------------------------------------ */

static void
take_answer(load_engine_t *e, av_str_t id, const av_answer_t *a, uint32_t idx)
{
    load_answer_t la = {
        .status = a->status,
        .source = (int)a->source,
        .reason = a->reason,
        .query = a->query,
        .name = a->name,
    };
    load_engine_answer_id(e, id, idx, &la);
}

static void
take_reply(mode_zmq_t *m, load_engine_t *e, size_t len)
{
    load_stats_t *st = load_engine_stats(e);
    if (len > AV_MSG_MAX_BYTES || av_msg_decode(&m->msg, m->rbuf, len) != 0) {
        st->undecodable++;
        return;
    }
    if (m->msg.type == AV_MSG_ANSWER) {
        const av_answer_t *a = &m->msg.u.answer;
        take_answer(e, a->id, a, a->has_idx ? a->idx : 0);
    } else if (m->msg.type == AV_MSG_ANSWERS) {
        const av_answers_t *list = &m->msg.u.answers;
        for (uint32_t i = 0; i < list->count; i++) {
            av_answer_t a;
            if (av_answers_at(list, i, &a) != 0) {
                st->undecodable++;
                continue;
            }
            take_answer(e, list->id, &a, a.has_idx ? a.idx : i);
        }
    } else {
        st->undecodable++;
    }
}

static bool
more_frames(void *s)
{
    int more = 0;
    size_t size = sizeof more;
    return zmq_getsockopt(s, ZMQ_RCVMORE, &more, &size) == 0 && more;
}

/* Drops the rest of a message that had more frames than we expect. */
static void
skip_frames(void *s)
{
    char scratch[64];
    while (more_frames(s) && zmq_recv(s, scratch, sizeof scratch, ZMQ_DONTWAIT) >= 0)
        ;
}

static void
read_sub(mode_zmq_t *m, load_engine_t *e)
{
    char topic[TOPIC_MAX_BYTES];
    for (int i = 0; i < RECV_BURST_MAX; i++) {
        if (zmq_recv(m->sub, topic, sizeof topic, ZMQ_DONTWAIT) < 0)
            return;
        if (!more_frames(m->sub)) {
            load_engine_stats(e)->undecodable++;
            continue;
        }
        /* The body follows its topic at once: ZeroMQ delivers whole messages. */
        int n = zmq_recv(m->sub, m->rbuf, AV_MSG_MAX_BYTES, ZMQ_DONTWAIT);
        if (n < 0)
            return;
        if (more_frames(m->sub)) {
            skip_frames(m->sub);
            load_engine_stats(e)->undecodable++;
            continue;
        }
        take_reply(m, e, (size_t)n);
    }
}

static void
read_dealer(mode_zmq_t *m, load_engine_t *e, void *s)
{
    for (int i = 0; i < RECV_BURST_MAX; i++) {
        int n = zmq_recv(s, m->rbuf, AV_MSG_MAX_BYTES, ZMQ_DONTWAIT);
        if (n < 0)
            return;
        if (more_frames(s)) {
            skip_frames(s);
            load_engine_stats(e)->undecodable++;
            continue;
        }
        take_reply(m, e, (size_t)n);
    }
}

static short
socket_events(void *s)
{
    int events = 0;
    size_t size = sizeof events;
    return zmq_getsockopt(s, ZMQ_EVENTS, &events, &size) == 0 ? (short)events : 0;
}

/* zmq_poll only takes milliseconds, so we poll ZeroMQ's own descriptors
 * with ppoll's nanoseconds. Those descriptors only say "look again": the
 * truth is ZMQ_EVENTS, checked before sleeping and after waking. */
static int
zmq_wait(void *mode, load_engine_t *e, uint64_t timeout_us, bool want_write)
{
    mode_zmq_t *m = mode;
    void *socks[DEALERS_MAX + 1];
    short want[DEALERS_MAX + 1];
    struct pollfd fds[DEALERS_MAX + 1];
    int n = 0;
    short out = want_write ? ZMQ_POLLOUT : 0;
    if (m->push) {
        socks[n] = m->sub, want[n++] = ZMQ_POLLIN;
        if (out)
            socks[n] = m->push, want[n++] = ZMQ_POLLOUT;
    } else {
        for (uint32_t i = 0; i < m->n_dealers; i++)
            socks[n] = m->dealers[i], want[n++] = (short)(ZMQ_POLLIN | out);
    }
    bool ready = false;
    for (int i = 0; i < n && !ready; i++)
        ready = (socket_events(socks[i]) & want[i]) != 0;
    if (!ready) {
        for (int i = 0; i < n; i++) {
            int fd = -1;
            size_t size = sizeof fd;
            zmq_getsockopt(socks[i], ZMQ_FD, &fd, &size);
            fds[i] = (struct pollfd){ .fd = fd, .events = POLLIN };
        }
        struct timespec ts = { .tv_sec = (time_t)(timeout_us / 1000000u),
                               .tv_nsec = (long)(timeout_us % 1000000u) * 1000 };
        if (ppoll(fds, (nfds_t)n, &ts, NULL) < 0 && errno != EINTR)
            return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!(want[i] & ZMQ_POLLIN) || !(socket_events(socks[i]) & ZMQ_POLLIN))
            continue;
        if (m->push)
            read_sub(m, e);
        else
            read_dealer(m, e, socks[i]);
    }
    return 0;
}

const load_mode_ops_t load_mode_push = {
    .name = "push",
    .issue = zmq_issue,
    .wait = zmq_wait,
};

const load_mode_ops_t load_mode_dealer = {
    .name = "dealer",
    .issue = zmq_issue,
    .wait = zmq_wait,
};
