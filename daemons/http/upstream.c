/* Intake's request-reply endpoint, as any frontend uses it: a DEALER that
 * sends `check` messages (one name, or a batch) with ids of ours and reads
 * `answer` and `answers` replies, and `ping` for /healthz. The checks out
 * are a table id -> the HTTP request and the positions of its names.
 *
 * The DEALER has a fixed routing id, as proto/README.md asks of a frontend
 * that wants its answers across an intake restart: intake answers what its
 * journal held to the routing id that asked. Check ids then carry this
 * process's start time, so that a restarted availd-http never takes an
 * answer meant for its predecessor as one of its own. */
#include "http.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ID_MAX 32
#define ROUTING_ID_MAX 255

typedef struct {
    api_req_t *r;
    uint32_t n;
    uint32_t idx[];  /* position in r->names of each name sent */
} pending_t;

struct upstream {
    http_t *h;
    zsock_t *dealer;
    zhashx_t *pending;       /* id -> pending_t */
    uint64_t seq;
    uint64_t started_us;     /* in every check id: unique to this process */
    uint64_t last_heard_us;
    av_msg_t msg;
    msgpack_sbuffer sbuf;
};

static void
drop_id(api_req_t *r, const char *id)
{
    for (uint32_t i = 0; i < r->n_pending; i++) {
        if (strcmp(r->pending_ids[i], id) == 0) {
            free(r->pending_ids[i]);
            r->pending_ids[i] = r->pending_ids[--r->n_pending];
            return;
        }
    }
}

/* Takes the pending check of id out of the table (the caller frees it). */
static pending_t *
take(upstream_t *self, const char *id)
{
    pending_t *p = zhashx_lookup(self->pending, id);
    if (!p)
        return NULL;
    zhashx_delete(self->pending, id);
    drop_id(p->r, id);
    self->h->names_pending -= p->n;
    return p;
}

static bool
on_reply(av_daemon_t *d, zsock_t *sock, void *arg)
{
    (void)d;
    upstream_t *self = arg;
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return false;
    zframe_t *body = zmsg_first(msg);
    self->last_heard_us = av_mono_us();
    int rc = body ? av_msg_decode(&self->msg, zframe_data(body), zframe_size(body)) : AV_PROTO_E_NOT_MSGPACK;
    av_str_t id_view = { "", 0 }, type;
    av_obj_get_str(&self->msg.root, "id", &id_view);
    char id[ID_MAX];
    av_str_copy(id, sizeof id, id_view);
    pending_t *p = id_view.len < ID_MAX ? take(self, id) : NULL;
    if (!p) {
        /* A late answer of a request that is gone, or not ours. */
        zmsg_destroy(&msg);
        return true;
    }
    if (rc == AV_PROTO_E_UNKNOWN_TYPE && av_obj_get_str(&self->msg.root, "t", &type) && av_str_eq(type, "pong")) {
        api_req_t *r = p->r;
        r->healthz = false;
        if (r->waiting) {
            TAILQ_REMOVE(&self->h->waiting, r, waiting_entry);
            r->waiting = false;
        }
        http_wake(r);
    } else if (rc == 0 && self->msg.type == AV_MSG_ANSWER && p->n >= 1) {
        api_answer(p->r, p->idx[0], &self->msg.u.answer);
    } else if (rc == 0 && self->msg.type == AV_MSG_ANSWERS) {
        for (uint32_t i = 0; i < self->msg.u.answers.count; i++) {
            av_answer_t a;
            if (av_answers_at(&self->msg.u.answers, i, &a) == 0 && a.idx < p->n)
                api_answer(p->r, p->idx[a.idx], &a);
        }
    } else {
        av_report(self->h->d, AV_LOG_WARNING, NULL, "malformed_message", "intake's reply to %s unreadable: %s",
                  id, rc ? av_proto_strerror(rc) : av_msg_type_name(self->msg.type));
    }
    free(p);
    zmsg_destroy(&msg);
    return true;
}

upstream_t *
upstream_open(http_t *h)
{
    const av_config_t *cfg = av_daemon_config(h->d);
    upstream_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->h = h;
    av_msg_init(&self->msg);
    msgpack_sbuffer_init(&self->sbuf);
    self->pending = zhashx_new();
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    self->started_us = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
    /* One per host and listening address: two availd-http of one intake
     * must not share it (intake hands a routing id to its newest
     * connection). */
    char host[64] = "", routing_id[ROUTING_ID_MAX + 1];
    if (gethostname(host, sizeof host - 1) < 0)
        host[0] = '\0';
    snprintf(routing_id, sizeof routing_id, "availd-http %s %s", host, cfg->http.listen);
    self->dealer = av_daemon_connect_as(h->d, ZMQ_DEALER, cfg->endpoints.intake_router, routing_id);
    if (!self->pending || !self->dealer || av_daemon_watch(h->d, self->dealer, on_reply, self) < 0) {
        upstream_close(&self);
        return NULL;
    }
    /* Checks out are answered by our deadline anyway: nothing to flush. */
    zsock_set_linger(self->dealer, 0);
    return self;
}

void
upstream_close(upstream_t **self_p)
{
    upstream_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    if (self->dealer) {
        av_daemon_unwatch(self->h->d, self->dealer);
        zsock_destroy(&self->dealer);
    }
    if (self->pending) {
        for (pending_t *p = zhashx_first(self->pending); p; p = zhashx_next(self->pending))
            free(p);
        zhashx_destroy(&self->pending);
    }
    av_msg_release(&self->msg);
    msgpack_sbuffer_destroy(&self->sbuf);
    free(self);
    *self_p = NULL;
}

/* Remembers a check of n names of r under a new id; NULL when out of memory. */
static pending_t *
remember(upstream_t *self, api_req_t *r, const uint32_t *idx, uint32_t n, char id[ID_MAX])
{
    snprintf(id, ID_MAX, "h%llx-%llx", (unsigned long long)self->started_us, (unsigned long long)++self->seq);
    pending_t *p = malloc(sizeof *p + n * sizeof p->idx[0]);
    char **ids = realloc(r->pending_ids, (r->n_pending + 1) * sizeof *ids);
    if (!p || !ids) {
        free(p);
        if (ids)
            r->pending_ids = ids;
        return NULL;
    }
    r->pending_ids = ids;
    if (!(ids[r->n_pending] = strdup(id))) {
        free(p);
        return NULL;
    }
    p->r = r;
    p->n = n;
    if (n)
        memcpy(p->idx, idx, n * sizeof *idx);
    zhashx_insert(self->pending, id, p);
    r->n_pending++;
    self->h->names_pending += n;
    return p;
}

static int
send_or_forget(upstream_t *self, api_req_t *r, const char *id)
{
    (void)r;
    if (av_zsock_send_nowait(self->dealer, self->sbuf.data, self->sbuf.size) == 0)
        return 0;
    free(take(self, id)); /* intake's queue is full, or it was never there */
    return -1;
}

int
upstream_check(upstream_t *self, api_req_t *r, const uint32_t *idx, uint32_t n)
{
    char id[ID_MAX];
    av_str_t views[AV_BATCH_MAX];
    if (n == 0 || n > AV_BATCH_MAX || !remember(self, r, idx, n, id))
        return -1;
    av_check_t check = { .id = av_str(id), .fresh = r->fresh, .deadline_ms = r->deadline_ms };
    if (n == 1) {
        check.name = av_str(r->names[idx[0]]);
    } else {
        for (uint32_t i = 0; i < n; i++)
            views[i] = av_str(r->names[idx[i]]);
        check.name_views = views;
        check.n_names = n;
    }
    msgpack_sbuffer_clear(&self->sbuf);
    if (av_encode_check(&self->sbuf, &check) != 0 || send_or_forget(self, r, id) < 0)
        return -1;
    (*self->h->intake_names) += n;
    return 0;
}

int
upstream_ping(upstream_t *self, api_req_t *r)
{
    char id[ID_MAX];
    if (!remember(self, r, NULL, 0, id))
        return -1;
    msgpack_sbuffer_clear(&self->sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    av_pack_kv_str(&pk, "t", "ping");
    av_pack_kv_uint(&pk, "v", AV_PROTO_VERSION);
    av_pack_kv_str(&pk, "id", id);
    return send_or_forget(self, r, id);
}

void
upstream_forget(upstream_t *self, api_req_t *r)
{
    while (r->n_pending) {
        char *id = r->pending_ids[r->n_pending - 1];
        pending_t *p = zhashx_lookup(self->pending, id);
        if (p) {
            self->h->names_pending -= p->n;
            zhashx_delete(self->pending, id);
            free(p);
        }
        free(id);
        r->n_pending--;
    }
}

uint64_t
upstream_last_heard_us(const upstream_t *self)
{
    return self->last_heard_us;
}
