/*
 * NAME
 *   availd-errors - the global error recorder of availd
 *
 * SUMMARY
 *   availd-errors [-c FILE] [-n] [-f]
 *
 * DESCRIPTION
 *   Every availd daemon pushes `error` events (daemon, registry, level,
 *   code, text) to this daemon's PULL endpoint. availd-errors stores each
 *   in the global error database (LMDB) and then republishes it on its PUB
 *   endpoint with the topic LEVEL.DAEMON.REGISTRY (for example
 *   "warning.querier-verisign.verisign"), so monitoring can subscribe to a
 *   prefix such as "err." or "warning.querier-denic.". An event is
 *   published only once it is stored.
 *
 *   Writes are grouped: the events read in one loop turn are committed in
 *   one transaction (at most errors.batch_max). Commits do not fsync; the
 *   database is synced every second, so a crash of the process loses
 *   nothing committed and a power loss at most the last second.
 *
 *   Retention is bounded by count (errors.retention_count) and by age
 *   (errors.retention_s); the oldest events go first. Malformed events are
 *   counted (counter `malformed`) and dropped.
 *
 *   Its control endpoint answers `status`, `reload`, `recent` (the newest
 *   events, filtered by daemon, registry, level, newer than a sequence
 *   number) and `counts` (events held per registry and code); `availctl
 *   errors` uses them.
 *
 * CONFIGURATION PARAMETERS
 *   endpoints.errors_events, endpoints.errors_publish, errors.path,
 *   errors.map_size_mb, errors.retention_count, errors.retention_s,
 *   errors.batch_max, and the process settings.
 */
#include "av_daemon.h"
#include "errors_db.h"

#include <stdlib.h>
#include <string.h>

#define RECENT_DEFAULT 50
#define RECENT_MAX 10000
#define EXPIRE_INTERVAL_MAX_MS 10000
#define SYNC_INTERVAL_MS 1000

typedef struct {
    zframe_t *frame;  /* the event's strings point into it */
    av_msg_t msg;
} pending_t;

typedef struct {
    errors_db_t *db;
    zsock_t *events;
    zsock_t *publish;
    pending_t *pending;
    av_error_t **batch;  /* the pending events, as errors_db_append takes them */
    uint32_t n_pending;
    uint32_t batch_max;
    sd_event_source *flush;
    sd_event_source *expire_timer;
    sd_event_source *sync_timer;
    uint64_t *received;
    uint64_t *stored;
    uint64_t *published;
    uint64_t *malformed;
    uint64_t *store_failed;
    uint64_t *expired;
} errors_t;

static void
publish(errors_t *e, uint64_t seq, uint64_t received_ms, const av_error_t *ev)
{
    char topic[AV_DAEMON_MAX + AV_REGISTRY_MAX + 32];
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    snprintf(topic, sizeof topic, "%s.%.*s.%.*s", av_level_name(ev->level), (int)ev->daemon.len, ev->daemon.ptr,
             (int)ev->registry.len, ev->registry.ptr);
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    /* The published body is the event plus where it is stored. */
    msgpack_pack_map(&pk, 11);
    av_pack_kv_str(&pk, "t", "error");
    av_pack_kv_uint(&pk, "v", AV_PROTO_VERSION);
    av_pack_kv_strn(&pk, "daemon", ev->daemon);
    av_pack_kv_strn(&pk, "registry", ev->registry);
    av_pack_kv_str(&pk, "level", av_level_name(ev->level));
    av_pack_kv_strn(&pk, "code", ev->code);
    av_pack_kv_strn(&pk, "text", ev->text);
    av_pack_kv_uint(&pk, "at", ev->at_ms);
    av_pack_kv_uint(&pk, "pid", ev->pid);
    av_pack_kv_uint(&pk, "seq", seq);
    av_pack_kv_uint(&pk, "received", received_ms);
    void *s = zsock_resolve(e->publish);
    /* A PUB never blocks: a slow subscriber loses messages, by design. */
    if (zmq_send(s, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        zmq_send(s, sbuf.data, sbuf.size, ZMQ_DONTWAIT) >= 0)
        (*e->published)++;
    msgpack_sbuffer_destroy(&sbuf);
}

static void
flush_pending(errors_t *e)
{
    av_error_t **events = e->batch;
    uint64_t now = av_now_ms(), first_seq = 0;
    if (e->n_pending == 0)
        return;
    for (uint32_t i = 0; i < e->n_pending; i++) {
        events[i] = &e->pending[i].msg.u.error;
        if (events[i]->at_ms == 0)
            events[i]->at_ms = now;
    }
    if (errors_db_append(e->db, events, e->n_pending, now, &first_seq) == 0) {
        *e->stored += e->n_pending;
        for (uint32_t i = 0; i < e->n_pending; i++)
            publish(e, first_seq + i, now, events[i]);
    } else {
        *e->store_failed += e->n_pending;
    }
    for (uint32_t i = 0; i < e->n_pending; i++) {
        av_msg_release(&e->pending[i].msg);
        zframe_destroy(&e->pending[i].frame);
    }
    e->n_pending = 0;
}

static int
on_flush(sd_event_source *s, void *userdata)
{
    (void)s;
    flush_pending(userdata);
    return 0;
}

static void
on_event(av_daemon_t *d, zsock_t *sock)
{
    errors_t *e = av_daemon_state(d);
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return;
    (*e->received)++;
    /* One frame: the event. Anything else is not ours. */
    zframe_t *frame = zmsg_size(msg) == 1 ? zmsg_pop(msg) : NULL;
    zmsg_destroy(&msg);
    pending_t *p = &e->pending[e->n_pending];
    av_msg_init(&p->msg);
    int rc = frame ? av_msg_decode(&p->msg, zframe_data(frame), zframe_size(frame)) : AV_PROTO_E_NOT_MSGPACK;
    if (rc != 0 || p->msg.type != AV_MSG_ERROR) {
        char why[128];
        (*e->malformed)++;
        av_log_debug("malformed event dropped: %s",
                     rc ? av_msg_strerror(&p->msg, rc, why, sizeof why) : "not an error event");
        av_msg_release(&p->msg);
        zframe_destroy(&frame);
        return;
    }
    p->frame = frame;
    if (++e->n_pending == e->batch_max)
        flush_pending(e);
    else
        sd_event_source_set_enabled(e->flush, SD_EVENT_ONESHOT);
}

static void
on_expire(av_daemon_t *d, void *arg)
{
    (void)arg;
    errors_t *e = av_daemon_state(d);
    *e->expired += errors_db_expire(e->db, av_now_ms());
}

static void
on_sync(av_daemon_t *d, void *arg)
{
    (void)arg;
    errors_db_sync(((errors_t *)av_daemon_state(d))->db);
}

/* ---- queries ------------------------------------------------------------ */

typedef struct {
    msgpack_sbuffer *items;
    uint32_t count;
    uint32_t cap;
} collected_t;

static void
pack_event(msgpack_packer *pk, uint64_t seq, uint64_t received_ms, const av_error_t *ev)
{
    msgpack_pack_map(pk, 9);
    av_pack_kv_uint(pk, "seq", seq);
    av_pack_kv_uint(pk, "received", received_ms);
    av_pack_kv_strn(pk, "daemon", ev->daemon);
    av_pack_kv_strn(pk, "registry", ev->registry);
    av_pack_kv_str(pk, "level", av_level_name(ev->level));
    av_pack_kv_strn(pk, "code", ev->code);
    av_pack_kv_strn(pk, "text", ev->text);
    av_pack_kv_uint(pk, "at", ev->at_ms);
    av_pack_kv_uint(pk, "pid", ev->pid);
}

static bool
collect_event(void *arg, uint64_t seq, uint64_t received_ms, const av_error_t *ev)
{
    collected_t *c = arg;
    if (c->count == c->cap)
        return false;
    msgpack_sbuffer *sb = &c->items[c->count++];
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_event(&pk, seq, received_ms, ev);
    return true;
}

static int
read_filter(const msgpack_object *req, errors_filter_t *f, uint32_t *limit, char *err, size_t errlen)
{
    uint64_t n;
    av_str_t level;
    memset(f, 0, sizeof *f);
    f->max_level = AV_LEVEL_DEBUG;
    *limit = RECENT_DEFAULT;
    if (av_obj_get_uint(req, "limit", &n))
        *limit = n == 0 ? RECENT_DEFAULT : n > RECENT_MAX ? RECENT_MAX : (uint32_t)n;
    av_obj_get_str(req, "daemon", &f->daemon);
    av_obj_get_str(req, "registry", &f->registry);
    av_obj_get_uint(req, "after", &f->after_seq);
    if (av_obj_get_str(req, "level", &level) && level.len) {
        int lv = av_level_parse(level);
        if (lv < 0) {
            snprintf(err, errlen, "unknown level '%.*s' (err, warning, notice, info, debug)", (int)level.len,
                     level.ptr);
            return -1;
        }
        f->max_level = lv;
    }
    return 0;
}

static int
cmd_recent(av_daemon_t *d, const msgpack_object *req, msgpack_packer *pk, char *err, size_t errlen)
{
    errors_t *e = av_daemon_state(d);
    errors_filter_t filter;
    uint32_t limit;
    if (read_filter(req, &filter, &limit, err, errlen) < 0)
        return -1;
    flush_pending(e); /* a query sees every event received so far */
    collected_t c = { calloc(limit, sizeof(msgpack_sbuffer)), 0, limit };
    if (!c.items) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = errors_db_recent(e->db, &filter, limit, collect_event, &c);
    if (rc == 0) {
        av_pack_ctl_reply_begin(pk, true, NULL, 2);
        av_pack_kv_uint(pk, "total", errors_db_size(e->db));
        av_pack_str(pk, "events");
        msgpack_pack_array(pk, c.count);
        for (uint32_t i = c.count; i-- > 0;) /* oldest first */
            msgpack_sbuffer_write(pk->data, c.items[i].data, c.items[i].size);
    } else {
        snprintf(err, errlen, "cannot read the error database");
    }
    for (uint32_t i = 0; i < c.count; i++)
        msgpack_sbuffer_destroy(&c.items[i]);
    free(c.items);
    return rc;
}

typedef struct {
    msgpack_sbuffer body;
    msgpack_packer pk;
    uint32_t count;
} counts_t;

static void
collect_count(void *arg, av_str_t registry, av_str_t code, uint64_t count)
{
    counts_t *c = arg;
    msgpack_pack_map(&c->pk, 3);
    av_pack_kv_strn(&c->pk, "registry", registry);
    av_pack_kv_strn(&c->pk, "code", code);
    av_pack_kv_uint(&c->pk, "count", count);
    c->count++;
}

static int
cmd_counts(av_daemon_t *d, const msgpack_object *req, msgpack_packer *pk, char *err, size_t errlen)
{
    (void)req;
    errors_t *e = av_daemon_state(d);
    counts_t c = { .count = 0 };
    flush_pending(e);
    msgpack_sbuffer_init(&c.body);
    msgpack_packer_init(&c.pk, &c.body, msgpack_sbuffer_write);
    int rc = errors_db_counts(e->db, collect_count, &c);
    if (rc == 0) {
        av_pack_ctl_reply_begin(pk, true, NULL, 2);
        av_pack_kv_uint(pk, "total", errors_db_size(e->db));
        av_pack_str(pk, "counts");
        msgpack_pack_array(pk, c.count);
        msgpack_sbuffer_write(pk->data, c.body.data, c.body.size);
    } else {
        snprintf(err, errlen, "cannot read the error database");
    }
    msgpack_sbuffer_destroy(&c.body);
    return rc;
}

static uint64_t
gauge_held(av_daemon_t *d)
{
    return errors_db_size(((errors_t *)av_daemon_state(d))->db);
}

/* ---- lifecycle ---------------------------------------------------------- */

static int
errors_init(av_daemon_t *d)
{
    const av_config_t *cfg = av_daemon_config(d);
    errors_t *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    av_daemon_set_state(d, e);
    e->received = av_daemon_counter(d, "received");
    e->stored = av_daemon_counter(d, "stored");
    e->published = av_daemon_counter(d, "published");
    e->malformed = av_daemon_counter(d, "malformed");
    e->store_failed = av_daemon_counter(d, "store_failed");
    e->expired = av_daemon_counter(d, "expired");
    e->batch_max = cfg->errors.batch_max;
    if (!(e->pending = calloc(e->batch_max, sizeof *e->pending)) ||
        !(e->batch = calloc(e->batch_max, sizeof *e->batch)))
        return -1;
    if (!(e->db = errors_db_open(d, &cfg->errors)))
        return -1;
    if (!(e->events = av_daemon_bind(d, ZMQ_PULL, cfg->endpoints.errors_events)) ||
        !(e->publish = av_daemon_bind(d, ZMQ_PUB, cfg->endpoints.errors_publish)))
        return -1;
    if (sd_event_add_defer(av_daemon_loop(d), &e->flush, on_flush, e) < 0)
        return -1;
    sd_event_source_set_enabled(e->flush, SD_EVENT_OFF);
    /* Sweep often enough that an event outlives its bound by at most a
     * quarter of it (and by at most 10 s). */
    uint64_t sweep_ms = (uint64_t)cfg->errors.retention_s * 1000 / 4;
    sweep_ms = sweep_ms < 100 ? 100 : sweep_ms > EXPIRE_INTERVAL_MAX_MS ? EXPIRE_INTERVAL_MAX_MS : sweep_ms;
    e->expire_timer = av_daemon_every(d, sweep_ms, on_expire, NULL);
    e->sync_timer = av_daemon_every(d, SYNC_INTERVAL_MS, on_sync, NULL);
    if (!e->expire_timer || !e->sync_timer)
        return -1;
    if (av_daemon_watch(d, e->events, on_event) < 0 || av_daemon_command(d, "recent", cmd_recent) < 0 ||
        av_daemon_command(d, "counts", cmd_counts) < 0 || av_daemon_gauge(d, "events_held", gauge_held) < 0)
        return -1;
    on_expire(d, NULL);
    av_daemon_status_text(d, "recording");
    return 0;
}

static int
errors_reload(av_daemon_t *d, const av_config_t *next)
{
    const av_config_t *cur = av_daemon_config(d);
    errors_t *e = av_daemon_state(d);
    if (strcmp(cur->errors.path, next->errors.path) != 0 ||
        strcmp(cur->endpoints.errors_events, next->endpoints.errors_events) != 0 ||
        strcmp(cur->endpoints.errors_publish, next->endpoints.errors_publish) != 0)
        av_log_warning("errors.path and the errors endpoints change only with a restart");
    errors_db_set_retention(e->db, next->errors.retention_count, next->errors.retention_s);
    return 0;
}

static int
errors_stop(av_daemon_t *d)
{
    errors_t *e = av_daemon_state(d);
    /* Take in what is already queued (bounded), then stop listening. */
    for (uint32_t n = 0; n < 10 * e->batch_max && (zsock_events(e->events) & ZMQ_POLLIN); n++)
        on_event(d, e->events);
    flush_pending(e);
    av_daemon_unwatch(d, e->events);
    return 1;
}

static void
errors_fini(av_daemon_t *d)
{
    errors_t *e = av_daemon_state(d);
    if (!e)
        return;
    if (e->db)
        flush_pending(e);
    sd_event_source_disable_unref(e->flush);
    sd_event_source_disable_unref(e->expire_timer);
    sd_event_source_disable_unref(e->sync_timer);
    if (e->events)
        av_daemon_unwatch(d, e->events);
    zsock_destroy(&e->events);
    zsock_destroy(&e->publish);
    errors_db_close(&e->db);
    free(e->pending);
    free(e->batch);
    free(e);
    av_daemon_set_state(d, NULL);
}

int
main(int argc, char **argv)
{
    return av_daemon_main(argc, argv,
                          &(av_daemon_hooks_t){
                              .name = "errors",
                              .summary = "availd-errors: stores and republishes the error events of every availd daemon",
                              .init = errors_init,
                              .on_reload = errors_reload,
                              .on_stop = errors_stop,
                              .fini = errors_fini,
                          });
}
