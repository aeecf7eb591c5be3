/* LMDB layout of the cache:
 *   answers: A-label name -> record (av_cache.h: the layout readers share)
 *   expiry:  be64 expires_ms + name -> "" (sweeps and evictions in order)
 *   timing:  registry -> timing_record_t
 * Writes commit without fsync and are synced on a timer by the daemon. */
#include "cache_store.h"

#include "av_lmdb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Registries whose timing one batch accumulates before writing them out. */
#define TIMING_BATCH_REGISTRIES 64

struct cache_store {
    MDB_env *env;
    MDB_dbi answers;
    MDB_dbi expiry;
    MDB_dbi timing;
    uint64_t max_entries;
};

cache_store_t *
cache_store_open(av_daemon_t *d, const av_cache_cfg_t *cfg)
{
    cache_store_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->max_entries = cfg->max_entries;
    /* A cache is rebuilt from the registries: a damaged one is moved
     * aside and started empty rather than keep the daemon from starting. */
    av_lmdb_store_t store = {
        .path = cfg->path,
        .what = "cache",
        .flags = MDB_NOSYNC,
        .map_mb = cfg->map_size_mb,
        .max_dbs = 4,
        .names = (const char *const[]){ AV_CACHE_ANSWERS, "expiry", "timing" },
        .n_names = 3,
    };
    MDB_dbi dbis[3];
    if (av_lmdb_open_rebuildable(d, &store, &self->env, dbis) < 0) {
        free(self);
        return NULL;
    }
    self->answers = dbis[0];
    self->expiry = dbis[1];
    self->timing = dbis[2];
    return self;
}

void
cache_store_close(cache_store_t **self_p)
{
    cache_store_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    av_lmdb_close(&self->env);
    free(self);
    *self_p = NULL;
}

int
cache_store_get(cache_store_t *self, const char *name, av_cached_t *out)
{
    MDB_txn *txn;
    MDB_val key = { strlen(name), (void *)name }, val;
    if (key.mv_size == 0 || key.mv_size > AV_DOMAIN_MAX)
        return 1;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    int rc = mdb_get(txn, self->answers, &key, &val);
    if (rc == 0)
        av_cache_record_decode(val.mv_data, val.mv_size, out);
    mdb_txn_abort(txn);
    return rc == 0 ? 0 : rc == MDB_NOTFOUND ? 1 : -1;
}

/* ---- answers and their expiry index ------------------------------------- */

static void
expiry_key(uint8_t *buf, uint64_t expires_ms, const char *name, size_t len, MDB_val *key)
{
    av_be64_put(buf, expires_ms);
    memcpy(buf + 8, name, len);
    key->mv_data = buf;
    key->mv_size = 8 + len;
}

static int
delete_entry(cache_store_t *self, MDB_txn *txn, const char *name, size_t len)
{
    MDB_val key = { len, (void *)name }, val, ekey;
    uint8_t ebuf[8 + AV_DOMAIN_MAX];
    av_cached_t old;
    int rc = mdb_get(txn, self->answers, &key, &val);
    if (rc != 0)
        return rc;
    av_cache_record_decode(val.mv_data, val.mv_size, &old);
    expiry_key(ebuf, old.expires_ms, name, len, &ekey);
    rc = mdb_del(txn, self->expiry, &ekey, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    return mdb_del(txn, self->answers, &key, NULL);
}

static int
store_answer(cache_store_t *self, MDB_txn *txn, const av_put_t *put, uint64_t now_ms)
{
    const av_answer_t *a = &put->answer;
    uint8_t buf[AV_CACHE_RECORD_MAX], ebuf[8 + AV_DOMAIN_MAX];
    if (a->name.len == 0 || a->name.len > AV_DOMAIN_MAX)
        return 0; /* not a name the cache can hold; nothing to store */
    av_cached_t c = {
        .status = a->status,
        .source = a->source,
        .at_ms = a->at_ms ? a->at_ms : now_ms,
        .latency_us = a->latency_us > UINT32_MAX ? UINT32_MAX : (uint32_t)a->latency_us,
    };
    c.expires_ms = c.at_ms + (uint64_t)put->ttl_s * 1000;
    if (c.expires_ms <= now_ms)
        return 0; /* already stale */
    av_str_copy(c.registry, sizeof c.registry, a->registry);
    av_str_copy(c.reason, sizeof c.reason, a->reason);

    int rc = delete_entry(self, txn, a->name.ptr, a->name.len);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    MDB_val key = { a->name.len, (void *)a->name.ptr };
    MDB_val val = { av_cache_record_encode(&c, buf), buf };
    if ((rc = mdb_put(txn, self->answers, &key, &val, 0)) != 0)
        return rc;
    MDB_val ekey, empty = { 0, "" };
    expiry_key(ebuf, c.expires_ms, a->name.ptr, a->name.len, &ekey);
    return mdb_put(txn, self->expiry, &ekey, &empty, 0);
}

/* Deletes in expiry order (the front of the index) the entries expiring
 * at or before until_ms: UINT64_MAX evicts those closest to expiring. */
typedef struct {
    cache_store_t *self;
    uint64_t until_ms;
} expiring_t;

static bool
delete_expiring(void *arg, MDB_txn *txn, const MDB_val *key, const MDB_val *val)
{
    const expiring_t *e = arg;
    (void)val;
    if (key->mv_size < 8 || key->mv_size - 8 > AV_DOMAIN_MAX || av_be64_get(key->mv_data) > e->until_ms)
        return false;
    MDB_val name = { key->mv_size - 8, (char *)key->mv_data + 8 };
    mdb_del(txn, e->self->answers, &name, NULL);
    return true;
}

/* ---- timing ------------------------------------------------------------- */

typedef struct {
    av_str_t registry;
    timing_record_t rec;
} timing_acc_t;

static int
flush_timing(cache_store_t *self, MDB_txn *txn, timing_acc_t *acc, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        MDB_val key = { acc[i].registry.len, (void *)acc[i].registry.ptr };
        MDB_val val = { sizeof acc[i].rec, &acc[i].rec };
        int rc = mdb_put(txn, self->timing, &key, &val, 0);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static timing_acc_t *
timing_for(cache_store_t *self, MDB_txn *txn, timing_acc_t *acc, size_t *n, av_str_t registry)
{
    for (size_t i = 0; i < *n; i++)
        if (acc[i].registry.len == registry.len && memcmp(acc[i].registry.ptr, registry.ptr, registry.len) == 0)
            return &acc[i];
    if (*n == TIMING_BATCH_REGISTRIES && flush_timing(self, txn, acc, *n) == 0)
        *n = 0;
    if (*n == TIMING_BATCH_REGISTRIES)
        return NULL;
    timing_acc_t *t = &acc[(*n)++];
    MDB_val key = { registry.len, (void *)registry.ptr }, val;
    t->registry = registry;
    timing_record_init(&t->rec);
    if (mdb_get(txn, self->timing, &key, &val) == 0 && val.mv_size == sizeof t->rec) {
        memcpy(&t->rec, val.mv_data, sizeof t->rec);
        if (t->rec.version != TIMING_VERSION)
            timing_record_init(&t->rec);
    }
    return t;
}

/* ---- writing ------------------------------------------------------------ */

typedef struct {
    cache_store_t *self;
    const av_put_t *const *puts;
    size_t n;
    uint64_t now_ms;
} put_job_t;

static int
put_txn(void *arg, MDB_txn *txn)
{
    const put_job_t *job = arg;
    cache_store_t *self = job->self;
    timing_acc_t *acc = calloc(TIMING_BATCH_REGISTRIES, sizeof *acc);
    size_t n_acc = 0;
    int rc = 0;
    if (!acc)
        return ENOMEM;
    for (size_t i = 0; rc == 0 && i < job->n; i++) {
        const av_put_t *p = job->puts[i];
        if (p->ttl_s > 0)
            rc = store_answer(self, txn, p, job->now_ms);
        if (rc == 0 && p->timing && p->answer.registry.len && p->answer.registry.len <= AV_REGISTRY_MAX) {
            timing_acc_t *t = timing_for(self, txn, acc, &n_acc, p->answer.registry);
            if (t)
                timing_record_add(&t->rec, &p->answer, job->now_ms);
        }
    }
    if (rc == 0)
        rc = flush_timing(self, txn, acc, n_acc);
    free(acc);
    MDB_stat st;
    if (rc == 0 && mdb_stat(txn, self->answers, &st) == 0 && st.ms_entries > self->max_entries)
        av_lmdb_delete_front(txn, self->expiry, st.ms_entries - self->max_entries, delete_expiring,
                             &(expiring_t){ self, UINT64_MAX });
    return rc;
}

int
cache_store_put_batch(cache_store_t *self, const av_put_t *const *puts, size_t n, uint64_t now_ms)
{
    put_job_t job = { self, puts, n, now_ms };
    expiring_t evict = { self, UINT64_MAX };
    av_lmdb_room_t room = {
        .dbi = self->expiry,
        .fn = delete_expiring,
        .arg = &evict,
        .at_least = n,
        .warning = "cache map full (raise cache.map_size_mb or lower cache.max_entries): evicted entries",
    };
    int rc = av_lmdb_write(self->env, put_txn, &job, &room);
    if (rc != 0) {
        av_log_err("cache: cannot store %zu answers: %s", n, mdb_strerror(rc));
        return -1;
    }
    return 0;
}

typedef struct {
    cache_store_t *self;
    uint64_t now_ms;
    uint64_t max;
    uint64_t swept;
} sweep_job_t;

static int
sweep_txn(void *arg, MDB_txn *txn)
{
    sweep_job_t *job = arg;
    job->swept = av_lmdb_delete_front(txn, job->self->expiry, job->max, delete_expiring,
                                      &(expiring_t){ job->self, job->now_ms });
    return 0;
}

uint64_t
cache_store_sweep(cache_store_t *self, uint64_t now_ms, uint64_t max)
{
    sweep_job_t job = { self, now_ms, max, 0 };
    return av_lmdb_write(self->env, sweep_txn, &job, NULL) == 0 ? job.swept : 0;
}

typedef struct {
    cache_store_t *self;
    const char *name;   /* NULL: everything */
    int64_t removed;
} purge_job_t;

static int
purge_txn(void *arg, MDB_txn *txn)
{
    purge_job_t *job = arg;
    cache_store_t *self = job->self;
    MDB_stat st;
    int rc;
    if (job->name) {
        rc = delete_entry(self, txn, job->name, strlen(job->name));
        job->removed = rc == 0 ? 1 : 0;
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    if ((rc = mdb_stat(txn, self->answers, &st)) == 0)
        job->removed = (int64_t)st.ms_entries;
    if (rc == 0)
        rc = mdb_drop(txn, self->answers, 0);
    if (rc == 0)
        rc = mdb_drop(txn, self->expiry, 0);
    return rc;
}

int64_t
cache_store_purge(cache_store_t *self, const char *name)
{
    purge_job_t job = { self, name, 0 };
    return av_lmdb_write(self->env, purge_txn, &job, NULL) == 0 ? job.removed : -1;
}

/* ---- reading ------------------------------------------------------------ */

uint64_t
cache_store_entries(cache_store_t *self)
{
    return av_lmdb_entries(self->env, self->answers);
}

void
cache_store_sync(cache_store_t *self)
{
    mdb_env_sync(self->env, 1);
}

int
cache_store_reader_check(cache_store_t *self)
{
    int dead = 0;
    mdb_reader_check(self->env, &dead);
    return dead;
}

int
cache_store_timing(cache_store_t *self, uint64_t now_ms, cache_timing_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, self->timing, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    timing_t *t = malloc(sizeof *t);
    timing_record_t *rec = malloc(sizeof *rec);
    int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (t && rec && rc == 0) {
        if (val.mv_size == sizeof *rec) {
            memcpy(rec, val.mv_data, sizeof *rec);
            timing_record_view(rec, now_ms, (av_str_t){ key.mv_data, (uint32_t)key.mv_size }, t);
            fn(arg, t);
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    free(t);
    free(rec);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return 0;
}
