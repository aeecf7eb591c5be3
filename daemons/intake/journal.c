/* The request journal: every accepted request (but gateway ones, whose TCP
 * connection cannot outlive the process) is in LMDB before it is
 * forwarded, and leaves it before its last answer is sent. Writes are
 * grouped: the changes of one loop turn are one transaction. Commits do not
 * fsync unless intake.journal_sync is set; the environment is synced every
 * second instead. Records are msgpack maps keyed by the big-endian rid. */
#include "journal.h"

#include "av_lmdb.h"

#include <stdlib.h>
#include <string.h>

#define RECORD_VERSION 1
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
    bool sync_each_commit;
    op_t *ops;
    size_t n_ops;
    size_t cap_ops;
    msgpack_sbuffer sbuf;
    sd_event_source *sync_timer;
    uint64_t *commits;
    uint64_t *commit_failures;
};

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
    j->sync_each_commit = cfg->journal_sync;
    msgpack_sbuffer_init(&j->sbuf);
    j->commits = av_daemon_counter(d, "journal_commits");
    j->commit_failures = av_daemon_counter(d, "journal_commit_failures");
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
    if (!cfg->journal_sync && !(j->sync_timer = av_daemon_every(d, SYNC_INTERVAL_MS, on_sync, j)))
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
journal_put(journal_t *j, const request_t *r)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(&j->sbuf);
    msgpack_packer_init(&pk, &j->sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 10);
    av_pack_kv_uint(&pk, "version", RECORD_VERSION);
    av_pack_kv_uint(&pk, "origin", r->origin);
    av_pack_kv_strn(&pk, "id", r->id);
    av_pack_kv_bool(&pk, "batch", r->batch);
    av_pack_kv_bool(&pk, "fresh", r->fresh);
    av_pack_kv_bool(&pk, "raw", r->raw);
    av_pack_kv_uint(&pk, "deadline_at", r->deadline_at_ms);
    av_pack_str(&pk, "peer");
    size_t peer_len = r->env.identity ? zframe_size(r->env.identity) : 0;
    msgpack_pack_bin(&pk, peer_len);
    if (peer_len)
        msgpack_pack_bin_body(&pk, zframe_data(r->env.identity), peer_len);
    av_pack_kv_bool(&pk, "delimiter", r->env.delimiter);
    /* Names already answered (pushed batches) are left out for good: a
     * restart must not publish them again. */
    uint32_t left = 0;
    for (uint32_t i = 0; i < r->n_names; i++)
        left += !r->done[i];
    av_pack_str(&pk, "names");
    msgpack_pack_array(&pk, left);
    for (uint32_t i = 0; i < r->n_names; i++) {
        if (r->done[i])
            continue;
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, i);
        av_pack_strn(&pk, r->names[i]);
    }
    op_t *op = add_op(j);
    if (!op || !(op->bytes = malloc(j->sbuf.size))) {
        if (op)
            j->n_ops--;
        return -1;
    }
    op->kind = OP_PUT;
    op->rid = r->rid;
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

bool
journal_pending(const journal_t *j)
{
    return j && j->n_ops > 0;
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
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        uint64_t rid = key.mv_size == 8 ? av_be64_get(key.mv_data) : 0;
        /* Our own records, but from disk: decoded defensively all the same. */
        if (rid && msgpack_unpack_next(&up, val.mv_data, val.mv_size, NULL) == MSGPACK_UNPACK_SUCCESS &&
            up.data.type == MSGPACK_OBJECT_MAP && fn(arg, rid, &up.data) == 0)
            loaded++;
        else {
            bad++;
            journal_delete(j, rid);
        }
        msgpack_unpacked_destroy(&up);
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (loaded || bad)
        av_log_notice("journal: %u requests to resubmit, %u unreadable records dropped", loaded, bad);
    return 0;
}
