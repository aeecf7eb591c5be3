/* The request journal: every accepted request (but gateway ones, whose TCP
 * connection cannot outlive the process) is in LMDB before it is
 * forwarded, and leaves it before its last answer is sent. Writes are
 * grouped: the changes of one loop turn are one transaction. Commits do not
 * fsync unless intake.journal_sync is set; the environment is synced every
 * second instead. Records are msgpack maps keyed by the big-endian rid;
 * this file is their one encoder and decoder. A commit that fails (a full
 * disk) keeps the deletes and rewrites it could not write for the next
 * one, and gives up the new records, whose requests are then refused. */
#include "journal.h"

#include "av_lmdb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define RECORD_VERSION 1
#define RECORD_PAIRS 10
#define PEER_MAX 255           /* ZeroMQ's bound on a routing id */
#define SYNC_INTERVAL_MS 1000
#define REPORT_INTERVAL_US (1000 * 1000)
/* A short write with less than this left on the filesystem is a full
 * disk: a busy turn's commit writes about this much. */
#define FULL_BELOW_BYTES (1024 * 1024)

typedef enum {
    OP_PUT,      /* kept until written */
    OP_PUT_NEW,  /* written with the next commit, or dropped */
    OP_DELETE,   /* kept until written */
} op_kind_t;

typedef struct {
    op_kind_t kind;
    uint64_t rid;
    char *bytes;
    size_t size;
} op_t;

struct journal {
    av_daemon_t *d;
    char *path;                /* to reopen after an LMDB panic */
    unsigned flags;
    uint32_t map_mb;
    MDB_env *env;
    MDB_dbi requests;
    op_t *ops;
    size_t n_ops;
    size_t cap_ops;
    size_t n_new;              /* of ops, OP_PUT_NEW */
    msgpack_sbuffer sbuf;
    sd_event_source *sync_timer;
    uint64_t *commits;
    uint64_t *commit_failures;
    uint64_t *records_refused;
    uint64_t own_counters[3];  /* without a daemon */
    /* Since a commit failed, until one succeeds: */
    int failure;               /* the last error; 0: writing fine */
    uint64_t failing_since_us;
    uint64_t next_try_us;
    uint64_t failed_commits;   /* since failing_since_us */
    uint64_t refused;
    uint64_t reported_us;      /* the last report, and its counts */
    uint64_t reported_failed_commits;
    uint64_t reported_refused;
};

/* ---- the record ---------------------------------------------------------- */

int
journal_record_encode(msgpack_sbuffer *sbuf, const journal_record_t *rec)
{
    size_t before = sbuf->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, RECORD_PAIRS);
    av_pack_kv_uint(&pk, "version", RECORD_VERSION);
    av_pack_kv_uint(&pk, "origin", rec->origin);
    av_pack_kv_strn(&pk, "id", rec->id);
    av_pack_kv_bool(&pk, "batch", rec->batch);
    av_pack_kv_bool(&pk, "fresh", rec->fresh);
    av_pack_kv_bool(&pk, "raw", rec->raw);
    av_pack_kv_uint(&pk, "deadline_at", rec->deadline_at_ms);
    av_pack_str(&pk, "peer");
    msgpack_pack_bin(&pk, rec->peer.len);
    if (rec->peer.len)
        msgpack_pack_bin_body(&pk, rec->peer.ptr, rec->peer.len);
    av_pack_kv_bool(&pk, "delimiter", rec->delimiter);
    uint32_t left = 0;
    for (uint32_t i = 0; i < rec->n_names; i++)
        left += !rec->answered[i];
    av_pack_str(&pk, "names");
    msgpack_pack_array(&pk, left);
    for (uint32_t i = 0; i < rec->n_names; i++) {
        if (rec->answered[i])
            continue;
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, i);
        av_pack_strn(&pk, rec->names[i]);
    }
    return sbuf->size > before ? 0 : -1;
}

/* One entry of `names`: [position, name]. */
static bool
name_entry(const msgpack_object *e, uint32_t *idx, av_str_t *name)
{
    if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2)
        return false;
    const msgpack_object *pos = &e->via.array.ptr[0], *s = &e->via.array.ptr[1];
    if (pos->type != MSGPACK_OBJECT_POSITIVE_INTEGER || pos->via.u64 >= AV_BATCH_MAX ||
        s->type != MSGPACK_OBJECT_STR || s->via.str.size > AV_NAME_MAX)
        return false;
    *idx = (uint32_t)pos->via.u64;
    *name = (av_str_t){ s->via.str.ptr, s->via.str.size };
    return true;
}

static av_str_t
copy_into(char **at, av_str_t s)
{
    av_str_t copy = { *at, s.len };
    if (s.len)
        memcpy(*at, s.ptr, s.len);
    *at += s.len;
    return copy;
}

/* Our own records, but from disk: read defensively all the same. */
static int
read_record(journal_record_t *rec, const msgpack_object *map)
{
    uint64_t origin = 0;
    av_str_t id;
    const msgpack_object *names = av_obj_get(map, "names");
    const msgpack_object *peer = av_obj_get(map, "peer");
    if (!av_obj_get_uint(map, "origin", &origin) || (origin != ORIGIN_PULL && origin != ORIGIN_ROUTER) ||
        !av_obj_get_str(map, "id", &id) || id.len > AV_ID_MAX ||
        !av_obj_get_uint(map, "deadline_at", &rec->deadline_at_ms) || !names ||
        names->type != MSGPACK_OBJECT_ARRAY || names->via.array.size > AV_BATCH_MAX || !peer ||
        peer->type != MSGPACK_OBJECT_BIN || peer->via.bin.size > PEER_MAX)
        return -1;
    av_obj_get_bool(map, "batch", &rec->batch);
    av_obj_get_bool(map, "fresh", &rec->fresh);
    av_obj_get_bool(map, "raw", &rec->raw);
    av_obj_get_bool(map, "delimiter", &rec->delimiter);
    /* n is the request's original size: positions not in the record are
     * names already answered. */
    uint32_t n = 0, idx;
    size_t bytes = id.len + peer->via.bin.size;
    av_str_t name;
    for (uint32_t i = 0; i < names->via.array.size; i++) {
        if (!name_entry(&names->via.array.ptr[i], &idx, &name))
            return -1;
        if (idx + 1 > n)
            n = idx + 1;
        bytes += name.len;
    }
    if (n == 0)
        return -1;
    rec->origin = (origin_t)origin;
    rec->n_names = n;
    rec->names = calloc(n, sizeof *rec->names);
    rec->answered = malloc(n);
    rec->strings = malloc(bytes ? bytes : 1);
    if (!rec->names || !rec->answered || !rec->strings)
        return -1;
    char *at = rec->strings;
    rec->id = copy_into(&at, id);
    rec->peer = copy_into(&at, (av_str_t){ peer->via.bin.ptr, peer->via.bin.size });
    memset(rec->answered, 1, n);
    for (uint32_t i = 0; i < names->via.array.size; i++) {
        name_entry(&names->via.array.ptr[i], &idx, &name);
        rec->names[idx] = copy_into(&at, name);
        rec->answered[idx] = 0;
    }
    return 0;
}

int
journal_record_decode(journal_record_t *rec, uint64_t rid, const void *data, size_t size)
{
    msgpack_unpacked up;
    int rc = -1;
    memset(rec, 0, sizeof *rec);
    rec->rid = rid;
    msgpack_unpacked_init(&up);
    if (rid && msgpack_unpack_next(&up, data, size, NULL) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_MAP)
        rc = read_record(rec, &up.data);
    msgpack_unpacked_destroy(&up);
    if (rc < 0)
        journal_record_clear(rec);
    return rc;
}

void
journal_record_clear(journal_record_t *rec)
{
    free(rec->names);
    free(rec->answered);
    free(rec->strings);
    rec->names = NULL;
    rec->answered = NULL;
    rec->strings = NULL;
}

/* ---- the environment ----------------------------------------------------- */

/* ---- why a write failed ---------------------------------------------------- */

static bool
filesystem_full(const char *dir)
{
    struct statvfs st;
    return statvfs(dir, &st) == 0 && (uint64_t)st.f_bavail * st.f_frsize < FULL_BELOW_BYTES;
}

const char *
journal_describe_failure(int rc, const char *dir, char *cause, size_t len)
{
    switch (rc) {
    case MDB_MAP_FULL:
        snprintf(cause, len, "its map is full (MDB_MAP_FULL: intake.journal_map_mb is too small)");
        return "journal_map_full";
    case ENOSPC:
    case EDQUOT:
        snprintf(cause, len, "%s", strerror(rc));
        return "journal_no_space";
    case EIO:
        /* LMDB says EIO for a write that wrote less than asked, which is
         * what a filesystem filling up in the middle of a commit does. */
        if (dir && filesystem_full(dir)) {
            snprintf(cause, len, "%s (a short write, reported as EIO)", strerror(ENOSPC));
            return "journal_no_space";
        }
        snprintf(cause, len, "%s", strerror(EIO));
        return "journal_io_error";
    default:
        snprintf(cause, len, "%s", mdb_strerror(rc));
        return "journal_failed";
    }
}

/* ---- the environment ----------------------------------------------------- */

static void
on_sync(av_daemon_t *d, void *arg)
{
    (void)d;
    journal_t *j = arg;
    int rc = j->env ? mdb_env_sync(j->env, 1) : 0;
    if (rc != 0) {
        char cause[160];
        const char *code = journal_describe_failure(rc, j->path, cause, sizeof cause);
        av_report(j->d, AV_LOG_ERR, NULL, code, "cannot sync the request journal in %s: %s", j->path, cause);
    }
}

static int
open_env(journal_t *j)
{
    static const char *const names[] = { "requests" };
    if (av_lmdb_open(j->d, j->path, j->flags, j->map_mb, 2, &j->env) < 0)
        return -1;
    int rc = av_lmdb_open_dbis(j->env, true, names, &j->requests, 1);
    if (rc != 0) {
        av_log_err("cannot open the journal in %s: %s", j->path, mdb_strerror(rc));
        mdb_env_close(j->env);
        j->env = NULL;
        return -1;
    }
    return 0;
}

journal_t *
journal_open(av_daemon_t *d, const av_intake_cfg_t *cfg)
{
    journal_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->d = d;
    msgpack_sbuffer_init(&j->sbuf);
    j->commits = d ? av_daemon_counter(d, "journal_commits") : &j->own_counters[0];
    j->commit_failures = d ? av_daemon_counter(d, "journal_commit_failures") : &j->own_counters[1];
    j->records_refused = d ? av_daemon_counter(d, "journal_records_refused") : &j->own_counters[2];
    j->flags = cfg->journal_sync ? 0 : MDB_NOSYNC;
    j->map_mb = cfg->journal_map_mb;
    if (!(j->path = strdup(cfg->journal)) || open_env(j) < 0)
        goto fail;
    if (d && !cfg->journal_sync && !(j->sync_timer = av_daemon_every(d, SYNC_INTERVAL_MS, on_sync, j)))
        goto fail;
    return j;
fail:
    journal_close(&j);
    return NULL;
}

void
journal_close(journal_t **self_p)
{
    journal_t *j = self_p ? *self_p : NULL;
    if (!j)
        return;
    size_t kept = j->n_ops - j->n_new;
    if (kept)
        av_log_warning("journal: %zu changes could not be written; the next intake finds their requests as "
                       "they were and answers what was not sent",
                       kept);
    for (size_t i = 0; i < j->n_ops; i++)
        free(j->ops[i].bytes);
    free(j->ops);
    sd_event_source_disable_unref(j->sync_timer);
    av_lmdb_close(&j->env);
    msgpack_sbuffer_destroy(&j->sbuf);
    free(j->path);
    free(j);
    *self_p = NULL;
}

/* ---- changes --------------------------------------------------------------- */

static op_t *
add_op(journal_t *j)
{
    if (j->n_ops == j->cap_ops) {
        size_t cap = j->cap_ops ? 2 * j->cap_ops : 256;
        op_t *grown = realloc(j->ops, cap * sizeof *grown);
        if (!grown)
            return NULL;
        j->ops = grown;
        j->cap_ops = cap;
    }
    op_t *op = &j->ops[j->n_ops++];
    memset(op, 0, sizeof *op);
    return op;
}

static int
queue_put(journal_t *j, const journal_record_t *rec, op_kind_t kind)
{
    msgpack_sbuffer_clear(&j->sbuf);
    if (journal_record_encode(&j->sbuf, rec) < 0)
        return -1;
    op_t *op = add_op(j);
    if (!op || !(op->bytes = malloc(j->sbuf.size))) {
        if (op)
            j->n_ops--;
        return -1;
    }
    op->kind = kind;
    op->rid = rec->rid;
    memcpy(op->bytes, j->sbuf.data, j->sbuf.size);
    op->size = j->sbuf.size;
    j->n_new += kind == OP_PUT_NEW;
    return 0;
}

int
journal_put(journal_t *j, const journal_record_t *rec)
{
    return queue_put(j, rec, OP_PUT);
}

int
journal_put_new(journal_t *j, const journal_record_t *rec)
{
    return queue_put(j, rec, OP_PUT_NEW);
}

int
journal_delete(journal_t *j, uint64_t rid)
{
    op_t *op = add_op(j);
    if (!op)
        return -1;
    op->kind = OP_DELETE;
    op->rid = rid;
    return 0;
}

/* One transaction: every queued change, or (with_new false) all but the
 * new records. Returns 0 or the LMDB error; nothing is written on error. */
static int
write_ops(journal_t *j, bool with_new)
{
    MDB_txn *txn = NULL;
    int rc = j->env ? mdb_txn_begin(j->env, NULL, 0, &txn) : MDB_PANIC;
    if (rc == MDB_PANIC) {
        /* A failed write of LMDB's meta page leaves the environment
         * unusable until it is opened again. */
        av_log_warning("journal: LMDB cannot go on after a failed write; opening %s again", j->path);
        if (j->env)
            mdb_env_close(j->env);
        j->env = NULL;
        if (open_env(j) < 0)
            return MDB_PANIC; /* tried again with the next commit */
        rc = mdb_txn_begin(j->env, NULL, 0, &txn);
    }
    for (size_t i = 0; rc == 0 && i < j->n_ops; i++) {
        const op_t *op = &j->ops[i];
        if (op->kind == OP_PUT_NEW && !with_new)
            continue;
        uint8_t keybuf[8];
        av_be64_put(keybuf, op->rid);
        MDB_val key = { 8, keybuf };
        if (op->kind == OP_DELETE) {
            rc = mdb_del(txn, j->requests, &key, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        } else {
            MDB_val val = { op->size, op->bytes };
            rc = mdb_put(txn, j->requests, &key, &val, 0);
        }
    }
    if (rc == 0)
        return mdb_txn_commit(txn); /* aborts it on failure */
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

static void
clear_ops(journal_t *j)
{
    for (size_t i = 0; i < j->n_ops; i++)
        free(j->ops[i].bytes);
    j->n_ops = 0;
    j->n_new = 0;
}

/* Gives up the new records (their requests are refused); the other
 * changes keep their order. */
static void
drop_new(journal_t *j)
{
    size_t kept = 0;
    for (size_t i = 0; i < j->n_ops; i++) {
        if (j->ops[i].kind == OP_PUT_NEW)
            free(j->ops[i].bytes);
        else
            j->ops[kept++] = j->ops[i];
    }
    j->n_ops = kept;
    j->refused += j->n_new;
    *j->records_refused += j->n_new;
    j->n_new = 0;
}

/* Says what failed and how often, at most once a second: the counts are
 * those since the previous report. */
static void
report_failure(journal_t *j, uint64_t now_us)
{
    if (j->reported_us && now_us - j->reported_us < REPORT_INTERVAL_US)
        return;
    char cause[160];
    const char *code = journal_describe_failure(j->failure, j->path, cause, sizeof cause);
    uint64_t since_us = j->reported_us > j->failing_since_us ? j->reported_us : j->failing_since_us;
    av_report(j->d, AV_LOG_ERR, NULL, code,
              "cannot write the request journal in %s: %s; in the last %.1f s: %llu failed commits, %llu new "
              "requests refused (unknown storage); %zu changes waiting to be written (the answers of their "
              "requests wait with them)",
              j->path, cause, (double)(now_us - since_us) / 1e6,
              (unsigned long long)(j->failed_commits - j->reported_failed_commits),
              (unsigned long long)(j->refused - j->reported_refused), j->n_ops - j->n_new);
    /* Taken after av_report, whose own once-a-second rule then never
     * holds back one of these. */
    j->reported_us = av_mono_us();
    j->reported_failed_commits = j->failed_commits;
    j->reported_refused = j->refused;
}

static void
failed(journal_t *j, int rc, uint64_t now_us)
{
    if (!j->failure) {
        /* reported_us stays: a report soon after the last one waits, so
         * that av_report's own once-a-second rule never eats its counts. */
        j->failing_since_us = now_us;
        j->failed_commits = j->refused = 0;
        j->reported_failed_commits = j->reported_refused = 0;
    }
    j->failure = rc;
    j->failed_commits++;
    (*j->commit_failures)++;
    j->next_try_us = av_mono_us() + (uint64_t)JOURNAL_RETRY_MS * 1000;
}

static void
recovered(journal_t *j, uint64_t now_us)
{
    av_report(j->d, AV_LOG_NOTICE, NULL, "journal_recovered",
              "the request journal in %s is written again after %.1f s: %llu failed commits, %llu new requests "
              "refused (unknown storage)",
              j->path, (double)(now_us - j->failing_since_us) / 1e6, (unsigned long long)j->failed_commits,
              (unsigned long long)j->refused);
    j->failure = 0;
}

static int
commit(journal_t *j, bool now)
{
    if (j->n_ops == 0)
        return 0;
    uint64_t now_us = av_mono_us();
    if (j->failure && !now && now_us < j->next_try_us) {
        /* Failing: new requests are refused until the next try. */
        if (j->n_new) {
            drop_new(j);
            report_failure(j, now_us);
        }
        return -1;
    }
    int rc = write_ops(j, true);
    if (rc == 0) {
        /* Deletes alone may fit in pages a full disk still has: only new
         * records written say that the journal takes requests again. */
        bool took_new = j->n_new > 0;
        clear_ops(j);
        (*j->commits)++;
        if (j->failure && took_new)
            recovered(j, now_us);
        return 0;
    }
    failed(j, rc, now_us);
    if (j->n_new) {
        /* Deletes need little room, often none a commit has not freed:
         * what was answered may leave even when new requests cannot come
         * in. */
        drop_new(j);
        if (j->n_ops && write_ops(j, false) == 0) {
            clear_ops(j);
            (*j->commits)++;
        }
    }
    report_failure(j, now_us);
    return -1;
}

int
journal_commit(journal_t *j)
{
    return commit(j, false);
}

int
journal_commit_now(journal_t *j)
{
    return commit(j, true);
}

size_t
journal_pending(const journal_t *j)
{
    return j ? j->n_ops - j->n_new : 0;
}

bool
journal_retry_due(const journal_t *j, uint64_t now_us)
{
    return j && j->n_ops > j->n_new && now_us >= j->next_try_us;
}

int
journal_load(journal_t *j, journal_load_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    uint32_t loaded = 0, bad = 0;
    if (mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, j->requests, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (rc == 0) {
        journal_record_t rec;
        uint64_t rid = key.mv_size == 8 ? av_be64_get(key.mv_data) : 0;
        if (journal_record_decode(&rec, rid, val.mv_data, val.mv_size) == 0 && fn(arg, &rec) == 0)
            loaded++;
        else {
            bad++;
            journal_delete(j, rid);
        }
        journal_record_clear(&rec);
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (loaded || bad)
        av_log_notice("journal: %u requests to resubmit, %u unreadable records dropped", loaded, bad);
    return 0;
}

/* ---- a damaged journal ------------------------------------------------------ */

int
journal_check(const av_intake_cfg_t *cfg, char *why, size_t whylen)
{
    char data[PATH_MAX];
    if (snprintf(data, sizeof data, "%s/data.mdb", cfg->journal) >= (int)sizeof data) {
        snprintf(why, whylen, "path too long");
        return -2;
    }
    return av_lmdb_check_file_deep(data, why, whylen);
}

/* The records read back from a damaged journal, before it is moved aside. */
typedef struct {
    journal_record_t *recs;
    size_t n;
    size_t cap;
    uint64_t unreadable;
    bool out_of_memory;
} salvaged_t;

static void
salvage_entry(void *arg, const MDB_val *key, const MDB_val *val)
{
    salvaged_t *s = arg;
    journal_record_t rec;
    uint64_t rid = key->mv_size == 8 ? av_be64_get(key->mv_data) : 0;
    if (journal_record_decode(&rec, rid, val->mv_data, val->mv_size) != 0) {
        s->unreadable++;
        return;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        journal_record_t *grown = realloc(s->recs, cap * sizeof *grown);
        if (!grown) {
            journal_record_clear(&rec);
            s->out_of_memory = true;
            return;
        }
        s->recs = grown;
        s->cap = cap;
    }
    s->recs[s->n++] = rec;
}

/* Records written per transaction into the new journal. */
#define SALVAGE_BATCH 1024

/* The new journal's files, owned as the damaged one was (availctl may run
 * as root, intake as its user). */
static void
own_like(const char *dir, const struct stat *st)
{
    static const char *const files[] = { "data.mdb", "lock.mdb" };
    if (geteuid() != 0)
        return;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (chown(path, st->st_uid, st->st_gid) < 0 && errno != ENOENT)
            av_log_warning("cannot give %s to uid %u: %s", path, (unsigned)st->st_uid, strerror(errno));
    }
}

int
journal_salvage(const av_intake_cfg_t *cfg, journal_salvage_t *out, char *why, size_t whylen)
{
    char data[PATH_MAX];
    struct stat st;
    salvaged_t s = { 0 };
    av_lmdb_salvage_t read;
    journal_t *j = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    snprintf(why, whylen, "%s", "");
    switch (journal_check(cfg, out->damage, sizeof out->damage)) {
    case 1:
        snprintf(why, whylen, "there is no journal in %s: nothing to salvage", cfg->journal);
        return 1;
    case 0:
        snprintf(why, whylen, "the journal in %s is sound: nothing to salvage", cfg->journal);
        return 1;
    case -2:
        snprintf(why, whylen, "cannot check the journal in %s: %s", cfg->journal, out->damage);
        return -1;
    }
    snprintf(data, sizeof data, "%s/data.mdb", cfg->journal);
    if (stat(data, &st) < 0) {
        snprintf(why, whylen, "%s: %s", data, strerror(errno));
        return -1;
    }
    /* Read first and move aside after: a salvage cut short leaves the
     * journal as it was, to be salvaged again. */
    bool counted = av_lmdb_salvage(data, "requests", salvage_entry, &s, &read, out->unread, sizeof out->unread) == 0;
    if (s.out_of_memory) {
        snprintf(why, whylen, "out of memory reading %s", data);
        goto done;
    }
    if (av_lmdb_set_aside(cfg->journal, out->aside, sizeof out->aside) < 0) {
        snprintf(why, whylen, "cannot move %s aside: %s", data, strerror(errno));
        goto done;
    }
    if (!(j = journal_open(NULL, cfg))) {
        snprintf(why, whylen, "moved the damaged journal to %s, but cannot create a new one in %s (see above)",
                 out->aside, cfg->journal);
        goto done;
    }
    for (size_t i = 0; i < s.n; i++) {
        if (journal_put(j, &s.recs[i]) < 0 || ((i + 1) % SALVAGE_BATCH == 0 && journal_commit(j) < 0)) {
            snprintf(why, whylen, "moved the damaged journal to %s, but cannot write the new one in %s (see above)",
                     out->aside, cfg->journal);
            goto done;
        }
    }
    if (journal_commit(j) < 0) {
        snprintf(why, whylen, "moved the damaged journal to %s, but cannot write the new one in %s (see above)",
                 out->aside, cfg->journal);
        goto done;
    }
    out->saved = s.n;
    out->unreadable = s.unreadable;
    out->counted = counted;
    out->lost = counted && read.entries > s.n ? read.entries - s.n : 0;
    out->pages_lost = read.pages_lost;
    out->one_meta_garbage = read.one_meta_garbage;
    rc = 0;
done:
    journal_close(&j);
    if (rc == 0 || out->aside[0])
        own_like(cfg->journal, &st);
    for (size_t i = 0; i < s.n; i++)
        journal_record_clear(&s.recs[i]);
    free(s.recs);
    return rc;
}
