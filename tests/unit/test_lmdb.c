/* Unit tests of av_lmdb, what availd's LMDB stores share: big-endian keys
 * in numeric order, opening an environment and its databases, bounded
 * deletion from the front in key order, one write transaction that keeps
 * all or nothing, and room made from the front of a database before a map
 * fills up, or after a write too large for it; and damaged files: healthy
 * ones of real workloads (deletes, overflow values, duplicates, map growth)
 * found sound, every cut of one found damaged exactly when LMDB reading it
 * all dies or fails, garbage meta pages and foreign files refused, a
 * reader letting go of a file cut short under it, a damaged store moved
 * aside and rebuilt, and what is left of a cut file read back. Each test
 * has its own environment in a temp directory. */
#include "av_lmdb.h"

#include "av_daemon_internal.h" /* av_report_set_clock */

#include "unit_files.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define MAP_MB 4
#define VALUE_BYTES 900 /* four to a 4 KiB page */

typedef struct {
    char *dir;
    char path[PATH_MAX];
    char log_path[PATH_MAX];
    MDB_env *env;
    MDB_dbi items;   /* be64 number -> VALUE_BYTES bytes */
    MDB_dbi index;   /* be64 number -> "", kept in step with items */
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = unit_tmpdir_new("lmdb")))
        return -1;
    unit_path(f->path, sizeof f->path, f->dir, "db");
    unit_path(f->log_path, sizeof f->log_path, f->dir, "log");
    av_log_target_t target = { .kind = AV_LOG_FILE, .path = f->log_path };
    MDB_dbi dbis[2];
    if (av_log_open("test_lmdb", &target, 1, AV_LOG_INFO) < 0 ||
        av_lmdb_open(NULL, f->path, MDB_NOSYNC, MAP_MB, 4, &f->env) < 0 ||
        av_lmdb_open_dbis(f->env, true, (const char *const[]){ "items", "index" }, dbis, 2) != 0)
        return -1;
    f->items = dbis[0];
    f->index = dbis[1];
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    av_lmdb_close(&f->env);
    av_log_close();
    unit_tmpdir_remove(&f->dir);
    free(f);
    return 0;
}

/* ---- writing items ------------------------------------------------------ */

typedef struct {
    fixture_t *f;
    uint64_t first;
    uint64_t n;
} items_job_t;

/* Items first .. first+n-1, each with its index entry. */
static int
put_items(void *arg, MDB_txn *txn)
{
    const items_job_t *job = arg;
    uint8_t value[VALUE_BYTES], kbuf[8];
    memset(value, 'v', sizeof value);
    for (uint64_t i = job->first; i < job->first + job->n; i++) {
        av_be64_put(kbuf, i);
        MDB_val key = { 8, kbuf }, val = { sizeof value, value }, empty = { 0, "" };
        int rc = mdb_put(txn, job->f->items, &key, &val, 0);
        if (rc == 0)
            rc = mdb_put(txn, job->f->index, &key, &empty, 0);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int
write_items(fixture_t *f, uint64_t first, uint64_t n, const av_lmdb_room_t *room)
{
    items_job_t job = { f, first, n };
    return av_lmdb_write(f->env, put_items, &job, room);
}

static bool
has(fixture_t *f, MDB_dbi dbi, uint64_t number)
{
    MDB_txn *txn;
    uint8_t kbuf[8];
    av_be64_put(kbuf, number);
    MDB_val key = { 8, kbuf }, val;
    assert_int_equal(mdb_txn_begin(f->env, NULL, MDB_RDONLY, &txn), 0);
    int rc = mdb_get(txn, dbi, &key, &val);
    mdb_txn_abort(txn);
    return rc == 0;
}

/* The smallest number in dbi, or UINT64_MAX when it is empty. */
static uint64_t
first_of(fixture_t *f, MDB_dbi dbi)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    uint64_t first = UINT64_MAX;
    assert_int_equal(mdb_txn_begin(f->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    if (mdb_cursor_get(cur, &key, &val, MDB_FIRST) == 0)
        first = av_be64_get(key.mv_data);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return first;
}

/* What a front deletion saw: each entry it was asked about, in order. */
typedef struct {
    fixture_t *f;
    uint64_t keep_from;     /* entries from this number on are kept */
    uint64_t asked;
    uint64_t next_expected; /* the number the next entry must have */
    bool out_of_order;
} front_t;

/* Deletes the entry's index entry with it: a write to another database of
 * the same transaction, reading the key the cursor points at. */
static bool
delete_with_index(void *arg, MDB_txn *txn, const MDB_val *key, const MDB_val *val)
{
    front_t *fr = arg;
    assert_int_equal(key->mv_size, 8);
    assert_int_equal(val->mv_size, VALUE_BYTES);
    uint64_t number = av_be64_get(key->mv_data);
    fr->asked++;
    if (fr->next_expected != UINT64_MAX && number != fr->next_expected)
        fr->out_of_order = true;
    fr->next_expected = number + 1;
    if (number >= fr->keep_from)
        return false;
    MDB_val ikey = { key->mv_size, key->mv_data };
    assert_int_equal(mdb_del(txn, fr->f->index, &ikey, NULL), 0);
    return true;
}

typedef struct {
    front_t *front;
    uint64_t max;
    uint64_t deleted;
} delete_job_t;

static int
delete_txn(void *arg, MDB_txn *txn)
{
    delete_job_t *job = arg;
    job->deleted = av_lmdb_delete_front(txn, job->front->f->items, job->max,
                                        job->front->keep_from ? delete_with_index : NULL, job->front);
    return 0;
}

static uint64_t
delete_front(fixture_t *f, uint64_t max, uint64_t keep_from, front_t *seen)
{
    front_t local;
    front_t *fr = seen ? seen : &local;
    *fr = (front_t){ .f = f, .keep_from = keep_from, .next_expected = UINT64_MAX };
    delete_job_t job = { fr, max, 0 };
    assert_int_equal(av_lmdb_write(f->env, delete_txn, &job, NULL), 0);
    return job.deleted;
}

static size_t
log_count(fixture_t *f, const char *needle)
{
    char *log = unit_read_file(f->log_path);
    size_t n = log ? unit_count(log, needle) : 0;
    free(log);
    return n;
}

/* ---- keys and opening --------------------------------------------------- */

static void
test_be64_keys_read_back_and_sort_as_their_numbers(void **state)
{
    (void)state;
    const uint64_t numbers[] = { 0, 1, 255, 256, 65535, 1ULL << 32, (1ULL << 56) + 1, UINT64_MAX - 1, UINT64_MAX };
    const size_t n = sizeof numbers / sizeof numbers[0];
    for (size_t i = 0; i < n; i++) {
        uint8_t a[8];
        av_be64_put(a, numbers[i]);
        assert_int_equal(av_be64_get(a), numbers[i]);
        for (size_t j = i + 1; j < n; j++) {
            uint8_t b[8];
            av_be64_put(b, numbers[j]);
            assert_true(memcmp(a, b, 8) < 0);
        }
    }
    uint8_t one[8];
    av_be64_put(one, 1);
    assert_int_equal(one[7], 1); /* the last byte is the least significant */
}

static void
test_open_creates_the_directory_with_the_map_size_asked(void **state)
{
    fixture_t *f = *state;
    struct stat st;
    char data[PATH_MAX + 16];
    snprintf(data, sizeof data, "%s/data.mdb", f->path);
    assert_int_equal(stat(data, &st), 0);
    MDB_envinfo info;
    assert_int_equal(mdb_env_info(f->env, &info), 0);
    assert_int_equal(info.me_mapsize, (size_t)MAP_MB << 20);
}

static void
test_open_read_only_of_a_missing_environment_fails(void **state)
{
    fixture_t *f = *state;
    char path[PATH_MAX];
    MDB_env *env = (MDB_env *)1;
    assert_int_equal(av_lmdb_open(NULL, unit_path(path, sizeof path, f->dir, "absent"), MDB_RDONLY, 0, 4, &env), -1);
    assert_null(env);
    struct stat st;
    assert_int_equal(stat(path, &st), -1); /* a reader creates nothing */
}

static void
test_open_dbis_without_create_finds_only_existing_databases(void **state)
{
    fixture_t *f = *state;
    MDB_dbi dbi;
    assert_int_equal(av_lmdb_open_dbis(f->env, false, (const char *const[]){ "items" }, &dbi, 1), 0);
    assert_int_equal(dbi, f->items);
    assert_int_equal(av_lmdb_open_dbis(f->env, false, (const char *const[]){ "absent" }, &dbi, 1), MDB_NOTFOUND);
}

static void
test_close_keeps_what_was_committed_and_clears_the_pointer(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(write_items(f, 1, 3, NULL), 0);
    av_lmdb_close(&f->env);
    assert_null(f->env);
    av_lmdb_close(&f->env); /* twice is harmless */
    av_lmdb_close(NULL);
    assert_int_equal(av_lmdb_open(NULL, f->path, MDB_RDONLY, 0, 4, &f->env), 0);
    assert_int_equal(av_lmdb_open_dbis(f->env, false, (const char *const[]){ "items" }, &f->items, 1), 0);
    assert_int_equal(av_lmdb_entries(f->env, f->items), 3);
    av_lmdb_close(&f->env); /* a reader's: nothing to flush */
    assert_null(f->env);
}

/* ---- one write transaction ---------------------------------------------- */

static int
put_then_fail(void *arg, MDB_txn *txn)
{
    int rc = put_items(arg, txn);
    return rc ? rc : MDB_KEYEXIST;
}

static void
test_write_commits_what_fn_wrote(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(write_items(f, 1, 10, NULL), 0);
    assert_int_equal(av_lmdb_entries(f->env, f->items), 10);
    assert_int_equal(av_lmdb_entries(f->env, f->index), 10);
    assert_true(has(f, f->items, 1));
    assert_true(has(f, f->items, 10));
}

static void
test_write_keeps_nothing_of_a_failed_fn_and_returns_its_error(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(write_items(f, 1, 3, NULL), 0);
    items_job_t job = { f, 100, 5 };
    assert_int_equal(av_lmdb_write(f->env, put_then_fail, &job, NULL), MDB_KEYEXIST);
    assert_int_equal(av_lmdb_entries(f->env, f->items), 3);
    assert_false(has(f, f->items, 100));
}

/* ---- deleting from the front -------------------------------------------- */

static void
test_delete_front_deletes_at_most_max_oldest_first(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(write_items(f, 1, 10, NULL), 0);
    assert_int_equal(delete_front(f, 3, 0, NULL), 3);
    assert_int_equal(first_of(f, f->items), 4);
    assert_int_equal(av_lmdb_entries(f->env, f->items), 7);
    assert_int_equal(delete_front(f, 0, 0, NULL), 0);
    assert_int_equal(delete_front(f, 100, 0, NULL), 7);
    assert_int_equal(first_of(f, f->items), UINT64_MAX);
    assert_int_equal(delete_front(f, 100, 0, NULL), 0); /* empty: nothing to do */
}

static void
test_delete_front_stops_where_fn_says_and_fn_writes_beside_it(void **state)
{
    fixture_t *f = *state;
    front_t seen;
    assert_int_equal(write_items(f, 1, 10, NULL), 0);
    /* Keep 7 and after: 1-6 go, and 7 is looked at and kept. */
    assert_int_equal(delete_front(f, 100, 7, &seen), 6);
    assert_int_equal(seen.asked, 7);
    assert_false(seen.out_of_order);
    assert_int_equal(first_of(f, f->items), 7);
    assert_int_equal(first_of(f, f->index), 7); /* fn's deletes were committed with them */
    assert_int_equal(av_lmdb_entries(f->env, f->index), 4);
    /* max bounds it even when fn would go on. */
    assert_int_equal(delete_front(f, 2, 100, &seen), 2);
    assert_int_equal(seen.asked, 2);
    assert_int_equal(first_of(f, f->items), 9);
    assert_int_equal(first_of(f, f->index), 9);
}

/* ---- room in a full map ------------------------------------------------- */

static void
test_room_is_made_from_the_front_before_the_map_fills(void **state)
{
    fixture_t *f = *state;
    front_t seen = { .f = f, .keep_from = UINT64_MAX, .next_expected = UINT64_MAX };
    av_lmdb_room_t room = { f->items, delete_with_index, &seen, 20, "test map full: made room" };
    /* Twenty items a write, three times what the map holds: never refused. */
    const uint64_t writes = 600, per_write = 20;
    for (uint64_t w = 0; w < writes; w++)
        if (write_items(f, 1 + w * per_write, per_write, &room) != 0)
            fail_msg("write %llu of %llu refused", (unsigned long long)w, (unsigned long long)writes);
    uint64_t kept = av_lmdb_entries(f->env, f->items), all = writes * per_write;
    if (kept >= all / 2 || kept < all / 10)
        fail_msg("%llu of %llu items kept", (unsigned long long)kept, (unsigned long long)all);
    /* The oldest went, in order, with their index entries; the newest are whole. */
    assert_false(seen.out_of_order);
    assert_int_equal(seen.asked, all - kept);
    assert_int_equal(first_of(f, f->items), all - kept + 1);
    assert_int_equal(first_of(f, f->index), all - kept + 1);
    assert_int_equal(av_lmdb_entries(f->env, f->index), kept);
    assert_true(has(f, f->items, all));
    assert_true(log_count(f, "warning: test map full: made room") >= 1);
    assert_int_equal(log_count(f, "cannot make room"), 0);
}

static void
test_a_write_larger_than_the_room_left_makes_room_and_is_retried(void **state)
{
    fixture_t *f = *state;
    front_t seen = { .f = f, .keep_from = UINT64_MAX, .next_expected = UINT64_MAX };
    /* About 60% of the map, then one write of about 65% of it: it cannot
     * fit unless what is there goes. */
    for (uint64_t first = 1; first <= 2400; first += 50)
        assert_int_equal(write_items(f, first, 50, NULL), 0);
    assert_int_equal(log_count(f, "made room"), 0);
    av_lmdb_room_t room = { f->items, delete_with_index, &seen, 2600, "test map full: made room" };
    assert_int_equal(write_items(f, 2401, 2600, &room), 0);
    assert_true(has(f, f->items, 2401));
    assert_true(has(f, f->items, 5000));
    assert_int_equal(av_lmdb_entries(f->env, f->items), av_lmdb_entries(f->env, f->index));
    assert_true(av_lmdb_entries(f->env, f->items) >= 2600);
    assert_int_equal(log_count(f, "warning: test map full: made room"), 1);
    assert_int_equal(log_count(f, "cannot make room"), 0);
}

static void
test_without_room_a_write_too_large_is_refused_whole(void **state)
{
    fixture_t *f = *state;
    for (uint64_t first = 1; first <= 2400; first += 50)
        assert_int_equal(write_items(f, first, 50, NULL), 0);
    assert_int_equal(write_items(f, 2401, 2600, NULL), MDB_MAP_FULL);
    assert_int_equal(av_lmdb_entries(f->env, f->items), 2400);
    assert_false(has(f, f->items, 2401));
    /* What fits still goes in. */
    assert_int_equal(write_items(f, 2401, 10, NULL), 0);
}

/* ---- damaged files ------------------------------------------------------ */

/* A store written by a real workload, in a directory of its own: named
 * databases (one with duplicates in a sub-database of their own), values
 * in overflow runs, deletions (free pages), map growth, and pages freed in
 * the transaction that allocated them (never written). */
#define STORE_DBS 3
static const char *const store_names[STORE_DBS] = { "items", "big", "dups" };

typedef struct {
    char dir[PATH_MAX];
    char data[PATH_MAX + 16];
    uint32_t page_bytes;
} store_t;

static MDB_env *
store_open(const store_t *s, uint32_t map_mb, MDB_dbi dbis[STORE_DBS])
{
    MDB_env *env;
    MDB_txn *txn;
    assert_int_equal(av_lmdb_open(NULL, s->dir, MDB_NOSYNC, map_mb, 4, &env), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    for (int i = 0; i < STORE_DBS; i++)
        assert_int_equal(mdb_dbi_open(txn, store_names[i], MDB_CREATE | (i == 2 ? MDB_DUPSORT : 0), &dbis[i]), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    return env;
}

static void
store_init(store_t *s, const char *parent, const char *name)
{
    unit_path(s->dir, sizeof s->dir, parent, name);
    snprintf(s->data, sizeof s->data, "%s/data.mdb", s->dir);
}

/* One step of the workload, in one transaction. */
typedef enum { PUT_ITEMS, DELETE_ITEMS, PUT_BIG, PUT_DUPS, PUT_AND_DELETE, PUT_AND_DELETE_BUT_ONE } step_kind_t;

static void
store_step(MDB_env *env, const MDB_dbi dbis[STORE_DBS], step_kind_t kind, uint64_t first, uint64_t n)
{
    MDB_txn *txn;
    static uint8_t value[20000];
    uint8_t kbuf[8];
    memset(value, 'v', sizeof value);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    for (uint64_t i = first; i < first + n; i++) {
        av_be64_put(kbuf, i);
        MDB_val key = { 8, kbuf }, val = { VALUE_BYTES, value };
        switch (kind) {
        case PUT_ITEMS:
            assert_int_equal(mdb_put(txn, dbis[0], &key, &val, 0), 0);
            break;
        case DELETE_ITEMS:
            mdb_del(txn, dbis[0], &key, NULL);
            break;
        case PUT_BIG:
            val.mv_size = 5000 + (i % 4) * 3000; /* one to four overflow pages */
            value[0] = (uint8_t)i;
            assert_int_equal(mdb_put(txn, dbis[1], &key, &val, 0), 0);
            break;
        case PUT_DUPS: {
            MDB_val k = { 3, "dup" };
            val.mv_size = 8;
            val.mv_data = kbuf;
            assert_int_equal(mdb_put(txn, dbis[2], &k, &val, 0), 0);
            break;
        }
        case PUT_AND_DELETE:
        case PUT_AND_DELETE_BUT_ONE:
            assert_int_equal(mdb_put(txn, dbis[0], &key, &val, 0), 0);
            break;
        }
    }
    if (kind == PUT_AND_DELETE || kind == PUT_AND_DELETE_BUT_ONE)
        for (uint64_t i = first + (kind == PUT_AND_DELETE_BUT_ONE); i < first + n; i++) {
            av_be64_put(kbuf, i);
            MDB_val key = { 8, kbuf };
            assert_int_equal(mdb_del(txn, dbis[0], &key, NULL), 0);
        }
    assert_int_equal(mdb_txn_commit(txn), 0);
}

static uint64_t
file_bytes(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* Both checks must find the file sound; returns whether it is shorter
 * than its last page number says (the naive rule's false alarm). */
static bool
assert_sound(const store_t *s, MDB_env *env, const char *after)
{
    char why[256];
    MDB_envinfo info;
    int rc = av_lmdb_check_file(s->data, why, sizeof why);
    if (rc != 0)
        fail_msg("after %s: check says %d: %s", after, rc, why);
    rc = av_lmdb_check_file_deep(s->data, why, sizeof why);
    if (rc != 0)
        fail_msg("after %s: deep check says %d: %s", after, rc, why);
    assert_int_equal(mdb_env_info(env, &info), 0);
    return file_bytes(s->data) < (info.me_last_pgno + 1) * (uint64_t)s->page_bytes;
}

/* Writes the workload, checking the file after every step (with the
 * writer open, as a reader would find it). Returns how many steps left it
 * shorter than its last page number. */
static int
store_write(store_t *s)
{
    MDB_dbi dbis[STORE_DBS];
    MDB_stat st;
    int shorter = 0;
    MDB_env *env = store_open(s, 2, dbis);
    assert_int_equal(mdb_env_stat(env, &st), 0);
    s->page_bytes = st.ms_psize;
    shorter += assert_sound(s, env, "creating");
    store_step(env, dbis, PUT_ITEMS, 0, 300);
    shorter += assert_sound(s, env, "300 items");
    store_step(env, dbis, DELETE_ITEMS, 0, 250);
    shorter += assert_sound(s, env, "250 deleted");
    store_step(env, dbis, PUT_BIG, 0, 40);
    shorter += assert_sound(s, env, "overflow values");
    store_step(env, dbis, PUT_DUPS, 0, 3000);
    shorter += assert_sound(s, env, "3000 duplicates of a key");
    store_step(env, dbis, PUT_AND_DELETE, 1000, 400);
    shorter += assert_sound(s, env, "items put and deleted in one transaction");
    av_lmdb_close(&env);
    /* The map grows past the old one's size. */
    env = store_open(s, 16, dbis);
    for (uint64_t round = 0; round < 8; round++)
        store_step(env, dbis, PUT_ITEMS, 2000 + round * 300, 300);
    shorter += assert_sound(s, env, "a grown map");
    store_step(env, dbis, DELETE_ITEMS, 2000, 1500);
    store_step(env, dbis, PUT_BIG, 0, 20);
    shorter += assert_sound(s, env, "deletes after growth");
    store_step(env, dbis, PUT_AND_DELETE, 9000, 600);
    shorter += assert_sound(s, env, "items put and deleted in one transaction after growth");
    /* Bursts put and deleted in their transaction, growing: the file ends
     * up shorter than its last page number (the pages freed in the
     * transaction that allocated them are never written). */
    for (uint64_t round = 0; round < 10; round++) {
        store_step(env, dbis, round % 2 ? PUT_AND_DELETE_BUT_ONE : PUT_AND_DELETE, 100000 * (round + 1),
                   400 * (round % 7 + 1));
        shorter += assert_sound(s, env, "a burst put and deleted");
    }
    av_lmdb_close(&env);
    return shorter;
}

/* Reads everything of the file the way LMDB's readers do, in a child (a
 * read past the end kills it with SIGBUS; LMDB forbids a second
 * environment in a process): every entry of every database and of the
 * free list, every byte of every value. True when it all read. */
static bool
readable_by_lmdb(const char *dir)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        MDB_env *env;
        MDB_txn *txn;
        MDB_cursor *cur;
        MDB_val key, val;
        MDB_dbi dbis[STORE_DBS + 1] = { 0 };
        volatile uint8_t sum = 0;
        signal(SIGBUS, SIG_DFL); /* not cmocka's: a fault ends the child */
        signal(SIGSEGV, SIG_DFL);
        if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 4) != 0 ||
            mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0660) != 0 ||
            mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
            _exit(2);
        for (int i = 0; i < STORE_DBS; i++)
            if (mdb_dbi_open(txn, store_names[i], i == 2 ? MDB_DUPSORT : 0, &dbis[i + 1]) != 0)
                _exit(3);
        for (int i = 0; i <= STORE_DBS; i++) { /* dbis[0]: the free list */
            if (mdb_cursor_open(txn, dbis[i], &cur) != 0)
                _exit(4);
            int rc;
            while ((rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) == 0)
                for (size_t b = 0; b < val.mv_size; b++)
                    sum += ((const uint8_t *)val.mv_data)[b];
            if (rc != MDB_NOTFOUND)
                _exit(5);
            mdb_cursor_close(cur);
        }
        _exit(sum == 0 ? 0 : 0); /* sum: every byte was read */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* A copy of src's data file, cut to bytes, in dir/name (a fresh directory). */
static void
copy_cut(const store_t *src, store_t *dst, const char *parent, const char *name, uint64_t bytes)
{
    store_init(dst, parent, name);
    dst->page_bytes = src->page_bytes;
    mkdir(dst->dir, 0700);
    unlink(dst->data);
    char lock[PATH_MAX + 16];
    snprintf(lock, sizeof lock, "%s/lock.mdb", dst->dir);
    unlink(lock);
    FILE *in = fopen(src->data, "rb"), *out = fopen(dst->data, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    uint64_t left = bytes;
    while (left && (n = fread(buf, 1, left < sizeof buf ? left : sizeof buf, in)) > 0) {
        assert_int_equal(fwrite(buf, 1, n, out), n);
        left -= n;
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(file_bytes(dst->data), bytes);
}

/* Writes len bytes of pattern at off of path. */
static void
overwrite(const char *path, uint64_t off, uint8_t pattern, size_t len)
{
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    memset(buf, pattern, len);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(buf);
}

static void
test_healthy_files_of_real_workloads_are_sound_even_shorter_than_their_last_page(void **state)
{
    fixture_t *f = *state;
    store_t s;
    store_init(&s, f->dir, "workload");
    int shorter = store_write(&s);
    /* The naive rule, size >= (last page + 1) * page size, calls some of
     * these healthy states truncated: LMDB never writes pages freed in
     * the transaction that allocated them. */
    if (shorter == 0)
        fail_msg("no state of the workload was shorter than its last page number: the test lost its point");
    assert_true(readable_by_lmdb(s.dir));
}

static void
test_absent_and_empty_files_are_for_lmdb_to_create(void **state)
{
    fixture_t *f = *state;
    char path[PATH_MAX], why[256];
    assert_int_equal(av_lmdb_check_file(unit_path(path, sizeof path, f->dir, "absent.mdb"), why, sizeof why), 1);
    assert_int_equal(unit_write_file(path, ""), 0);
    assert_int_equal(av_lmdb_check_file(path, why, sizeof why), 1);
    assert_int_equal(av_lmdb_check_file_deep(path, why, sizeof why), 1);
}

/* Every cut of a healthy file, page by page: the check says damaged
 * exactly when LMDB, reading everything, dies or fails; sound only when
 * it reads it all. Cuts within a page are damaged when that page is
 * needed, and sound ones read whole. */
static void
test_truncated_files_are_damaged_exactly_when_a_needed_page_is_cut(void **state)
{
    fixture_t *f = *state;
    store_t s, cut;
    char why[256];
    store_init(&s, f->dir, "whole");
    store_write(&s);
    uint64_t bytes = file_bytes(s.data), pages = bytes / s.page_bytes;
    int damaged = 0, sound = 0;
    /* Every page near the end (where a store's newest pages are), then a
     * stride through the rest: about 150 cuts. */
    for (uint64_t p = pages + 1; p-- > 0;) {
        if (p + 60 < pages && p % (pages / 90 + 1) != 0)
            continue;
        for (int partial = 0; partial < 2; partial++) {
            uint64_t at = p * s.page_bytes + (partial ? 100 : 0);
            if (at > bytes || (partial && at == bytes))
                continue;
            copy_cut(&s, &cut, f->dir, "cut", at);
            int rc = av_lmdb_check_file(cut.data, why, sizeof why);
            int deep = av_lmdb_check_file_deep(cut.data, why, sizeof why);
            if (at == 0) {
                assert_int_equal(rc, 1); /* empty: LMDB makes a new one */
                continue;
            }
            if (rc != deep)
                fail_msg("cut at %llu: check %d, deep check %d", (unsigned long long)at, rc, deep);
            if (rc != 0 && rc != -1)
                fail_msg("cut at %llu: check %d: %s", (unsigned long long)at, rc, why);
            bool readable = rc == 0 || !partial ? readable_by_lmdb(cut.dir) : false;
            if (rc == 0 && !readable)
                fail_msg("cut at %llu: check says sound, LMDB cannot read it all", (unsigned long long)at);
            if (rc == -1 && !partial && readable)
                fail_msg("cut at %llu: check says damaged (%s), LMDB reads it all", (unsigned long long)at, why);
            if (rc == -1 && strstr(why, "truncated") == NULL && p >= 2)
                fail_msg("cut at %llu: damaged, but not said truncated: %s", (unsigned long long)at, why);
            damaged += rc == -1;
            sound += rc == 0;
        }
    }
    /* Both verdicts happened: the cuts crossed needed and free pages. */
    assert_true(damaged > 10);
    assert_true(sound > 0);
}

static void
test_garbage_meta_pages_foreign_files_and_other_versions_are_damaged(void **state)
{
    fixture_t *f = *state;
    store_t s, bad;
    char why[256];
    store_init(&s, f->dir, "meta");
    store_write(&s);
    uint64_t bytes = file_bytes(s.data);
    uint32_t page = s.page_bytes;
    struct {
        uint64_t off;
        uint8_t pattern;
        size_t len;
        const char *says;
    } cases[] = {
        { 0, 0xA5, page, "meta page 0 is not LMDB's" },
        { page, 0x00, page, "meta page 1 is not LMDB's" },
        { 0, 0x5A, 2 * page, "meta page 0 is not LMDB's" },
        { 16 + 4, 0x02, 1, "version" },         /* format version 2 */
        { page + 16 + 24, 0x00, 4, "page size" }, /* page 1's page size 0 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        copy_cut(&s, &bad, f->dir, "bad", bytes);
        overwrite(bad.data, cases[i].off, cases[i].pattern, cases[i].len);
        int rc = av_lmdb_check_file(bad.data, why, sizeof why);
        if (rc != -1 || !strstr(why, cases[i].says))
            fail_msg("case %zu: check %d (%s), want -1 saying '%s'", i, rc, why, cases[i].says);
        assert_int_equal(av_lmdb_check_file_deep(bad.data, why, sizeof why), -1);
    }
    /* Not LMDB at all, and too short to be. */
    assert_int_equal(unit_write_file(bad.data, "not a database\n"), 0);
    assert_int_equal(av_lmdb_check_file(bad.data, why, sizeof why), -1);
    assert_non_null(strstr(why, "not an LMDB file"));
    char *text = calloc(1, 100000);
    assert_non_null(text);
    memset(text, 'x', 99999);
    assert_int_equal(unit_write_file(bad.data, text), 0);
    free(text);
    assert_int_equal(av_lmdb_check_file(bad.data, why, sizeof why), -1);
    assert_non_null(strstr(why, "not LMDB's"));
}

static void
test_a_leaf_overwritten_in_place_is_found_by_the_deep_check(void **state)
{
    fixture_t *f = *state;
    store_t s, bad;
    char why[256];
    store_init(&s, f->dir, "leaf");
    store_write(&s);
    uint64_t bytes = file_bytes(s.data), pages = bytes / s.page_bytes;
    /* Pages of the trees: the deep check finds their garbage; and LMDB,
     * reading everything, fails on those that are not overflow runs
     * (whose header it does not read back). A free page's is no damage. */
    int found = 0, lmdb_fails = 0, free_pages = 0;
    for (uint64_t p = 2; p < pages && found < 8; p++) {
        copy_cut(&s, &bad, f->dir, "garbled", bytes);
        overwrite(bad.data, p * s.page_bytes, 0x3C, 64);
        int rc = av_lmdb_check_file_deep(bad.data, why, sizeof why);
        if (rc == 0) {
            free_pages++;
            assert_true(readable_by_lmdb(bad.dir));
            continue;
        }
        assert_int_equal(rc, -1);
        found++;
        lmdb_fails += !readable_by_lmdb(bad.dir);
    }
    assert_int_equal(found, 8);
    assert_true(lmdb_fails > 0);
}

/* ---- a reader's look at the file it has open ----------------------------- */

static void
test_a_mapped_file_cut_short_or_overwritten_is_let_go_before_a_read(void **state)
{
    fixture_t *f = *state;
    store_t s;
    char why[256];
    MDB_env *env;
    int fd;
    store_init(&s, f->dir, "mapped");
    store_write(&s);
    assert_int_equal(av_lmdb_open(NULL, s.dir, MDB_RDONLY, 0, 4, &env), 0);
    assert_int_equal(mdb_env_get_fd(env, &fd), 0);
    uint64_t seen = 0, bytes = file_bytes(s.data);
    assert_int_equal(av_lmdb_check_mapped(env, fd, &seen, why, sizeof why), 0);
    assert_int_equal(seen, bytes);
    /* Overwritten meta page: not read. */
    overwrite(s.data, 0, 0xEE, 64);
    assert_int_equal(av_lmdb_check_mapped(env, fd, &seen, why, sizeof why), -1);
    assert_non_null(strstr(why, "not LMDB's"));
    /* Cut short: not read (LMDB would die of SIGBUS). */
    assert_int_equal(truncate(s.data, (off_t)(bytes / 2)), 0);
    assert_int_equal(av_lmdb_check_mapped(env, fd, &seen, why, sizeof why), -1);
    assert_non_null(strstr(why, "cut short"));
    av_lmdb_close(&env);
}

/* ---- moving aside and rebuilding ----------------------------------------- */

static int
count_damaged_copies(const char *dir)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort), copies = 0;
    for (int i = 0; i < n; i++) {
        copies += strncmp(list[i]->d_name, "data.mdb.damaged-", 17) == 0;
        free(list[i]);
    }
    if (n >= 0)
        free(list);
    return copies;
}

/* A clock two seconds on at every look: no report is held back as a
 * repeat of the one before. */
static uint64_t
clock_2s_steps(void)
{
    static uint64_t now_us;
    return now_us += 2000000;
}

static void
test_a_damaged_store_is_moved_aside_reported_and_opened_empty(void **state)
{
    fixture_t *f = *state;
    store_t s;
    MDB_env *env;
    MDB_dbi dbis[STORE_DBS];
    av_lmdb_store_t store = {
        .what = "test store", .flags = MDB_NOSYNC, .map_mb = 16, .max_dbs = 4,
        .names = store_names, .n_names = 1, /* items */
    };
    av_report_set_clock(clock_2s_steps);
    store_init(&s, f->dir, "rebuilt");
    store.path = s.dir;
    store_write(&s);
    /* Sound: opened as it is. */
    assert_int_equal(av_lmdb_open_rebuildable(NULL, &store, &env, dbis), 0);
    assert_true(av_lmdb_entries(env, dbis[0]) > 0);
    av_lmdb_close(&env);
    assert_int_equal(count_damaged_copies(s.dir), 0);
    /* Cut short, garbage meta pages, not LMDB, twice more: each moved
     * aside and opened empty, and only the newest three copies kept. */
    for (int round = 0; round < 5; round++) {
        uint64_t bytes = file_bytes(s.data);
        if (round == 0 || round == 3)
            assert_int_equal(truncate(s.data, 100000 < bytes ? 100000 : (off_t)bytes / 2), 0);
        else if (round == 1 || round == 4)
            overwrite(s.data, 0, 0x77, 4096);
        else
            assert_int_equal(unit_write_file(s.data, "hello, not a database"), 0);
        assert_int_equal(av_lmdb_open_rebuildable(NULL, &store, &env, dbis), 0);
        assert_int_equal(av_lmdb_entries(env, dbis[0]), 0);
        store_step(env, dbis, PUT_ITEMS, 0, 300); /* usable, and the next round's to damage */
        av_lmdb_close(&env);
        assert_int_equal(count_damaged_copies(s.dir), round < 3 ? round + 1 : AV_LMDB_DAMAGED_KEEP);
    }
    assert_int_equal(log_count(f, "[database_damaged] the test store in "), 5);
    assert_int_equal(log_count(f, "moved aside to "), 5);
    av_report_set_clock(NULL);
}

/* ---- reading what is left ------------------------------------------------- */

typedef struct {
    uint64_t read;
    uint64_t wrong;
    uint64_t last;
} salvaged_items_t;

static void
salvage_item(void *arg, const MDB_val *key, const MDB_val *val)
{
    salvaged_items_t *s = arg;
    const uint8_t *v = val->mv_data;
    if (key->mv_size != 8 || val->mv_size != VALUE_BYTES || v[0] != 'v' || v[VALUE_BYTES - 1] != 'v')
        s->wrong++;
    s->read++;
    s->last = av_be64_get(key->mv_data);
}

static void
test_salvage_reads_every_entry_left_within_a_cut_file(void **state)
{
    fixture_t *f = *state;
    store_t s, cut;
    char why[256];
    av_lmdb_salvage_t out;
    store_init(&s, f->dir, "salvaged");
    store_write(&s);
    uint64_t bytes = file_bytes(s.data);
    /* Whole: every item. */
    salvaged_items_t all = { 0 };
    assert_int_equal(av_lmdb_salvage(s.data, "items", salvage_item, &all, &out, why, sizeof why), 0);
    assert_int_equal(all.wrong, 0);
    assert_int_equal(all.read, out.entries);
    assert_int_equal(out.pages_lost, 0);
    /* Cut: some, each read right, never more than there were; somewhere a
     * cut loses some and keeps some. */
    bool partly = false;
    for (uint64_t at = bytes - bytes / 8; at > 3 * (uint64_t)s.page_bytes && !partly; at -= s.page_bytes) {
        salvaged_items_t some = { 0 };
        copy_cut(&s, &cut, f->dir, "cut-salvaged", at);
        if (av_lmdb_salvage(cut.data, "items", salvage_item, &some, &out, why, sizeof why) != 0)
            continue; /* the main database itself is cut */
        assert_int_equal(some.wrong, 0);
        assert_true(some.read <= all.read);
        assert_int_equal(out.entries, all.read);
        partly = some.read > 0 && some.read < all.read && out.pages_lost > 0;
    }
    assert_true(partly);
    /* Page 0 garbage: read from page 1's state. */
    copy_cut(&s, &cut, f->dir, "meta0", bytes);
    overwrite(cut.data, 0, 0x11, 4096);
    salvaged_items_t from1 = { 0 };
    assert_int_equal(av_lmdb_salvage(cut.data, "items", salvage_item, &from1, &out, why, sizeof why), 0);
    assert_true(out.one_meta_garbage);
    assert_int_equal(from1.wrong, 0);
    /* Nothing LMDB's: nothing read, and said why. */
    assert_int_equal(unit_write_file(cut.data, "garbage garbage garbage garbage garbage garbage garbage garbage "
                                               "garbage garbage garbage garbage garbage garbage garbage garbage"),
                     0);
    assert_int_equal(av_lmdb_salvage(cut.data, "items", salvage_item, &from1, &out, why, sizeof why), -1);
    assert_non_null(strstr(why, "not"));
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_be64_keys_read_back_and_sort_as_their_numbers),
        T(test_open_creates_the_directory_with_the_map_size_asked),
        T(test_open_read_only_of_a_missing_environment_fails),
        T(test_open_dbis_without_create_finds_only_existing_databases),
        T(test_close_keeps_what_was_committed_and_clears_the_pointer),
        T(test_write_commits_what_fn_wrote),
        T(test_write_keeps_nothing_of_a_failed_fn_and_returns_its_error),
        T(test_delete_front_deletes_at_most_max_oldest_first),
        T(test_delete_front_stops_where_fn_says_and_fn_writes_beside_it),
        T(test_room_is_made_from_the_front_before_the_map_fills),
        T(test_a_write_larger_than_the_room_left_makes_room_and_is_retried),
        T(test_without_room_a_write_too_large_is_refused_whole),
        T(test_healthy_files_of_real_workloads_are_sound_even_shorter_than_their_last_page),
        T(test_absent_and_empty_files_are_for_lmdb_to_create),
        T(test_truncated_files_are_damaged_exactly_when_a_needed_page_is_cut),
        T(test_garbage_meta_pages_foreign_files_and_other_versions_are_damaged),
        T(test_a_leaf_overwritten_in_place_is_found_by_the_deep_check),
        T(test_a_mapped_file_cut_short_or_overwritten_is_let_go_before_a_read),
        T(test_a_damaged_store_is_moved_aside_reported_and_opened_empty),
        T(test_salvage_reads_every_entry_left_within_a_cut_file),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
