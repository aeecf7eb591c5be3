/* LMDB storage of error events. Value layout: 8 bytes received_ms (big
 * endian) then the event as a canonical msgpack `error` message, so age
 * retention needs no decoding and a stored event reads back as it went in. */
#include "errors_db.h"

#include "av_lmdb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct errors_db {
    MDB_env *env;
    MDB_dbi events;   /* be64 seq -> be64 received_ms + msgpack */
    MDB_dbi counts;   /* registry \0 code -> u64 */
    uint64_t next_seq;
    uint64_t retention_count;
    uint32_t retention_s;
};

static int
count_key(MDB_val *key, char *buf, size_t size, av_str_t registry, av_str_t code)
{
    if ((size_t)registry.len + code.len + 1 > size)
        return -1;
    if (registry.len)
        memcpy(buf, registry.ptr, registry.len);
    buf[registry.len] = '\0';
    if (code.len)
        memcpy(buf + registry.len + 1, code.ptr, code.len);
    key->mv_data = buf;
    key->mv_size = registry.len + 1 + code.len;
    return 0;
}

static int
count_add(errors_db_t *self, MDB_txn *txn, av_str_t registry, av_str_t code, int64_t delta)
{
    char buf[AV_REGISTRY_MAX + AV_CODE_MAX + 2];
    MDB_val key, val;
    uint64_t n = 0;
    if (count_key(&key, buf, sizeof buf, registry, code) < 0)
        return 0;
    if (mdb_get(txn, self->counts, &key, &val) == 0 && val.mv_size == sizeof n)
        memcpy(&n, val.mv_data, sizeof n);
    n = (delta < 0 && n < (uint64_t)-delta) ? 0 : n + (uint64_t)delta;
    if (n == 0) {
        int rc = mdb_del(txn, self->counts, &key, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    val.mv_data = &n;
    val.mv_size = sizeof n;
    return mdb_put(txn, self->counts, &key, &val, 0);
}

static uint64_t
received_of(const MDB_val *val)
{
    return val->mv_size >= 8 ? av_be64_get(val->mv_data) : 0;
}

/* Decodes a stored value; the event's strings point into the value. */
static int
decode_value(const MDB_val *val, av_msg_t *msg)
{
    if (val->mv_size < 8)
        return -1;
    if (av_msg_decode(msg, (const char *)val->mv_data + 8, val->mv_size - 8) != 0 || msg->type != AV_MSG_ERROR)
        return -1;
    msg->u.error.received_ms = received_of(val);
    return 0;
}

/* Drops the oldest events (the front of `events`) received before
 * before_ms, or of any age with 0, and takes them off the counts. */
typedef struct {
    errors_db_t *self;
    uint64_t before_ms;
} dropping_t;

static bool
drop_event(void *arg, MDB_txn *txn, const MDB_val *key, const MDB_val *val)
{
    const dropping_t *drop = arg;
    av_msg_t msg;
    (void)key;
    if (drop->before_ms && received_of(val) >= drop->before_ms)
        return false;
    av_msg_init(&msg);
    if (decode_value(val, &msg) == 0)
        count_add(drop->self, txn, msg.u.error.registry, msg.u.error.code, -1);
    av_msg_release(&msg);
    return true;
}

static int
read_next_seq(errors_db_t *self)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return rc;
    self->next_seq = 1;
    if ((rc = mdb_cursor_open(txn, self->events, &cur)) == 0) {
        if (mdb_cursor_get(cur, &key, &val, MDB_LAST) == 0 && key.mv_size == 8)
            self->next_seq = av_be64_get(key.mv_data) + 1;
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return rc;
}

/* The first read of an opened database (its newest event's number): one
 * whose pages LMDB finds damaged is rebuilt too. */
static int
verify_open(void *arg, MDB_env *env, const MDB_dbi *dbis)
{
    errors_db_t *self = arg;
    self->env = env;
    self->events = dbis[0];
    self->counts = dbis[1];
    return read_next_seq(self);
}

errors_db_t *
errors_db_open(av_daemon_t *d, const av_errors_cfg_t *cfg)
{
    errors_db_t *self = calloc(1, sizeof *self);
    MDB_dbi dbis[2];
    if (!self)
        return NULL;
    self->retention_count = cfg->retention_count;
    self->retention_s = cfg->retention_s;
    /* What the daemons reported is worth less than availd-errors running
     * to record what they report next: a damaged database is moved aside
     * (for a post-mortem) and started empty. */
    av_lmdb_store_t store = {
        .path = cfg->path,
        .what = "error database",
        .flags = MDB_NOSYNC,
        .map_mb = cfg->map_size_mb,
        .max_dbs = 4,
        .names = (const char *const[]){ "events", "counts" },
        .n_names = 2,
        .verify = verify_open,
        .arg = self,
    };
    if (av_lmdb_open_rebuildable(d, &store, &self->env, dbis) < 0)
        goto fail;
    return self;
fail:
    errors_db_close(&self);
    return NULL;
}

void
errors_db_close(errors_db_t **self_p)
{
    errors_db_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    av_lmdb_close(&self->env);
    free(self);
    *self_p = NULL;
}

void
errors_db_set_retention(errors_db_t *self, uint64_t count, uint32_t age_s)
{
    self->retention_count = count;
    self->retention_s = age_s;
}

typedef struct {
    errors_db_t *self;
    av_error_t *const *events;
    size_t n;
    uint64_t received_ms;
} append_job_t;

static int
append_txn(void *arg, MDB_txn *txn)
{
    const append_job_t *job = arg;
    errors_db_t *self = job->self;
    msgpack_sbuffer sbuf;
    MDB_stat st;
    int rc = 0;
    msgpack_sbuffer_init(&sbuf);
    for (size_t i = 0; i < job->n && rc == 0; i++) {
        uint8_t keybuf[8], head[8];
        /* Stored as reported: where it is held is its key and head. */
        av_error_t ev = *job->events[i];
        ev.seq = 0;
        ev.received_ms = 0;
        msgpack_sbuffer_clear(&sbuf);
        av_be64_put(head, job->received_ms);
        msgpack_sbuffer_write(&sbuf, (const char *)head, 8);
        if (av_encode_error(&sbuf, &ev) != 0) {
            rc = ENOMEM;
            break;
        }
        av_be64_put(keybuf, self->next_seq + i);
        MDB_val key = { 8, keybuf }, val = { sbuf.size, sbuf.data };
        rc = mdb_put(txn, self->events, &key, &val, MDB_APPEND);
        if (rc == 0)
            rc = count_add(self, txn, ev.registry, ev.code, 1);
    }
    msgpack_sbuffer_destroy(&sbuf);
    if (rc == 0 && (rc = mdb_stat(txn, self->events, &st)) == 0 && st.ms_entries > self->retention_count)
        av_lmdb_delete_front(txn, self->events, st.ms_entries - self->retention_count, drop_event,
                             &(dropping_t){ self, 0 });
    return rc;
}

int
errors_db_append(errors_db_t *self, av_error_t *const *events, size_t n, uint64_t received_ms)
{
    append_job_t job = { self, events, n, received_ms };
    dropping_t oldest = { self, 0 };
    av_lmdb_room_t room = {
        .dbi = self->events,
        .fn = drop_event,
        .arg = &oldest,
        .at_least = n,
        .warning = "error database full: dropped the oldest events to make room",
    };
    int rc = av_lmdb_write(self->env, append_txn, &job, &room);
    if (rc != 0) {
        av_log_err("cannot store %zu error events: %s", n, mdb_strerror(rc));
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        events[i]->seq = self->next_seq + i;
        events[i]->received_ms = received_ms;
    }
    self->next_seq += n;
    return 0;
}

typedef struct {
    errors_db_t *self;
    uint64_t before_ms;
    uint64_t dropped;
} expire_job_t;

static int
expire_txn(void *arg, MDB_txn *txn)
{
    expire_job_t *job = arg;
    job->dropped = av_lmdb_delete_front(txn, job->self->events, UINT64_MAX, drop_event,
                                        &(dropping_t){ job->self, job->before_ms });
    return 0;
}

uint64_t
errors_db_expire(errors_db_t *self, uint64_t now_ms)
{
    uint64_t age_ms = (uint64_t)self->retention_s * 1000;
    expire_job_t job = { self, now_ms > age_ms ? now_ms - age_ms : 0, 0 };
    if (job.before_ms == 0)
        return 0;
    return av_lmdb_write(self->env, expire_txn, &job, NULL) == 0 ? job.dropped : 0;
}

void
errors_db_sync(errors_db_t *self)
{
    mdb_env_sync(self->env, 1);
}

static bool
matches(const errors_filter_t *f, const av_error_t *ev)
{
    if (f->daemon.len && !(ev->daemon.len == f->daemon.len && memcmp(ev->daemon.ptr, f->daemon.ptr, f->daemon.len) == 0))
        return false;
    if (f->registry.len &&
        !(ev->registry.len == f->registry.len && memcmp(ev->registry.ptr, f->registry.ptr, f->registry.len) == 0))
        return false;
    return (int)ev->level <= f->max_level;
}

int
errors_db_recent(errors_db_t *self, const errors_filter_t *filter, uint32_t limit, errors_visit_fn visit, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    uint32_t visited = 0;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, self->events, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    int rc = mdb_cursor_get(cur, &key, &val, MDB_LAST);
    while (rc == 0 && visited < limit) {
        uint64_t seq = key.mv_size == 8 ? av_be64_get(key.mv_data) : 0;
        if (seq <= filter->after_seq)
            break;
        av_msg_t msg;
        av_msg_init(&msg);
        if (decode_value(&val, &msg) == 0 && matches(filter, &msg.u.error)) {
            msg.u.error.seq = seq;
            visited++;
            if (!visit(arg, &msg.u.error)) {
                av_msg_release(&msg);
                break;
            }
        }
        av_msg_release(&msg);
        rc = mdb_cursor_get(cur, &key, &val, MDB_PREV);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return 0;
}

int
errors_db_counts(errors_db_t *self, errors_count_fn visit, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, self->counts, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (rc == 0) {
        const char *k = key.mv_data;
        const char *nul = memchr(k, '\0', key.mv_size);
        uint64_t n = 0;
        if (nul && val.mv_size == sizeof n) {
            memcpy(&n, val.mv_data, sizeof n);
            av_str_t registry = { k, (uint32_t)(nul - k) };
            av_str_t code = { nul + 1, (uint32_t)(key.mv_size - (size_t)(nul - k) - 1) };
            visit(arg, registry, code, n);
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return 0;
}

uint64_t
errors_db_size(errors_db_t *self)
{
    return av_lmdb_entries(self->env, self->events);
}
