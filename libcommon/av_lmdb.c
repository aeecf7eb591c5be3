/* Opening LMDB environments, and the write patterns the stores share. */
#include "av_lmdb.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

void
av_be64_put(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t
av_be64_get(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | in[i];
    return v;
}

int
av_lmdb_open(av_daemon_t *d, const char *path, unsigned flags, uint32_t map_mb, unsigned max_dbs, MDB_env **out)
{
    MDB_env *env = NULL;
    int rc;
    *out = NULL;
    if (!(flags & MDB_RDONLY) && mkdir(path, 0750) < 0 && errno != EEXIST) {
        av_log_err("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if ((rc = mdb_env_create(&env)) != 0)
        goto fail;
    if (max_dbs && (rc = mdb_env_set_maxdbs(env, max_dbs)) != 0)
        goto fail;
    if (map_mb && (rc = mdb_env_set_mapsize(env, (size_t)map_mb << 20)) != 0)
        goto fail;
    if ((rc = mdb_env_open(env, path, flags | MDB_NOTLS, 0660)) != 0)
        goto fail;
    if (d && !(flags & MDB_RDONLY)) {
        char file[4096];
        av_daemon_own(d, path);
        snprintf(file, sizeof file, "%s/data.mdb", path);
        av_daemon_own(d, file);
        snprintf(file, sizeof file, "%s/lock.mdb", path);
        av_daemon_own(d, file);
    }
    int dead = 0;
    mdb_reader_check(env, &dead); /* slots left by a killed reader */
    *out = env;
    return 0;
fail:
    av_log_err("cannot open database %s: %s", path, mdb_strerror(rc));
    if (env)
        mdb_env_close(env);
    return -1;
}

void
av_lmdb_close(MDB_env **env_p)
{
    MDB_env *env = env_p ? *env_p : NULL;
    unsigned flags = 0;
    if (!env)
        return;
    if (mdb_env_get_flags(env, &flags) == 0 && !(flags & MDB_RDONLY))
        mdb_env_sync(env, 1);
    mdb_env_close(env);
    *env_p = NULL;
}

int
av_lmdb_open_dbis(MDB_env *env, bool create, const char *const *names, MDB_dbi *dbis, size_t n)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, create ? 0 : MDB_RDONLY, &txn);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = mdb_dbi_open(txn, names[i], create ? MDB_CREATE : 0, &dbis[i]);
    if (rc != 0) {
        if (txn)
            mdb_txn_abort(txn);
        return rc;
    }
    /* Committing (a read-only transaction too) keeps the handles open; an
     * abort would close them. */
    return mdb_txn_commit(txn);
}

uint64_t
av_lmdb_entries(MDB_env *env, MDB_dbi dbi)
{
    MDB_txn *txn;
    MDB_stat st;
    uint64_t n = 0;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
        return 0;
    if (mdb_stat(txn, dbi, &st) == 0)
        n = st.ms_entries;
    mdb_txn_abort(txn);
    return n;
}

uint64_t
av_lmdb_delete_front(MDB_txn *txn, MDB_dbi dbi, uint64_t max, av_lmdb_front_fn fn, void *arg)
{
    MDB_cursor *cur;
    MDB_val key, val;
    uint64_t deleted = 0;
    if (mdb_cursor_open(txn, dbi, &cur) != 0)
        return 0;
    /* The first entry is always the one to look at: re-seek after each
     * delete instead of trusting where it leaves the cursor. */
    while (deleted < max && mdb_cursor_get(cur, &key, &val, MDB_FIRST) == 0) {
        if (fn && !fn(arg, txn, &key, &val))
            break;
        if (mdb_cursor_del(cur, 0) != 0)
            break;
        deleted++;
    }
    mdb_cursor_close(cur);
    return deleted;
}

/* Past this share of the map's pages in use, a write that may make room
 * makes it first: deleting copies pages too, so a map full to the last
 * page cannot even delete. */
#define NEARLY_FULL_PERCENT 90
/* Room made after a full map is made in small transactions: each commit
 * frees pages for the next. */
#define ROOM_STEP 64

static bool
nearly_full(MDB_env *env)
{
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0 || st.ms_psize == 0)
        return false;
    size_t limit = info.me_mapsize / st.ms_psize * NEARLY_FULL_PERCENT / 100;
    size_t in_file = info.me_last_pgno + 1;
    if (in_file <= limit)
        return false; /* never filled that far: the common case, and cheap */
    /* Pages freed by earlier writes are reused before the file grows:
     * count them (the free list, database 0, as mdb_stat -f does; LMDB
     * opens it to read-only transactions only). */
    size_t free_pages = 0;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
        return false;
    if (mdb_cursor_open(txn, 0, &cur) == 0) {
        while (mdb_cursor_get(cur, &key, &val, MDB_NEXT) == 0) {
            size_t n;
            if (val.mv_size >= sizeof n) {
                memcpy(&n, val.mv_data, sizeof n);
                free_pages += n;
            }
        }
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return free_pages < in_file && in_file - free_pages > limit;
}

/* Deletes up to max of the entries room wants gone; returns how many. */
static uint64_t
delete_for_room(const av_lmdb_room_t *room, MDB_txn *txn, uint64_t max)
{
    MDB_stat st;
    if (mdb_stat(txn, room->dbi, &st) != 0)
        return 0;
    uint64_t wanted = st.ms_entries / 10 + room->at_least;
    return av_lmdb_delete_front(txn, room->dbi, wanted < max ? wanted : max, room->fn, room->arg);
}

static int
write_once(MDB_env *env, av_lmdb_txn_fn fn, void *arg, const av_lmdb_room_t *room)
{
    MDB_txn *txn;
    bool full = room && nearly_full(env);
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    if (full) {
        delete_for_room(room, txn, UINT64_MAX);
        av_log_warning("%s", room->warning);
    }
    if ((rc = fn(arg, txn)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

typedef struct {
    const av_lmdb_room_t *room;
    uint64_t left;      /* entries still to delete */
    uint64_t deleted;   /* by the last step */
} room_job_t;

static int
room_step(void *arg, MDB_txn *txn)
{
    room_job_t *job = arg;
    job->deleted = delete_for_room(job->room, txn, job->left < ROOM_STEP ? job->left : ROOM_STEP);
    return 0;
}

/* After a full map: what one nearly-full write deletes, in steps. */
static int
make_room(MDB_env *env, const av_lmdb_room_t *room)
{
    room_job_t job = { room, av_lmdb_entries(env, room->dbi) / 10 + room->at_least, 0 };
    int rc;
    do {
        if ((rc = write_once(env, room_step, &job, NULL)) != 0)
            return rc;
        job.left -= job.deleted < job.left ? job.deleted : job.left;
    } while (job.left > 0 && job.deleted > 0);
    return 0;
}

int
av_lmdb_write(MDB_env *env, av_lmdb_txn_fn fn, void *arg, const av_lmdb_room_t *room)
{
    int rc = write_once(env, fn, arg, room);
    if (rc != MDB_MAP_FULL || !room)
        return rc;
    /* Fuller than the headroom allowed for (a batch larger than planned):
     * make room, say so, try again. */
    int room_rc = make_room(env, room);
    if (room_rc != 0)
        av_log_err("cannot make room in a full database: %s", mdb_strerror(room_rc));
    av_log_warning("%s", room->warning);
    return write_once(env, fn, arg, room);
}
