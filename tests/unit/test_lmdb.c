/* Unit tests of av_lmdb, what availd's LMDB stores share: big-endian keys
 * in numeric order, opening an environment and its databases, bounded
 * deletion from the front in key order, one write transaction that keeps
 * all or nothing, and room made from the front of a database before a map
 * fills up, or after a write too large for it. Each test has its own
 * environment in a temp directory. */
#include "av_lmdb.h"

#include "unit_files.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

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
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
