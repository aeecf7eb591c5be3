/* The request journal: every accepted request (but gateway ones, whose TCP
 * connection cannot outlive the process) is in LMDB before it is
 * forwarded, and leaves it before its last answer is sent. Writes are
 * grouped: the changes of one loop turn are one transaction. Commits do not
 * fsync unless intake.journal_sync is set; the environment is synced every
 * second instead. Records are msgpack maps keyed by the big-endian rid;
 * this file is their one encoder and decoder. */
#include "journal.h"

#include "av_lmdb.h"

#include <stdlib.h>
#include <string.h>

#define RECORD_VERSION 1
#define RECORD_PAIRS 10
#define PEER_MAX 255           /* ZeroMQ's bound on a routing id */
#define SYNC_INTERVAL_MS 1000

typedef enum { OP_PUT, OP_DELETE } op_kind_t;

typedef struct {
    op_kind_t kind;
    uint64_t rid;
    char *bytes;
    size_t size;
} op_t;

struct journal {
    av_daemon_t *d;
    MDB_env *env;
    MDB_dbi requests;
    op_t *ops;
    size_t n_ops;
    size_t cap_ops;
    msgpack_sbuffer sbuf;
    sd_event_source *sync_timer;
    uint64_t *commits;
    uint64_t *commit_failures;
    uint64_t own_counters[2];  /* without a daemon */
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

static void
on_sync(av_daemon_t *d, void *arg)
{
    (void)d;
    journal_t *j = arg;
    mdb_env_sync(j->env, 1);
}

journal_t *
journal_open(av_daemon_t *d, const av_intake_cfg_t *cfg)
{
    journal_t *j = calloc(1, sizeof *j);
    MDB_txn *txn;
    if (!j)
        return NULL;
    j->d = d;
    msgpack_sbuffer_init(&j->sbuf);
    j->commits = d ? av_daemon_counter(d, "journal_commits") : &j->own_counters[0];
    j->commit_failures = d ? av_daemon_counter(d, "journal_commit_failures") : &j->own_counters[1];
    unsigned flags = cfg->journal_sync ? 0 : MDB_NOSYNC;
    if (av_lmdb_open(d, cfg->journal, flags, cfg->journal_map_mb, 2, &j->env) < 0)
        goto fail;
    int rc = mdb_txn_begin(j->env, NULL, 0, &txn);
    if (rc == 0 && (rc = mdb_dbi_open(txn, "requests", MDB_CREATE, &j->requests)) == 0)
        rc = mdb_txn_commit(txn);
    else if (rc == 0)
        mdb_txn_abort(txn);
    if (rc != 0) {
        av_log_err("cannot open the journal in %s: %s", cfg->journal, mdb_strerror(rc));
        goto fail;
    }
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
    for (size_t i = 0; i < j->n_ops; i++)
        free(j->ops[i].bytes);
    free(j->ops);
    sd_event_source_disable_unref(j->sync_timer);
    if (j->env) {
        mdb_env_sync(j->env, 1);
        mdb_env_close(j->env);
    }
    msgpack_sbuffer_destroy(&j->sbuf);
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

int
journal_put(journal_t *j, const journal_record_t *rec)
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
    op->kind = OP_PUT;
    op->rid = rec->rid;
    memcpy(op->bytes, j->sbuf.data, j->sbuf.size);
    op->size = j->sbuf.size;
    return 0;
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

int
journal_commit(journal_t *j)
{
    MDB_txn *txn;
    int rc = 0;
    if (j->n_ops == 0)
        return 0;
    rc = mdb_txn_begin(j->env, NULL, 0, &txn);
    for (size_t i = 0; rc == 0 && i < j->n_ops; i++) {
        uint8_t keybuf[8];
        av_be64_put(keybuf, j->ops[i].rid);
        MDB_val key = { 8, keybuf };
        if (j->ops[i].kind == OP_PUT) {
            MDB_val val = { j->ops[i].size, j->ops[i].bytes };
            rc = mdb_put(txn, j->requests, &key, &val, 0);
        } else {
            rc = mdb_del(txn, j->requests, &key, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        }
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    for (size_t i = 0; i < j->n_ops; i++)
        free(j->ops[i].bytes);
    j->n_ops = 0;
    if (rc != 0) {
        (*j->commit_failures)++;
        av_report(j->d, AV_LOG_ERR, NULL, "journal_failed",
                  "cannot write the request journal: %s (requests are handled but not durable)", mdb_strerror(rc));
        return -1;
    }
    (*j->commits)++;
    return 0;
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
