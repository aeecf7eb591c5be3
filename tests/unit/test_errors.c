/* Unit tests of availd-errors' database (errors_db): events numbered in
 * arrival order and read back as they were reported, newest first, with
 * filters; counts per registry and code; retention by count and by age; a
 * database reopened; a map too small for what is kept; a damaged one
 * moved aside and started empty. Each test has its own LMDB environment
 * in a temp directory; times are explicit. */
#include "errors_db.h"

#include "av_lmdb.h"

#include "unit_files.h"

#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define T0 1800000000000ULL /* a plausible now, unix ms */
#define S(seconds) ((uint64_t)(seconds) * 1000)

typedef struct {
    char *dir;
    char path[PATH_MAX];
    av_errors_cfg_t cfg;
    errors_db_t *db;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = unit_tmpdir_new("errors")))
        return -1;
    unit_path(f->path, sizeof f->path, f->dir, "errors");
    f->cfg = (av_errors_cfg_t){
        .path = f->path, .map_size_mb = 16, .retention_count = 1000, .retention_s = 3600, .batch_max = 100,
    };
    *state = f;
    return (f->db = errors_db_open(NULL, &f->cfg)) ? 0 : -1;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    errors_db_close(&f->db);
    unit_tmpdir_remove(&f->dir);
    free(f);
    return 0;
}

static void
reopen(fixture_t *f)
{
    errors_db_close(&f->db);
    assert_null(f->db);
    assert_non_null(f->db = errors_db_open(NULL, &f->cfg));
}

static av_error_t
event(const char *daemon, const char *registry, av_level_t level, const char *code, const char *text)
{
    return (av_error_t){
        .daemon = av_str(daemon), .registry = av_str(registry), .level = level,
        .code = av_str(code), .text = av_str(text), .at_ms = T0 - 5, .pid = 4321,
    };
}

/* Appends events[0..n) received at received_ms; must succeed. */
static void
append(fixture_t *f, av_error_t *events, size_t n, uint64_t received_ms)
{
    av_error_t **list = calloc(n, sizeof *list);
    assert_non_null(list);
    for (size_t i = 0; i < n; i++)
        list[i] = &events[i];
    assert_int_equal(errors_db_append(f->db, list, n, received_ms), 0);
    free(list);
}

/* n events "c0".."c(n-1)" of verisign, received at received_ms. */
static void
append_codes(fixture_t *f, size_t n, uint64_t received_ms)
{
    av_error_t *events = calloc(n, sizeof *events);
    char (*codes)[16] = calloc(n, sizeof *codes);
    assert_non_null(events);
    assert_non_null(codes);
    for (size_t i = 0; i < n; i++) {
        snprintf(codes[i], sizeof codes[i], "c%zu", i);
        events[i] = event("querier-verisign", "verisign", AV_LEVEL_WARNING, codes[i], "text");
    }
    append(f, events, n, received_ms);
    free(codes);
    free(events);
}

/* What recent visits, copied. */
typedef struct {
    uint64_t seq;
    uint64_t received_ms;
    char daemon[AV_DAEMON_MAX + 1];
    char registry[AV_REGISTRY_MAX + 1];
    char code[AV_CODE_MAX + 1];
    char text[AV_TEXT_MAX + 1];
    av_level_t level;
    uint64_t at_ms;
    uint32_t pid;
} seen_event_t;

typedef struct {
    size_t n;
    seen_event_t ev[64];
} seen_t;

static bool
collect(void *arg, const av_error_t *ev)
{
    seen_t *s = arg;
    if (s->n == sizeof s->ev / sizeof s->ev[0])
        return false;
    seen_event_t *e = &s->ev[s->n++];
    e->seq = ev->seq;
    e->received_ms = ev->received_ms;
    av_str_copy(e->daemon, sizeof e->daemon, ev->daemon);
    av_str_copy(e->registry, sizeof e->registry, ev->registry);
    av_str_copy(e->code, sizeof e->code, ev->code);
    av_str_copy(e->text, sizeof e->text, ev->text);
    e->level = ev->level;
    e->at_ms = ev->at_ms;
    e->pid = ev->pid;
    return true;
}

static seen_t *
recent(fixture_t *f, const errors_filter_t *filter, uint32_t limit)
{
    static const errors_filter_t any = { .max_level = AV_LEVEL_DEBUG };
    seen_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    assert_int_equal(errors_db_recent(f->db, filter ? filter : &any, limit, collect, s), 0);
    return s;
}

/* The counts, as "registry/code=n" lines in key order. */
static void
collect_count(void *arg, av_str_t registry, av_str_t code, uint64_t count)
{
    char *out = arg;
    size_t len = strlen(out);
    snprintf(out + len, 4096 - len, "%.*s/%.*s=%llu\n", (int)registry.len, registry.ptr, (int)code.len, code.ptr,
             (unsigned long long)count);
}

static void
assert_counts(fixture_t *f, const char *want)
{
    char got[4096] = "";
    assert_int_equal(errors_db_counts(f->db, collect_count, got), 0);
    if (strcmp(got, want) != 0)
        fail_msg("counts:\n%s\nwant:\n%s", got, want);
}

/* ---- storing and reading ------------------------------------------------ */

static void
test_events_are_numbered_in_arrival_order_across_appends(void **state)
{
    fixture_t *f = *state;
    av_error_t first[2] = {
        event("intake", "", AV_LEVEL_ERR, "a", "x"),
        event("intake", "", AV_LEVEL_ERR, "b", "x"),
    };
    append(f, first, 2, T0);
    assert_int_equal(first[0].seq, 1);
    assert_int_equal(first[1].seq, 2);
    assert_int_equal(first[0].received_ms, T0);
    av_error_t second = event("intake", "", AV_LEVEL_ERR, "c", "x");
    append(f, &second, 1, T0 + 1);
    assert_int_equal(second.seq, 3);
    assert_int_equal(second.received_ms, T0 + 1);
    assert_int_equal(errors_db_size(f->db), 3);
}

static void
test_an_event_reads_back_as_reported_newest_first(void **state)
{
    fixture_t *f = *state;
    av_error_t events[2] = {
        event("querier-denic", "denic", AV_LEVEL_WARNING, "timeout", "no answer in 5000 ms"),
        event("dispatcher", "", AV_LEVEL_ERR, "no_querier", "nobody serves .xyz"),
    };
    events[1].at_ms = T0 - 1000;
    events[1].pid = 77;
    append(f, events, 2, T0);
    seen_t *s = recent(f, NULL, 10);
    assert_int_equal(s->n, 2);
    const seen_event_t *e = &s->ev[0];
    assert_int_equal(e->seq, 2);
    assert_int_equal(e->received_ms, T0);
    assert_string_equal(e->daemon, "dispatcher");
    assert_string_equal(e->registry, "");
    assert_int_equal(e->level, AV_LEVEL_ERR);
    assert_string_equal(e->code, "no_querier");
    assert_string_equal(e->text, "nobody serves .xyz");
    assert_int_equal(e->at_ms, T0 - 1000);
    assert_int_equal(e->pid, 77);
    e = &s->ev[1];
    assert_int_equal(e->seq, 1);
    assert_string_equal(e->daemon, "querier-denic");
    assert_string_equal(e->registry, "denic");
    assert_int_equal(e->level, AV_LEVEL_WARNING);
    assert_string_equal(e->code, "timeout");
    assert_string_equal(e->text, "no answer in 5000 ms");
    assert_int_equal(e->at_ms, T0 - 5);
    assert_int_equal(e->pid, 4321);
    free(s);
}

static void
test_where_an_event_is_held_is_the_databases_to_say(void **state)
{
    fixture_t *f = *state;
    /* An event that arrives carrying seq and received (a republished one)
     * is numbered and dated here, and reads back so. */
    av_error_t ev = event("intake", "", AV_LEVEL_ERR, "a", "x");
    ev.seq = 99;
    ev.received_ms = 5;
    append(f, &ev, 1, T0);
    assert_int_equal(ev.seq, 1);
    assert_int_equal(ev.received_ms, T0);
    seen_t *s = recent(f, NULL, 10);
    assert_int_equal(s->n, 1);
    assert_int_equal(s->ev[0].seq, 1);
    assert_int_equal(s->ev[0].received_ms, T0);
    free(s);
}

static void
test_the_stored_form_is_the_arrival_time_and_the_event_as_reported(void **state)
{
    fixture_t *f = *state;
    av_error_t ev = event("intake", "verisign", AV_LEVEL_ERR, "a", "x");
    ev.seq = 99;
    append(f, &ev, 1, T0);
    errors_db_close(&f->db);
    /* Read the file as a later version would: be64 received_ms, then the
     * event as availd-errors received it, without where it is held. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi events;
    MDB_val key, val;
    uint8_t kbuf[8];
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, f->path, MDB_RDONLY, 0), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &events), 0);
    av_be64_put(kbuf, 1);
    key = (MDB_val){ 8, kbuf };
    assert_int_equal(mdb_get(txn, events, &key, &val), 0);
    assert_true(val.mv_size > 8);
    assert_int_equal(av_be64_get(val.mv_data), T0);
    av_msg_t msg;
    av_msg_init(&msg);
    assert_int_equal(av_msg_decode(&msg, (const char *)val.mv_data + 8, val.mv_size - 8), 0);
    assert_int_equal(msg.type, AV_MSG_ERROR);
    assert_int_equal(msg.root.via.map.size, 9); /* t, v and the event's seven */
    assert_int_equal(msg.u.error.seq, 0);
    assert_true(av_str_eq(msg.u.error.code, "a"));
    av_msg_release(&msg);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

static void
test_recent_stops_at_limit_and_at_after(void **state)
{
    fixture_t *f = *state;
    append_codes(f, 10, T0);
    seen_t *s = recent(f, NULL, 3);
    assert_int_equal(s->n, 3);
    assert_int_equal(s->ev[0].seq, 10);
    assert_int_equal(s->ev[2].seq, 8);
    free(s);
    errors_filter_t after = { .max_level = AV_LEVEL_DEBUG, .after_seq = 7 };
    s = recent(f, &after, 100);
    assert_int_equal(s->n, 3);
    assert_int_equal(s->ev[2].seq, 8);
    free(s);
}

static void
test_recent_filters_by_daemon_registry_and_level(void **state)
{
    fixture_t *f = *state;
    av_error_t events[4] = {
        event("querier-verisign", "verisign", AV_LEVEL_WARNING, "timeout", "1"),
        event("querier-denic", "denic", AV_LEVEL_ERR, "refused", "2"),
        event("dispatcher", "denic", AV_LEVEL_INFO, "slow", "3"),
        event("querier-verisign", "verisign", AV_LEVEL_ERR, "refused", "4"),
    };
    append(f, events, 4, T0);
    errors_filter_t by_daemon = { .daemon = AV_STR("querier-verisign"), .max_level = AV_LEVEL_DEBUG };
    seen_t *s = recent(f, &by_daemon, 100);
    assert_int_equal(s->n, 2);
    assert_string_equal(s->ev[0].text, "4");
    assert_string_equal(s->ev[1].text, "1");
    free(s);
    errors_filter_t by_registry = { .registry = AV_STR("denic"), .max_level = AV_LEVEL_DEBUG };
    s = recent(f, &by_registry, 100);
    assert_int_equal(s->n, 2);
    assert_string_equal(s->ev[0].text, "3");
    free(s);
    errors_filter_t errors_only = { .max_level = AV_LEVEL_ERR };
    s = recent(f, &errors_only, 100);
    assert_int_equal(s->n, 2);
    assert_string_equal(s->ev[0].text, "4");
    assert_string_equal(s->ev[1].text, "2");
    free(s);
    errors_filter_t warnings_up = { .max_level = AV_LEVEL_WARNING, .registry = AV_STR("verisign") };
    s = recent(f, &warnings_up, 100);
    assert_int_equal(s->n, 2);
    free(s);
    /* The limit counts matches, not what was looked at. */
    s = recent(f, &by_registry, 1);
    assert_int_equal(s->n, 1);
    assert_string_equal(s->ev[0].text, "3");
    free(s);
}

static void
test_counts_are_per_registry_and_code(void **state)
{
    fixture_t *f = *state;
    av_error_t events[5] = {
        event("querier-verisign", "verisign", AV_LEVEL_WARNING, "timeout", "1"),
        event("querier-verisign", "verisign", AV_LEVEL_WARNING, "timeout", "2"),
        event("querier-verisign", "verisign", AV_LEVEL_ERR, "refused", "3"),
        event("querier-denic", "denic", AV_LEVEL_WARNING, "timeout", "4"),
        event("intake", "", AV_LEVEL_ERR, "journal", "5"),
    };
    append(f, events, 5, T0);
    assert_counts(f, "/journal=1\ndenic/timeout=1\nverisign/refused=1\nverisign/timeout=2\n");
}

static void
test_a_reopened_database_keeps_its_events_and_numbers_on(void **state)
{
    fixture_t *f = *state;
    append_codes(f, 3, T0);
    reopen(f);
    assert_int_equal(errors_db_size(f->db), 3);
    av_error_t ev = event("intake", "", AV_LEVEL_ERR, "after", "x");
    append(f, &ev, 1, T0 + 1);
    assert_int_equal(ev.seq, 4);
    assert_counts(f, "/after=1\nverisign/c0=1\nverisign/c1=1\nverisign/c2=1\n");
}

/* ---- retention ---------------------------------------------------------- */

static void
test_retention_by_count_drops_the_oldest_and_their_counts(void **state)
{
    fixture_t *f = *state;
    errors_db_set_retention(f->db, 4, 3600);
    append_codes(f, 3, T0);         /* c0 c1 c2 */
    append_codes(f, 3, T0 + 1);     /* c0 c1 c2 again: the first c0 and c1 go */
    assert_int_equal(errors_db_size(f->db), 4);
    seen_t *s = recent(f, NULL, 100);
    assert_int_equal(s->n, 4);
    assert_int_equal(s->ev[3].seq, 3);
    free(s);
    assert_counts(f, "verisign/c0=1\nverisign/c1=1\nverisign/c2=2\n");
    /* A lower bound applies at the next append. */
    errors_db_set_retention(f->db, 1, 3600);
    av_error_t ev = event("intake", "", AV_LEVEL_ERR, "last", "x");
    append(f, &ev, 1, T0 + 2);
    assert_int_equal(errors_db_size(f->db), 1);
    assert_counts(f, "/last=1\n");
}

static void
test_expire_drops_what_was_received_before_the_age_bound(void **state)
{
    fixture_t *f = *state;
    errors_db_set_retention(f->db, 1000, 60);
    append_codes(f, 2, T0);          /* c0 c1 */
    av_error_t later = event("intake", "", AV_LEVEL_ERR, "later", "x");
    append(f, &later, 1, T0 + S(30));
    assert_int_equal(errors_db_expire(f->db, T0 + S(59)), 0);
    assert_int_equal(errors_db_expire(f->db, T0 + S(60)), 0); /* exactly the bound: kept */
    assert_int_equal(errors_db_expire(f->db, T0 + S(60) + 1), 2);
    assert_int_equal(errors_db_size(f->db), 1);
    assert_counts(f, "/later=1\n");
    assert_int_equal(errors_db_expire(f->db, T0 + S(1000)), 1);
    assert_int_equal(errors_db_size(f->db), 0);
    assert_counts(f, "");
    /* Numbers go on after everything expired. */
    av_error_t next = event("intake", "", AV_LEVEL_ERR, "next", "x");
    append(f, &next, 1, T0 + S(1000));
    assert_int_equal(next.seq, 4);
}

static void
test_a_map_too_small_for_the_retention_keeps_the_newest(void **state)
{
    fixture_t *f = *state;
    /* 4 MiB, events of 2 KiB, room for a million: the map fills first. */
    errors_db_close(&f->db);
    f->cfg.map_size_mb = 4;
    f->cfg.retention_count = 1000000;
    assert_non_null(f->db = errors_db_open(NULL, &f->cfg));
    char text[2048];
    memset(text, 't', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    enum { BATCH = 20, BATCHES = 250 };
    av_error_t events[BATCH];
    for (uint32_t b = 0; b < BATCHES; b++) {
        for (uint32_t i = 0; i < BATCH; i++)
            events[i] = event("querier-verisign", i % 2 ? "verisign" : "denic", AV_LEVEL_WARNING, "timeout", text);
        append(f, events, BATCH, T0 + b); /* never refused */
    }
    uint64_t held = errors_db_size(f->db);
    if (held >= (uint64_t)BATCH * BATCHES || held < BATCH)
        fail_msg("%llu of %u events held", (unsigned long long)held, BATCH * BATCHES);
    seen_t *s = recent(f, NULL, BATCH);
    assert_int_equal(s->ev[0].seq, (uint64_t)BATCH * BATCHES);
    assert_int_equal(s->ev[BATCH - 1].received_ms, T0 + BATCHES - 1);
    free(s);
    /* The counts went with the events dropped: those held are the last
     * `held`, and event i of a batch was denic's when i is even. */
    uint64_t denic = 0, total = (uint64_t)BATCH * BATCHES;
    for (uint64_t seq = total - held + 1; seq <= total; seq++)
        denic += (seq - 1) % BATCH % 2 == 0;
    char want[128];
    snprintf(want, sizeof want, "denic/timeout=%llu\nverisign/timeout=%llu\n", (unsigned long long)denic,
             (unsigned long long)(held - denic));
    assert_counts(f, want);
}

static void
test_close_clears_the_pointer_and_tolerates_null(void **state)
{
    fixture_t *f = *state;
    errors_db_close(&f->db);
    assert_null(f->db);
    errors_db_close(&f->db);
    errors_db_close(NULL);
}


/* ---- a damaged database ---------------------------------------------------- */

/* Writes len bytes of pattern over the data file from its start. */
static void
garble_start(fixture_t *f, size_t len)
{
    char data[PATH_MAX];
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    memset(buf, 0x6B, len);
    FILE *out = fopen(unit_path(data, sizeof data, f->path, "data.mdb"), "r+b");
    assert_non_null(out);
    assert_int_equal(fwrite(buf, 1, len, out), len);
    assert_int_equal(fclose(out), 0);
    free(buf);
}

static void
test_a_damaged_database_is_moved_aside_and_opened_empty(void **state)
{
    fixture_t *f = *state;
    char data[PATH_MAX];
    append_codes(f, 40, T0);
    errors_db_close(&f->db);
    /* Garbage meta pages: moved aside, and an empty database numbers its
     * events from 1 again. */
    garble_start(f, 8192);
    assert_non_null(f->db = errors_db_open(NULL, &f->cfg));
    assert_int_equal(errors_db_size(f->db), 0);
    av_error_t ev = event("intake", "", AV_LEVEL_ERR, "after", "x");
    append(f, &ev, 1, T0 + 1);
    assert_int_equal(ev.seq, 1);
    assert_counts(f, "/after=1\n");
    /* Cut short, then not LMDB at all: the same. */
    append_codes(f, 200, T0 + 2);
    errors_db_close(&f->db);
    assert_int_equal(truncate(unit_path(data, sizeof data, f->path, "data.mdb"), 3 * 4096), 0);
    assert_non_null(f->db = errors_db_open(NULL, &f->cfg));
    assert_int_equal(errors_db_size(f->db), 0);
    errors_db_close(&f->db);
    assert_int_equal(unit_write_file(data, "an error database, honest"), 0);
    assert_non_null(f->db = errors_db_open(NULL, &f->cfg));
    assert_int_equal(errors_db_size(f->db), 0);
    /* Each damaged one kept beside it, for a post-mortem. */
    struct dirent **list;
    int n = scandir(f->path, &list, NULL, alphasort), copies = 0;
    for (int i = 0; i < n; i++) {
        copies += strncmp(list[i]->d_name, "data.mdb.damaged-", 17) == 0;
        free(list[i]);
    }
    free(list);
    assert_int_equal(copies, 3);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_events_are_numbered_in_arrival_order_across_appends),
        T(test_an_event_reads_back_as_reported_newest_first),
        T(test_where_an_event_is_held_is_the_databases_to_say),
        T(test_the_stored_form_is_the_arrival_time_and_the_event_as_reported),
        T(test_recent_stops_at_limit_and_at_after),
        T(test_recent_filters_by_daemon_registry_and_level),
        T(test_counts_are_per_registry_and_code),
        T(test_a_reopened_database_keeps_its_events_and_numbers_on),
        T(test_retention_by_count_drops_the_oldest_and_their_counts),
        T(test_expire_drops_what_was_received_before_the_age_bound),
        T(test_a_map_too_small_for_the_retention_keeps_the_newest),
        T(test_close_clears_the_pointer_and_tolerates_null),
        T(test_a_damaged_database_is_moved_aside_and_opened_empty),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
