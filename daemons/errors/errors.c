/* availd-errors' job: events stored in batches and published once stored,
 * retention, control commands (recent, counts). The daemon's manual is in
 * main.c. */
#include "av_batch.h"
#include "av_daemon.h"
#include "errors.h"
#include "errors_db.h"

#include <stdlib.h>
#include <string.h>

#define RECENT_DEFAULT 50
#define RECENT_MAX 10000
#define EXPIRE_INTERVAL_MAX_MS 10000
#define SYNC_INTERVAL_MS 1000

typedef struct {
    errors_db_t *db;
    zsock_t *events;
    zsock_t *publish;
    av_batch_t *batch;
    sd_event_source *expire_timer;
    sd_event_source *sync_timer;
    uint64_t *stored;
    uint64_t *published;
    uint64_t *store_failed;
    uint64_t *expired;
} errors_t;

static void
publish(errors_t *e, const av_error_t *ev)
{
    char topic[AV_DAEMON_MAX + AV_REGISTRY_MAX + 32];
    msgpack_sbuffer sbuf;
    snprintf(topic, sizeof topic, "%s.%.*s.%.*s", av_level_name(ev->level), (int)ev->daemon.len, ev->daemon.ptr,
             (int)ev->registry.len, ev->registry.ptr);
    msgpack_sbuffer_init(&sbuf);
    /* The published body is the event plus where it is stored (seq). */
    av_encode_error(&sbuf, ev);
    void *s = zsock_resolve(e->publish);
    /* A PUB never blocks: a slow subscriber loses messages, by design. */
    if (zmq_send(s, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        zmq_send(s, sbuf.data, sbuf.size, ZMQ_DONTWAIT) >= 0)
        (*e->published)++;
    msgpack_sbuffer_destroy(&sbuf);
}

/* A batch of events read in one loop turn: one transaction, then publish
 * what was stored. */
static void
store_batch(av_daemon_t *d, av_msg_t *const *msgs, uint32_t n)
{
    errors_t *e = av_daemon_state(d);
    av_error_t *events[n];
    uint64_t now = av_now_ms();
    for (uint32_t i = 0; i < n; i++) {
        events[i] = &msgs[i]->u.error;
        if (events[i]->at_ms == 0)
            events[i]->at_ms = now;
    }
    if (errors_db_append(e->db, events, n, now) < 0) {
        *e->store_failed += n;
        return;
    }
    *e->stored += n;
    for (uint32_t i = 0; i < n; i++)
        publish(e, events[i]);
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

static bool
collect_event(void *arg, const av_error_t *ev)
{
    collected_t *c = arg;
    if (c->count == c->cap)
        return false;
    msgpack_sbuffer *sb = &c->items[c->count++];
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    av_pack_error_map(&pk, ev);
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
    av_batch_flush(e->batch); /* a query sees every event received so far */
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
    av_batch_flush(e->batch);
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

int
errors_init(av_daemon_t *d)
{
    const av_config_t *cfg = av_daemon_config(d);
    errors_t *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    av_daemon_set_state(d, e);
    e->stored = av_daemon_counter(d, "stored");
    e->published = av_daemon_counter(d, "published");
    e->store_failed = av_daemon_counter(d, "store_failed");
    e->expired = av_daemon_counter(d, "expired");
    if (!(e->db = errors_db_open(d, &cfg->errors)))
        return -1;
    if (!(e->events = av_daemon_bind(d, ZMQ_PULL, cfg->endpoints.errors_events)) ||
        !(e->publish = av_daemon_bind(d, ZMQ_PUB, cfg->endpoints.errors_publish)))
        return -1;
    /* Malformed events are counted, not reported: reporting goes here. */
    if (!(e->batch = av_batch_new(d, e->events, AV_MSG_ERROR, cfg->errors.batch_max, false, store_batch)))
        return -1;
    /* Sweep often enough that an event outlives its bound by at most a
     * quarter of it (and by at most 10 s). */
    uint64_t sweep_ms = (uint64_t)cfg->errors.retention_s * 1000 / 4;
    sweep_ms = sweep_ms < 100 ? 100 : sweep_ms > EXPIRE_INTERVAL_MAX_MS ? EXPIRE_INTERVAL_MAX_MS : sweep_ms;
    e->expire_timer = av_daemon_every(d, sweep_ms, on_expire, NULL);
    e->sync_timer = av_daemon_every(d, SYNC_INTERVAL_MS, on_sync, NULL);
    if (!e->expire_timer || !e->sync_timer)
        return -1;
    if (av_daemon_command(d, "recent", cmd_recent) < 0 || av_daemon_command(d, "counts", cmd_counts) < 0 ||
        av_daemon_gauge(d, "events_held", gauge_held) < 0)
        return -1;
    on_expire(d, NULL);
    av_daemon_status_text(d, "recording");
    return 0;
}

/* The database it opened and the endpoints it binds (endpoints.errors_events
 * is the skeleton's own), kept until a restart. */
const av_setting_t errors_restart_settings[] = {
    AV_SETTING("endpoints.errors_publish", endpoints.errors_publish, AV_SETTING_STR),
    AV_SETTING("errors.path", errors.path, AV_SETTING_STR),
    AV_SETTING("errors.map_size_mb", errors.map_size_mb, AV_SETTING_U32),
    AV_SETTING("errors.batch_max", errors.batch_max, AV_SETTING_U32),
    { NULL, 0, 0 },
};

/* Retention applies at once. */
int
errors_reload(av_daemon_t *d, const av_config_t *next)
{
    errors_t *e = av_daemon_state(d);
    errors_db_set_retention(e->db, next->errors.retention_count, next->errors.retention_s);
    return 0;
}

int
errors_stop(av_daemon_t *d)
{
    errors_t *e = av_daemon_state(d);
    /* Take in what is already queued (bounded), then stop listening. */
    av_batch_finish(e->batch, 10 * av_daemon_config(d)->errors.batch_max);
    return 1;
}

void
errors_fini(av_daemon_t *d)
{
    errors_t *e = av_daemon_state(d);
    if (!e)
        return;
    av_batch_destroy(&e->batch);
    sd_event_source_disable_unref(e->expire_timer);
    sd_event_source_disable_unref(e->sync_timer);
    zsock_destroy(&e->events);
    zsock_destroy(&e->publish);
    errors_db_close(&e->db);
    free(e);
    av_daemon_set_state(d, NULL);
}

