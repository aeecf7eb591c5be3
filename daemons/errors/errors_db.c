/* LMDB storage of error events. Value layout: 8 bytes received_ms (big
 * endian) then the event as a canonical msgpack `error` message, so age
 * retention needs no decoding and a stored event reads back as it went in. */
#include "errors_db.h"

#include "av_lmdb.h"

#include <stdlib.h>
#include <string.h>

struct errors_db {
    MDB_env *env;
    MDB_dbi events;   /* be64 seq -> be64 received_ms + msgpack */
    MDB_dbi counts;   /* registry \0 code -> u64 */
    uint64_t next_seq;
    uint64_t size;    /* events held */
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

/* Decodes a stored value; the event's strings point into the value. */
static int
decode_value(const MDB_val *val, av_msg_t *msg, uint64_t *received_ms)
{
    if (val->mv_size < 8)
        return -1;
    *received_ms = av_be64_get(val->mv_data);
    if (av_msg_decode(msg, (const char *)val->mv_data + 8, val->mv_size - 8) != 0 || msg->type != AV_MSG_ERROR)
        return -1;
    return 0;
}

/* Deletes the oldest events while `more` says so. Returns events deleted. */
static uint64_t
delete_oldest(errors_db_t *self, MDB_txn *txn, uint64_t max_count, uint64_t older_than_ms)
{
    MDB_cursor *cur;
    MDB_val key, val;
    uint64_t deleted = 0;
    if (mdb_cursor_open(txn, self->events, &cur) != 0)
        return 0;
    int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (rc == 0 && deleted < max_count) {
        av_msg_t msg;
        uint64_t received = 0;
        av_msg_init(&msg);
        bool ok = decode_value(&val, &msg, &received) == 0;
        if (older_than_ms && received >= older_than_ms) {
            av_msg_release(&msg);
            break;
        }
        if (ok)
            count_add(self, txn, msg.u.error.registry, msg.u.error.code, -1);
        av_msg_release(&msg);
        if (mdb_cursor_del(cur, 0) != 0)
            break;
        deleted++;
        /* The oldest is always first: re-seek instead of trusting where a
         * delete leaves the cursor. */
        rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    }
    mdb_cursor_close(cur);
    self->size -= deleted < self->size ? deleted : self->size;
    return deleted;
}

errors_db_t *
errors_db_open(av_daemon_t *d, const av_errors_cfg_t *cfg)
{
    errors_db_t *self = calloc(1, sizeof *self);
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val key, val;
    MDB_stat st;
    if (!self)
        return NULL;
    self->retention_count = cfg->retention_count;
    self->retention_s = cfg->retention_s;
    if (av_lmdb_open(d, cfg->path, MDB_NOSYNC, cfg->map_size_mb, 4, &self->env) < 0)
        goto fail;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "events", MDB_CREATE, &self->events);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "counts", MDB_CREATE, &self->counts);
    if (rc == 0)
        rc = mdb_stat(txn, self->events, &st);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events, &cur);
    if (rc != 0) {
        av_log_err("cannot open the error database in %s: %s", cfg->path, mdb_strerror(rc));
        goto fail;
    }
    self->size = st.ms_entries;
    self->next_seq = 1;
    if (mdb_cursor_get(cur, &key, &val, MDB_LAST) == 0 && key.mv_size == 8)
        self->next_seq = av_be64_get(key.mv_data) + 1;
    mdb_cursor_close(cur);
    if ((rc = mdb_txn_commit(txn)) != 0) {
        txn = NULL;
        av_log_err("cannot open the error database in %s: %s", cfg->path, mdb_strerror(rc));
        goto fail;
    }
    return self;
fail:
    if (txn)
        mdb_txn_abort(txn);
    errors_db_close(&self);
    return NULL;
}

void
errors_db_close(errors_db_t **self_p)
{
    errors_db_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    if (self->env) {
        mdb_env_sync(self->env, 1);
        mdb_env_close(self->env);
    }
    free(self);
    *self_p = NULL;
}

void
errors_db_set_retention(errors_db_t *self, uint64_t count, uint32_t age_s)
{
    self->retention_count = count;
    self->retention_s = age_s;
}

static int
append_txn(errors_db_t *self, av_error_t *const *events, size_t n, uint64_t received_ms)
{
    MDB_txn *txn;
    msgpack_sbuffer sbuf;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    msgpack_sbuffer_init(&sbuf);
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t keybuf[8], head[8];
        msgpack_sbuffer_clear(&sbuf);
        av_be64_put(head, received_ms);
        msgpack_sbuffer_write(&sbuf, (const char *)head, 8);
        if (av_encode_error(&sbuf, events[i]) != 0) {
            rc = ENOMEM;
            break;
        }
        av_be64_put(keybuf, self->next_seq + i);
        MDB_val key = { 8, keybuf }, val = { sbuf.size, sbuf.data };
        rc = mdb_put(txn, self->events, &key, &val, MDB_APPEND);
        if (rc == 0)
            rc = count_add(self, txn, events[i]->registry, events[i]->code, 1);
    }
    msgpack_sbuffer_destroy(&sbuf);
    if (rc == 0 && self->size + n > self->retention_count)
        delete_oldest(self, txn, self->size + n - self->retention_count, 0);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

int
errors_db_append(errors_db_t *self, av_error_t *const *events, size_t n, uint64_t received_ms, uint64_t *first_seq)
{
    uint64_t size_before = self->size;
    int rc = append_txn(self, events, n, received_ms);
    if (rc == MDB_MAP_FULL) {
        /* Retention by count did not keep us under the map size (events
         * larger than planned): make room by dropping the oldest tenth. */
        MDB_txn *txn;
        self->size = size_before;
        if (mdb_txn_begin(self->env, NULL, 0, &txn) == 0) {
            delete_oldest(self, txn, self->size / 10 + n, 0);
            if (mdb_txn_commit(txn) != 0)
                self->size = size_before;
        }
        av_log_warning("error database full: dropped the oldest events to make room");
        size_before = self->size;
        rc = append_txn(self, events, n, received_ms);
    }
    if (rc != 0) {
        self->size = size_before;
        av_log_err("cannot store %zu error events: %s", n, mdb_strerror(rc));
        return -1;
    }
    if (first_seq)
        *first_seq = self->next_seq;
    self->next_seq += n;
    self->size += n;
    if (self->size > self->retention_count)
        self->size = self->retention_count;
    return 0;
}

uint64_t
errors_db_expire(errors_db_t *self, uint64_t now_ms)
{
    MDB_txn *txn;
    uint64_t cutoff = now_ms > (uint64_t)self->retention_s * 1000 ? now_ms - (uint64_t)self->retention_s * 1000 : 0;
    if (cutoff == 0 || mdb_txn_begin(self->env, NULL, 0, &txn) != 0)
        return 0;
    uint64_t size_before = self->size;
    uint64_t n = delete_oldest(self, txn, UINT64_MAX, cutoff);
    if (mdb_txn_commit(txn) != 0) {
        self->size = size_before;
        return 0;
    }
    return n;
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
        uint64_t received;
        av_msg_init(&msg);
        if (decode_value(&val, &msg, &received) == 0 && matches(filter, &msg.u.error)) {
            visited++;
            if (!visit(arg, seq, received, &msg.u.error)) {
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
    return self->size;
}
