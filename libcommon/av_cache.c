/* LMDB layout of the cache:
 *   answers: A-label name -> record (header, registry bytes, reason bytes)
 *   expiry:  be64 expires_ms + name -> "" (sweeps and evictions in order)
 *   timing:  registry -> timing record (lifetime and per-minute histograms)
 * Writes commit without fsync and are synced on a timer by the writer. */
#include "av_cache.h"

#include "av_lmdb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RECORD_VERSION 1
#define TIMING_VERSION 1
#define MINUTE_MS 60000

typedef struct {
    uint8_t version;
    uint8_t status;
    uint8_t source;
    uint8_t registry_len;
    uint8_t reason_len;
    uint8_t pad[3];
    uint32_t latency_us;
    uint32_t pad2;
    uint64_t at_ms;
    uint64_t expires_ms;
} record_head_t;

typedef struct {
    uint32_t version;
    uint32_t pad;
    uint64_t last_ms;
    av_timing_counts_t total;
    uint64_t window_minute[AV_TIMING_WINDOWS];
    av_timing_counts_t window[AV_TIMING_WINDOWS];
} timing_record_t;

struct av_cache {
    MDB_env *env;
    MDB_dbi answers;
    MDB_dbi expiry;
    MDB_dbi timing;
    bool writer;
    MDB_txn *read_txn;     /* reader: reset between lookups, renewed on use */
    uint64_t max_entries;
};

/* ---- timing histogram --------------------------------------------------- */

int
av_timing_bucket(uint64_t us)
{
    if (us < 4)
        return (int)us;
    int msb = 63 - __builtin_clzll(us);
    int frac = (int)((us >> (msb - 2)) & 3);
    int b = msb * 4 + frac;
    return b >= AV_TIMING_BUCKETS ? AV_TIMING_BUCKETS - 1 : b;
}

uint64_t
av_timing_bucket_upper_us(int b)
{
    /* Buckets 4-7 are never used (av_timing_bucket maps 4 us to 8). */
    if (b < 8)
        return b < 4 ? (uint64_t)b : 3;
    int msb = b / 4, frac = b % 4;
    return ((uint64_t)(5 + frac) << (msb - 2)) - 1;
}

uint64_t
av_timing_quantile(const av_timing_counts_t *c, double q)
{
    uint64_t total = 0, seen = 0;
    for (int b = 0; b < AV_TIMING_BUCKETS; b++)
        total += c->hist[b];
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total + 0.5);
    if (want == 0)
        want = 1;
    for (int b = 0; b < AV_TIMING_BUCKETS; b++) {
        seen += c->hist[b];
        if (seen >= want)
            return av_timing_bucket_upper_us(b);
    }
    return av_timing_bucket_upper_us(AV_TIMING_BUCKETS - 1);
}

static void
counts_add(av_timing_counts_t *c, const av_answer_t *a)
{
    c->count++;
    if (a->status == AV_STATUS_UNKNOWN)
        c->errors++;
    if (av_str_eq(a->reason, AV_REASON_RATE_LIMITED))
        c->rate_limited++;
    c->hist[av_timing_bucket(a->latency_us)]++;
}

static void
counts_sum(av_timing_counts_t *into, const av_timing_counts_t *c)
{
    into->count += c->count;
    into->errors += c->errors;
    into->rate_limited += c->rate_limited;
    for (int b = 0; b < AV_TIMING_BUCKETS; b++)
        into->hist[b] += c->hist[b];
}

/* ---- opening ------------------------------------------------------------ */

static int
open_dbis(av_cache_t *self, unsigned flags)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(self->env, NULL, self->writer ? 0 : MDB_RDONLY, &txn);
    if (rc != 0)
        return rc;
    if ((rc = mdb_dbi_open(txn, "answers", flags, &self->answers)) == 0 &&
        (rc = mdb_dbi_open(txn, "expiry", flags, &self->expiry)) == 0)
        rc = mdb_dbi_open(txn, "timing", flags, &self->timing);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    /* Committing (a read-only transaction too) keeps the handles open; an
     * abort would close them. */
    return mdb_txn_commit(txn);
}

av_cache_t *
av_cache_open_writer(av_daemon_t *d, const av_cache_cfg_t *cfg)
{
    av_cache_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->writer = true;
    self->max_entries = cfg->max_entries;
    if (av_lmdb_open(d, cfg->path, MDB_NOSYNC, cfg->map_size_mb, 4, &self->env) < 0) {
        free(self);
        return NULL;
    }
    int rc = open_dbis(self, MDB_CREATE);
    if (rc != 0) {
        av_log_err("cannot open the cache in %s: %s", cfg->path, mdb_strerror(rc));
        av_cache_close(&self);
    }
    return self;
}

av_cache_t *
av_cache_open_reader(const char *path)
{
    char data[4096];
    struct stat st;
    snprintf(data, sizeof data, "%s/data.mdb", path);
    if (stat(data, &st) < 0)
        return NULL; /* the writer has not created it yet */
    av_cache_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (av_lmdb_open(NULL, path, MDB_RDONLY, 0, 4, &self->env) < 0) {
        free(self);
        return NULL;
    }
    int rc = open_dbis(self, 0);
    if (rc != 0) {
        av_log_warning("cache in %s not readable yet: %s", path, mdb_strerror(rc));
        av_cache_close(&self);
    }
    return self;
}

void
av_cache_close(av_cache_t **self_p)
{
    av_cache_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    if (self->read_txn)
        mdb_txn_abort(self->read_txn);
    if (self->env) {
        if (self->writer)
            mdb_env_sync(self->env, 1);
        mdb_env_close(self->env);
    }
    free(self);
    *self_p = NULL;
}

/* ---- reading ------------------------------------------------------------ */

static void
decode_record(const MDB_val *val, av_cached_t *out)
{
    record_head_t h;
    memset(out, 0, sizeof *out);
    out->status = AV_STATUS_UNKNOWN;
    if (val->mv_size < sizeof h)
        return;
    memcpy(&h, val->mv_data, sizeof h);
    if (h.version != RECORD_VERSION || sizeof h + h.registry_len + h.reason_len > val->mv_size ||
        h.status >= AV_STATUS_COUNT || h.source >= AV_SOURCE_COUNT)
        return;
    const char *p = (const char *)val->mv_data + sizeof h;
    out->status = (av_status_t)h.status;
    out->source = (av_source_t)h.source;
    out->at_ms = h.at_ms;
    out->expires_ms = h.expires_ms;
    out->latency_us = h.latency_us;
    av_str_copy(out->registry, sizeof out->registry, (av_str_t){ p, h.registry_len });
    av_str_copy(out->reason, sizeof out->reason, (av_str_t){ p + h.registry_len, h.reason_len });
}

static int
read_txn(av_cache_t *self, MDB_txn **txn)
{
    int rc;
    if (self->writer)
        return mdb_txn_begin(self->env, NULL, MDB_RDONLY, txn);
    if (!self->read_txn) {
        rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &self->read_txn);
    } else {
        rc = mdb_txn_renew(self->read_txn);
    }
    if (rc == MDB_MAP_RESIZED) {
        /* The writer grew the map: adopt its size and try again. */
        if (self->read_txn) {
            mdb_txn_abort(self->read_txn);
            self->read_txn = NULL;
        }
        mdb_env_set_mapsize(self->env, 0);
        rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &self->read_txn);
    }
    *txn = self->read_txn;
    return rc;
}

static void
end_read(av_cache_t *self, MDB_txn *txn)
{
    if (self->writer)
        mdb_txn_abort(txn);
    else
        mdb_txn_reset(txn);
}

int
av_cache_get(av_cache_t *self, const char *name, av_cached_t *out)
{
    MDB_txn *txn;
    MDB_val key = { strlen(name), (void *)name }, val;
    if (key.mv_size == 0 || key.mv_size > AV_DOMAIN_MAX)
        return 1;
    int rc = read_txn(self, &txn);
    if (rc != 0)
        return -1;
    rc = mdb_get(txn, self->answers, &key, &val);
    if (rc == 0)
        decode_record(&val, out);
    end_read(self, txn);
    return rc == 0 ? 0 : rc == MDB_NOTFOUND ? 1 : -1;
}

/* ---- writing ------------------------------------------------------------ */

static void
expiry_key(uint8_t *buf, uint64_t expires_ms, const char *name, size_t len, MDB_val *key)
{
    av_be64_put(buf, expires_ms);
    memcpy(buf + 8, name, len);
    key->mv_data = buf;
    key->mv_size = 8 + len;
}

static int
delete_entry(av_cache_t *self, MDB_txn *txn, const char *name, size_t len)
{
    MDB_val key = { len, (void *)name }, val;
    uint8_t ebuf[8 + AV_DOMAIN_MAX];
    int rc = mdb_get(txn, self->answers, &key, &val);
    if (rc != 0)
        return rc;
    av_cached_t old;
    decode_record(&val, &old);
    MDB_val ekey;
    expiry_key(ebuf, old.expires_ms, name, len, &ekey);
    rc = mdb_del(txn, self->expiry, &ekey, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    return mdb_del(txn, self->answers, &key, NULL);
}

static int
store_answer(av_cache_t *self, MDB_txn *txn, const av_put_t *put, uint64_t now_ms)
{
    const av_answer_t *a = &put->answer;
    uint8_t buf[sizeof(record_head_t) + 255 + 255];
    uint8_t ebuf[8 + AV_DOMAIN_MAX];
    record_head_t h = { 0 };
    if (a->name.len == 0 || a->name.len > AV_DOMAIN_MAX)
        return 0; /* not a name the cache can hold; nothing to store */
    h.version = RECORD_VERSION;
    h.status = (uint8_t)a->status;
    h.source = (uint8_t)a->source;
    h.registry_len = (uint8_t)(a->registry.len > AV_REGISTRY_MAX ? AV_REGISTRY_MAX : a->registry.len);
    h.reason_len = (uint8_t)(a->reason.len > AV_CACHE_REASON_MAX ? AV_CACHE_REASON_MAX : a->reason.len);
    h.latency_us = a->latency_us > UINT32_MAX ? UINT32_MAX : (uint32_t)a->latency_us;
    h.at_ms = a->at_ms ? a->at_ms : now_ms;
    h.expires_ms = h.at_ms + (uint64_t)put->ttl_s * 1000;
    if (h.expires_ms <= now_ms)
        return 0; /* already stale */
    memcpy(buf, &h, sizeof h);
    if (h.registry_len)
        memcpy(buf + sizeof h, a->registry.ptr, h.registry_len);
    if (h.reason_len)
        memcpy(buf + sizeof h + h.registry_len, a->reason.ptr, h.reason_len);

    int rc = delete_entry(self, txn, a->name.ptr, a->name.len);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    MDB_val key = { a->name.len, (void *)a->name.ptr };
    MDB_val val = { sizeof h + h.registry_len + h.reason_len, buf };
    if ((rc = mdb_put(txn, self->answers, &key, &val, 0)) != 0)
        return rc;
    MDB_val ekey, empty = { 0, "" };
    expiry_key(ebuf, h.expires_ms, a->name.ptr, a->name.len, &ekey);
    return mdb_put(txn, self->expiry, &ekey, &empty, 0);
}

typedef struct {
    av_str_t registry;
    timing_record_t rec;
} timing_acc_t;

#define TIMING_BATCH_REGISTRIES 64

static int
flush_timing(av_cache_t *self, MDB_txn *txn, timing_acc_t *acc, size_t n)
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
timing_for(av_cache_t *self, MDB_txn *txn, timing_acc_t *acc, size_t *n, av_str_t registry)
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
    memset(&t->rec, 0, sizeof t->rec);
    t->rec.version = TIMING_VERSION;
    if (mdb_get(txn, self->timing, &key, &val) == 0 && val.mv_size == sizeof t->rec) {
        memcpy(&t->rec, val.mv_data, sizeof t->rec);
        if (t->rec.version != TIMING_VERSION) {
            memset(&t->rec, 0, sizeof t->rec);
            t->rec.version = TIMING_VERSION;
        }
    }
    return t;
}

static void
timing_add(timing_record_t *rec, const av_answer_t *a, uint64_t now_ms)
{
    uint64_t minute = now_ms / MINUTE_MS;
    int slot = (int)(minute % AV_TIMING_WINDOWS);
    if (rec->window_minute[slot] != minute) {
        memset(&rec->window[slot], 0, sizeof rec->window[slot]);
        rec->window_minute[slot] = minute;
    }
    counts_add(&rec->total, a);
    counts_add(&rec->window[slot], a);
    rec->last_ms = now_ms;
}

static uint64_t evict(av_cache_t *self, MDB_txn *txn, uint64_t count);

static int
put_txn(av_cache_t *self, const av_put_t *const *puts, size_t n, uint64_t now_ms)
{
    MDB_txn *txn;
    timing_acc_t *acc = calloc(TIMING_BATCH_REGISTRIES, sizeof *acc);
    size_t n_acc = 0;
    if (!acc)
        return ENOMEM;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const av_put_t *p = puts[i];
        if (p->ttl_s > 0)
            rc = store_answer(self, txn, p, now_ms);
        if (rc == 0 && p->timing && p->answer.registry.len && p->answer.registry.len <= AV_REGISTRY_MAX) {
            timing_acc_t *t = timing_for(self, txn, acc, &n_acc, p->answer.registry);
            if (t)
                timing_add(&t->rec, &p->answer, now_ms);
        }
    }
    if (rc == 0)
        rc = flush_timing(self, txn, acc, n_acc);
    free(acc);
    if (rc == 0) {
        MDB_stat st;
        if (mdb_stat(txn, self->answers, &st) == 0 && st.ms_entries > self->max_entries)
            evict(self, txn, st.ms_entries - self->max_entries);
    }
    if (rc != 0) {
        if (txn)
            mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

int
av_cache_put_batch(av_cache_t *self, const av_put_t *const *puts, size_t n, uint64_t now_ms)
{
    int rc = put_txn(self, puts, n, now_ms);
    if (rc == MDB_MAP_FULL) {
        /* The map is smaller than max_entries needs: make room by evicting
         * the soonest-expiring tenth and say so. */
        MDB_txn *txn;
        MDB_stat st;
        if (mdb_txn_begin(self->env, NULL, 0, &txn) == 0) {
            if (mdb_stat(txn, self->answers, &st) == 0)
                evict(self, txn, st.ms_entries / 10 + n);
            if (mdb_txn_commit(txn) != 0)
                av_log_err("cache: cannot make room");
        }
        av_log_warning("cache map full (raise cache.map_size_mb or lower cache.max_entries): evicted entries");
        rc = put_txn(self, puts, n, now_ms);
    }
    if (rc != 0) {
        av_log_err("cache: cannot store %zu answers: %s", n, mdb_strerror(rc));
        return -1;
    }
    return 0;
}

/* Deletes entries in expiry order: the expired first, then (evict) those
 * closest to expiring. */
static uint64_t
delete_by_expiry(av_cache_t *self, MDB_txn *txn, uint64_t max, uint64_t before_ms)
{
    MDB_cursor *cur;
    MDB_val key, val;
    uint64_t n = 0;
    if (mdb_cursor_open(txn, self->expiry, &cur) != 0)
        return 0;
    while (n < max && mdb_cursor_get(cur, &key, &val, MDB_FIRST) == 0) {
        if (key.mv_size < 8 || key.mv_size - 8 > AV_DOMAIN_MAX || av_be64_get(key.mv_data) > before_ms)
            break;
        /* The key points into a page the delete rewrites: copy the name
         * out first, or the second delete reads another entry's. */
        uint8_t copy[AV_DOMAIN_MAX];
        MDB_val name = { key.mv_size - 8, copy };
        memcpy(copy, (char *)key.mv_data + 8, name.mv_size);
        if (mdb_cursor_del(cur, 0) != 0)
            break;
        mdb_del(txn, self->answers, &name, NULL);
        n++;
    }
    mdb_cursor_close(cur);
    return n;
}

static uint64_t
evict(av_cache_t *self, MDB_txn *txn, uint64_t count)
{
    return delete_by_expiry(self, txn, count, UINT64_MAX);
}

uint64_t
av_cache_sweep(av_cache_t *self, uint64_t now_ms, uint64_t max)
{
    MDB_txn *txn;
    if (mdb_txn_begin(self->env, NULL, 0, &txn) != 0)
        return 0;
    uint64_t n = delete_by_expiry(self, txn, max, now_ms);
    if (mdb_txn_commit(txn) != 0)
        return 0;
    return n;
}

int64_t
av_cache_purge(av_cache_t *self, const char *name)
{
    MDB_txn *txn;
    MDB_stat st;
    int64_t n = 0;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc != 0)
        return -1;
    if (name) {
        rc = delete_entry(self, txn, name, strlen(name));
        n = rc == 0 ? 1 : 0;
        if (rc == MDB_NOTFOUND)
            rc = 0;
    } else {
        if ((rc = mdb_stat(txn, self->answers, &st)) == 0)
            n = (int64_t)st.ms_entries;
        if (rc == 0)
            rc = mdb_drop(txn, self->answers, 0);
        if (rc == 0)
            rc = mdb_drop(txn, self->expiry, 0);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    return mdb_txn_commit(txn) == 0 ? n : -1;
}

uint64_t
av_cache_entries(av_cache_t *self)
{
    MDB_txn *txn;
    MDB_stat st;
    uint64_t n = 0;
    if (read_txn(self, &txn) != 0)
        return 0;
    if (mdb_stat(txn, self->answers, &st) == 0)
        n = st.ms_entries;
    end_read(self, txn);
    return n;
}

void
av_cache_sync(av_cache_t *self)
{
    mdb_env_sync(self->env, 1);
}

int
av_cache_reader_check(av_cache_t *self)
{
    int dead = 0;
    mdb_reader_check(self->env, &dead);
    return dead;
}

int
av_cache_timing(av_cache_t *self, uint64_t now_ms, av_timing_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    if (read_txn(self, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, self->timing, &cur) != 0) {
        end_read(self, txn);
        return -1;
    }
    uint64_t minute = now_ms / MINUTE_MS;
    av_timing_t *t = malloc(sizeof *t);
    timing_record_t *rec = malloc(sizeof *rec);
    int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (t && rec && rc == 0) {
        if (val.mv_size == sizeof *rec) {
            memcpy(rec, val.mv_data, sizeof *rec);
            memset(t, 0, sizeof *t);
            av_str_copy(t->registry, sizeof t->registry, (av_str_t){ key.mv_data, (uint32_t)key.mv_size });
            t->total = rec->total;
            t->last_ms = rec->last_ms;
            for (int w = 0; w < AV_TIMING_WINDOWS; w++)
                if (rec->window_minute[w] + AV_TIMING_WINDOWS > minute)
                    counts_sum(&t->recent, &rec->window[w]);
            fn(arg, t);
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    free(t);
    free(rec);
    mdb_cursor_close(cur);
    end_read(self, txn);
    return 0;
}
