/* Unit tests of availd-cache's store (cache_store, timing) and of the
 * readers' side it shares with the dispatcher (av_cache): answers stored in
 * batches and read back field by field, TTLs and staleness, overwrites,
 * sweeps and evictions in expiry order, a full map, purges, a reader in
 * another process, a damaged cache (cut short, garbage meta pages, not
 * LMDB) moved aside and started empty, a reader that never maps one and
 * lets go of one cut or replaced under it, and the per-registry timing
 * histograms. Each test has
 * its own LMDB environment in a temp directory; times are explicit
 * (now_ms), never the clock. */
#include "cache_store.h"

#include "av_lmdb.h"

#include "unit_files.h"

#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#define MINUTE_MS 60000ULL
/* A plausible now, in the middle of a minute (timing windows are minutes). */
#define T0 (28333334ULL * MINUTE_MS + 30000)
#define S(seconds) ((uint64_t)(seconds) * 1000)

/* ---- fixture and helpers ------------------------------------------------ */

typedef struct {
    char *dir;              /* private temp directory */
    char path[PATH_MAX];    /* dir/cache, the environment */
    av_cache_cfg_t cfg;
    cache_store_t *cache;   /* the writer */
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = unit_tmpdir_new("cache"))) {
        free(f);
        return -1;
    }
    unit_path(f->path, sizeof f->path, f->dir, "cache");
    f->cfg.path = f->path;
    f->cfg.map_size_mb = 16;
    f->cfg.max_entries = 1000;
    f->cfg.sweep_interval_s = 60;
    f->cfg.batch_max = 100;
    *state = f;
    return (f->cache = cache_store_open(NULL, &f->cfg)) ? 0 : -1;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    cache_store_close(&f->cache);
    unit_tmpdir_remove(&f->dir);
    free(f);
    return 0;
}

/* Reopens the writer with another max_entries. */
static void
reopen_with_max_entries(fixture_t *f, uint64_t max_entries)
{
    cache_store_close(&f->cache);
    f->cfg.max_entries = max_entries;
    assert_non_null(f->cache = cache_store_open(NULL, &f->cfg));
}

/* A whois answer from "verisign" decided at at_ms, kept ttl_s. */
static av_put_t
answer(const char *name, av_status_t status, uint64_t at_ms, uint32_t ttl_s)
{
    return (av_put_t){
        .answer = {
            .name = av_str(name),
            .status = status,
            .registry = AV_STR("verisign"),
            .source = AV_SOURCE_WHOIS,
            .at_ms = at_ms,
            .latency_us = 1500,
        },
        .ttl_s = ttl_s,
    };
}

/* A timing sample (not stored as an answer: ttl 0). */
static av_put_t
sample(const char *registry, av_status_t status, const char *reason, uint64_t latency_us)
{
    return (av_put_t){
        .answer = {
            .name = AV_STR("sample.com"),
            .status = status,
            .reason = av_str(reason),
            .registry = av_str(registry),
            .source = AV_SOURCE_WHOIS,
            .latency_us = latency_us,
        },
        .ttl_s = 0,
        .timing = true,
    };
}

/* Stores puts[0..n) in one batch at now_ms; must succeed. */
static void
put_batch(fixture_t *f, const av_put_t *puts, size_t n, uint64_t now_ms)
{
    const av_put_t **list = calloc(n ? n : 1, sizeof *list);
    assert_non_null(list);
    for (size_t i = 0; i < n; i++)
        list[i] = &puts[i];
    int rc = cache_store_put_batch(f->cache, list, n, now_ms);
    free(list);
    assert_int_equal(rc, 0);
}

static void
put_one(fixture_t *f, av_put_t put, uint64_t now_ms)
{
    put_batch(f, &put, 1, now_ms);
}

/* name must be cached with status and expires_ms. */
static void
assert_cached(cache_store_t *cache, const char *name, av_status_t status, uint64_t expires_ms)
{
    av_cached_t c;
    int rc = cache_store_get(cache, name, &c);
    if (rc != 0)
        fail_msg("%s: get returned %d, want it cached", name, rc);
    if (c.status != status || c.expires_ms != expires_ms)
        fail_msg("%s: want status %d expiring at %llu, got status %d expiring at %llu", name, status,
                 (unsigned long long)expires_ms, c.status, (unsigned long long)c.expires_ms);
}

static void
assert_absent(cache_store_t *cache, const char *name)
{
    av_cached_t c;
    int rc = cache_store_get(cache, name, &c);
    if (rc != 1)
        fail_msg("%s: get returned %d, want 1 (absent)", name, rc);
}

/* Every registry's timing, as cache_store_timing reports it. */
typedef struct {
    size_t n;
    timing_t t[80];
} timings_t;

static void
collect_timing(void *arg, const timing_t *t)
{
    timings_t *all = arg;
    if (all->n < sizeof all->t / sizeof all->t[0])
        all->t[all->n] = *t;
    all->n++;
}

static timings_t *
timings_at(cache_store_t *cache, uint64_t now_ms)
{
    timings_t *all = calloc(1, sizeof *all);
    assert_non_null(all);
    assert_int_equal(cache_store_timing(cache, now_ms, collect_timing, all), 0);
    return all;
}

static const timing_t *
timing_of(const timings_t *all, const char *registry)
{
    for (size_t i = 0; i < all->n && i < sizeof all->t / sizeof all->t[0]; i++)
        if (strcmp(all->t[i].registry, registry) == 0)
            return &all->t[i];
    fail_msg("no timing for registry %s", registry);
    return NULL;
}

/* ---- storing and reading ------------------------------------------------ */

static void
test_put_then_get_returns_every_field(void **state)
{
    fixture_t *f = *state;
    av_put_t puts[2] = {
        answer("example.com", AV_STATUS_REGISTERED, T0 - 250, 3600),
        answer("example.net", AV_STATUS_UNKNOWN, T0 - 100, 30),
    };
    puts[0].answer.latency_us = 123456;
    puts[1].answer.registry = AV_STR("nic-net");
    puts[1].answer.source = AV_SOURCE_RDAP;
    puts[1].answer.reason = AV_STR("timeout");
    puts[1].answer.latency_us = 7;
    put_batch(f, puts, 2, T0);

    av_cached_t c;
    assert_int_equal(cache_store_get(f->cache, "example.com", &c), 0);
    assert_int_equal(c.status, AV_STATUS_REGISTERED);
    assert_int_equal(c.source, AV_SOURCE_WHOIS);
    assert_string_equal(c.registry, "verisign");
    assert_string_equal(c.reason, "");
    assert_int_equal(c.at_ms, T0 - 250);
    assert_int_equal(c.expires_ms, T0 - 250 + S(3600)); /* from the verdict, not the put */
    assert_int_equal(c.latency_us, 123456);

    assert_int_equal(cache_store_get(f->cache, "example.net", &c), 0);
    assert_int_equal(c.status, AV_STATUS_UNKNOWN);
    assert_int_equal(c.source, AV_SOURCE_RDAP);
    assert_string_equal(c.registry, "nic-net");
    assert_string_equal(c.reason, "timeout");
    assert_int_equal(c.at_ms, T0 - 100);
    assert_int_equal(c.expires_ms, T0 - 100 + S(30));
    assert_int_equal(c.latency_us, 7);
    assert_int_equal(cache_store_entries(f->cache), 2);
}

static void
test_answer_without_at_ms_is_dated_now(void **state)
{
    fixture_t *f = *state;
    put_one(f, answer("example.com", AV_STATUS_AVAILABLE, 0, 60), T0);
    av_cached_t c;
    assert_int_equal(cache_store_get(f->cache, "example.com", &c), 0);
    assert_int_equal(c.at_ms, T0);
    assert_int_equal(c.expires_ms, T0 + S(60));
}

static void
test_long_registry_and_reason_are_cut_to_their_bounds(void **state)
{
    fixture_t *f = *state;
    char registry[AV_REGISTRY_MAX + 20], reason[AV_CACHE_REASON_MAX + 20];
    memset(registry, 'r', sizeof registry - 1);
    registry[sizeof registry - 1] = '\0';
    memset(reason, 'x', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    av_put_t p = answer("example.com", AV_STATUS_UNKNOWN, T0, 60);
    p.answer.registry = av_str(registry);
    p.answer.reason = av_str(reason);
    put_one(f, p, T0);
    av_cached_t c;
    assert_int_equal(cache_store_get(f->cache, "example.com", &c), 0);
    assert_int_equal(strlen(c.registry), AV_REGISTRY_MAX);
    assert_memory_equal(c.registry, registry, AV_REGISTRY_MAX);
    assert_int_equal(strlen(c.reason), AV_CACHE_REASON_MAX);
    assert_memory_equal(c.reason, reason, AV_CACHE_REASON_MAX);
    assert_int_equal(c.expires_ms, T0 + S(60)); /* the rest of the record intact */
}

static void
test_get_of_a_name_never_stored_is_absent(void **state)
{
    fixture_t *f = *state;
    put_one(f, answer("example.com", AV_STATUS_REGISTERED, T0, 60), T0);
    assert_absent(f->cache, "example.net");
    assert_absent(f->cache, "example.co"); /* a prefix of a stored name */
    assert_absent(f->cache, "");
    char long_name[AV_DOMAIN_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_absent(f->cache, long_name); /* longer than any name: no lookup */
}

static void
test_ttl_zero_stores_nothing_but_records_the_timing_sample(void **state)
{
    fixture_t *f = *state;
    av_put_t p = answer("example.com", AV_STATUS_UNKNOWN, T0, 0);
    p.timing = true;
    put_one(f, p, T0);
    assert_absent(f->cache, "example.com");
    assert_int_equal(cache_store_entries(f->cache), 0);
    timings_t *all = timings_at(f->cache, T0);
    assert_int_equal(all->n, 1);
    assert_int_equal(timing_of(all, "verisign")->total.count, 1);
    free(all);
}

static void
test_answer_already_stale_is_not_stored(void **state)
{
    fixture_t *f = *state;
    av_put_t puts[3] = {
        answer("long-ago.com", AV_STATUS_REGISTERED, T0 - S(20), 10),
        answer("just-now.com", AV_STATUS_REGISTERED, T0 - S(10), 10),     /* expires at now */
        answer("still-fresh.com", AV_STATUS_REGISTERED, T0 - S(10) + 1, 10), /* 1 ms to go */
    };
    put_batch(f, puts, 3, T0);
    assert_absent(f->cache, "long-ago.com");
    assert_absent(f->cache, "just-now.com");
    assert_cached(f->cache, "still-fresh.com", AV_STATUS_REGISTERED, T0 + 1);
    assert_int_equal(cache_store_entries(f->cache), 1);
    /* Nor does a stale answer leave an expiry entry for a sweep to find. */
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(3600), 100), 1);
}

static void
test_overwrite_with_a_later_expiry_keeps_the_new_entry_through_a_sweep(void **state)
{
    fixture_t *f = *state;
    put_one(f, answer("example.com", AV_STATUS_AVAILABLE, T0, 10), T0);
    put_one(f, answer("example.com", AV_STATUS_REGISTERED, T0 + S(1), 100), T0 + S(1));
    assert_cached(f->cache, "example.com", AV_STATUS_REGISTERED, T0 + S(101));
    assert_int_equal(cache_store_entries(f->cache), 1);
    /* Past the old expiry: the old index entry must be gone, or this sweep
     * would delete the new answer. */
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(50), 100), 0);
    assert_cached(f->cache, "example.com", AV_STATUS_REGISTERED, T0 + S(101));
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(200), 100), 1);
    assert_absent(f->cache, "example.com");
}

static void
test_overwrite_with_a_sooner_expiry_leaves_no_old_index_entry(void **state)
{
    fixture_t *f = *state;
    put_one(f, answer("example.com", AV_STATUS_REGISTERED, T0, 100), T0);
    put_one(f, answer("example.com", AV_STATUS_AVAILABLE, T0, 10), T0);
    assert_cached(f->cache, "example.com", AV_STATUS_AVAILABLE, T0 + S(10));
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(50), 100), 1);
    assert_absent(f->cache, "example.com");
    /* Past the old expiry there is nothing left to sweep. */
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(200), 100), 0);
}

static void
test_overwrite_within_one_batch_keeps_the_last(void **state)
{
    fixture_t *f = *state;
    av_put_t puts[3] = {
        answer("example.com", AV_STATUS_AVAILABLE, T0, 10),
        answer("example.com", AV_STATUS_RESERVED, T0, 20),
        answer("example.com", AV_STATUS_REGISTERED, T0, 30),
    };
    put_batch(f, puts, 3, T0);
    assert_cached(f->cache, "example.com", AV_STATUS_REGISTERED, T0 + S(30));
    assert_int_equal(cache_store_entries(f->cache), 1);
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(25), 100), 0);
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(35), 100), 1);
}

/* ---- sweeping and evicting ---------------------------------------------- */

/* Names and TTLs in an order that is neither by name nor by expiry. */
static const struct {
    const char *name;
    uint32_t ttl_s;
} shuffled[] = {
    { "delta.com", 40 }, { "alpha.com", 10 }, { "echo.com", 50 }, { "charlie.com", 30 },
    { "golf.com", 70 },  { "bravo.com", 20 }, { "foxtrot.com", 60 }, { "hotel.com", 80 },
};
#define N_SHUFFLED (sizeof shuffled / sizeof shuffled[0])

/* Each name of `shuffled` with ttl_s above `swept_s` must be cached intact;
 * every other must be absent. */
static void
assert_only_later_than(fixture_t *f, uint32_t swept_s)
{
    for (size_t i = 0; i < N_SHUFFLED; i++)
        if (shuffled[i].ttl_s > swept_s)
            assert_cached(f->cache, shuffled[i].name, AV_STATUS_REGISTERED, T0 + S(shuffled[i].ttl_s));
        else
            assert_absent(f->cache, shuffled[i].name);
}

static void
test_sweep_deletes_only_expired_entries(void **state)
{
    fixture_t *f = *state;
    /* One put per transaction, as a busy cache daemon would store them. */
    for (size_t i = 0; i < N_SHUFFLED; i++)
        put_one(f, answer(shuffled[i].name, AV_STATUS_REGISTERED, T0, shuffled[i].ttl_s), T0);
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(5), 100), 0);
    assert_int_equal(cache_store_entries(f->cache), 8);
    /* Expiring exactly at now counts as expired, as it does for a put. */
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(40), 100), 4);
    assert_only_later_than(f, 40);
    assert_int_equal(cache_store_entries(f->cache), 4);
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(1000), 100), 4);
    assert_int_equal(cache_store_entries(f->cache), 0);
}

static void
test_sweep_deletes_only_expired_entries_stored_in_one_batch(void **state)
{
    fixture_t *f = *state;
    av_put_t puts[N_SHUFFLED];
    for (size_t i = 0; i < N_SHUFFLED; i++)
        puts[i] = answer(shuffled[i].name, AV_STATUS_REGISTERED, T0, shuffled[i].ttl_s);
    put_batch(f, puts, N_SHUFFLED, T0);
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(35), 100), 3);
    assert_only_later_than(f, 35);
    assert_int_equal(cache_store_entries(f->cache), 5);
}

static void
test_sweep_deletes_at_most_max_soonest_first(void **state)
{
    fixture_t *f = *state;
    for (size_t i = 0; i < N_SHUFFLED; i++)
        put_one(f, answer(shuffled[i].name, AV_STATUS_REGISTERED, T0, shuffled[i].ttl_s), T0);
    /* All eight expired, two at a time: always the two soonest. */
    for (uint32_t done = 0; done < 80; done += 20) {
        assert_int_equal(cache_store_sweep(f->cache, T0 + S(1000), 2), 2);
        assert_only_later_than(f, done + 20);
    }
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(1000), 2), 0);
}

static void
test_max_entries_evicts_the_soonest_expiring_first(void **state)
{
    fixture_t *f = *state;
    reopen_with_max_entries(f, 5);
    av_put_t puts[N_SHUFFLED];
    for (size_t i = 0; i < N_SHUFFLED; i++)
        puts[i] = answer(shuffled[i].name, AV_STATUS_REGISTERED, T0, shuffled[i].ttl_s);
    /* Eight in one batch into room for five: the three soonest go. */
    put_batch(f, puts, N_SHUFFLED, T0);
    assert_int_equal(cache_store_entries(f->cache), 5);
    assert_only_later_than(f, 30);
}

static void
test_max_entries_evicts_across_batches_by_expiry_not_age(void **state)
{
    fixture_t *f = *state;
    reopen_with_max_entries(f, 3);
    put_one(f, answer("first.com", AV_STATUS_REGISTERED, T0, 300), T0);
    put_one(f, answer("second.com", AV_STATUS_REGISTERED, T0, 100), T0);
    put_one(f, answer("third.com", AV_STATUS_REGISTERED, T0, 200), T0);
    /* A fourth: the one closest to expiring goes, not the oldest. */
    put_one(f, answer("fourth.com", AV_STATUS_REGISTERED, T0, 400), T0);
    assert_int_equal(cache_store_entries(f->cache), 3);
    assert_absent(f->cache, "second.com");
    assert_cached(f->cache, "first.com", AV_STATUS_REGISTERED, T0 + S(300));
    assert_cached(f->cache, "third.com", AV_STATUS_REGISTERED, T0 + S(200));
    assert_cached(f->cache, "fourth.com", AV_STATUS_REGISTERED, T0 + S(400));
    /* An entry that would itself be the soonest to expire is the one evicted. */
    put_one(f, answer("fifth.com", AV_STATUS_REGISTERED, T0, 50), T0);
    assert_absent(f->cache, "fifth.com");
    assert_int_equal(cache_store_entries(f->cache), 3);
}

static void
test_full_map_evicts_the_soonest_expiring_and_stores_the_batch(void **state)
{
    fixture_t *f = *state;
    /* A map of 4 MiB and room for a million entries: the map fills first. */
    cache_store_close(&f->cache);
    f->cfg.map_size_mb = 4;
    f->cfg.max_entries = 1000000;
    assert_non_null(f->cache = cache_store_open(NULL, &f->cfg));
    enum { BATCH = 100, BATCHES = 600 };
    av_put_t *puts = calloc(BATCH, sizeof *puts);
    char (*names)[32] = calloc(BATCH, sizeof *names);
    assert_non_null(puts);
    assert_non_null(names);
    /* Each batch lives longer than the one before: the oldest batches are
     * the soonest to expire. */
    uint64_t stored = 0;
    for (uint32_t b = 0; b < BATCHES; b++) {
        for (uint32_t i = 0; i < BATCH; i++) {
            snprintf(names[i], sizeof names[i], "name-%05u-%03u.com", b, i);
            puts[i] = answer(names[i], AV_STATUS_REGISTERED, T0, 1000 + b);
        }
        put_batch(f, puts, BATCH, T0); /* never refused */
        stored += BATCH;
    }
    uint64_t kept = cache_store_entries(f->cache);
    if (kept >= stored || kept < BATCH)
        fail_msg("%llu of %llu entries kept: the map never filled, or too much went",
                 (unsigned long long)kept, (unsigned long long)stored);
    /* The last batch is whole, the first went. */
    for (uint32_t i = 0; i < BATCH; i++)
        assert_cached(f->cache, names[i], AV_STATUS_REGISTERED, T0 + S(1000 + BATCHES - 1));
    assert_absent(f->cache, "name-00000-000.com");
    /* What is kept is what expires last: a sweep up to the newest but one
     * batch's expiry leaves exactly the last batch. */
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(1000 + BATCHES - 2), kept), kept - BATCH);
    assert_int_equal(cache_store_entries(f->cache), BATCH);
    free(puts);
    free(names);
}

/* ---- purging ------------------------------------------------------------ */

static void
test_purge_of_one_name_removes_only_it(void **state)
{
    fixture_t *f = *state;
    av_put_t puts[3] = {
        answer("a.com", AV_STATUS_REGISTERED, T0, 10),
        answer("b.com", AV_STATUS_AVAILABLE, T0, 20),
        answer("c.com", AV_STATUS_RESERVED, T0, 30),
    };
    put_batch(f, puts, 3, T0);
    assert_int_equal(cache_store_purge(f->cache, "b.com"), 1);
    assert_absent(f->cache, "b.com");
    assert_cached(f->cache, "a.com", AV_STATUS_REGISTERED, T0 + S(10));
    assert_cached(f->cache, "c.com", AV_STATUS_RESERVED, T0 + S(30));
    assert_int_equal(cache_store_entries(f->cache), 2);
    /* Purging what is not there removes nothing and is no error. */
    assert_int_equal(cache_store_purge(f->cache, "b.com"), 0);
    assert_int_equal(cache_store_purge(f->cache, "never.com"), 0);
    /* Its expiry entry went with it: a sweep past it counts only the others. */
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(100), 100), 2);
}

static void
test_purge_of_everything_empties_the_cache_and_it_stays_usable(void **state)
{
    fixture_t *f = *state;
    av_put_t puts[3] = {
        answer("a.com", AV_STATUS_REGISTERED, T0, 10),
        answer("b.com", AV_STATUS_AVAILABLE, T0, 20),
        answer("c.com", AV_STATUS_RESERVED, T0, 30),
    };
    put_batch(f, puts, 3, T0);
    assert_int_equal(cache_store_purge(f->cache, NULL), 3);
    assert_int_equal(cache_store_entries(f->cache), 0);
    assert_absent(f->cache, "a.com");
    assert_int_equal(cache_store_sweep(f->cache, T0 + S(100), 100), 0);
    assert_int_equal(cache_store_purge(f->cache, NULL), 0);

    put_one(f, answer("d.com", AV_STATUS_REGISTERED, T0, 10), T0);
    assert_cached(f->cache, "d.com", AV_STATUS_REGISTERED, T0 + S(10));
    assert_int_equal(cache_store_entries(f->cache), 1);
}

static void
test_purge_keeps_the_timing_history(void **state)
{
    fixture_t *f = *state;
    av_put_t p = answer("a.com", AV_STATUS_REGISTERED, T0, 10);
    p.timing = true;
    put_one(f, p, T0);
    assert_int_equal(cache_store_purge(f->cache, NULL), 1);
    timings_t *all = timings_at(f->cache, T0);
    assert_int_equal(timing_of(all, "verisign")->total.count, 1);
    free(all);
}

/* ---- a reader in another process ---------------------------------------- */

static void
test_reader_of_a_path_without_an_environment_is_null(void **state)
{
    fixture_t *f = *state;
    char path[PATH_MAX];
    assert_null(av_cache_open_reader(unit_path(path, sizeof path, f->dir, "absent")));
    /* A directory the writer has not filled yet. */
    unit_path(path, sizeof path, f->dir, "empty");
    assert_int_equal(mkdir(path, 0700), 0);
    assert_null(av_cache_open_reader(path));
}

/* The reader's side: returns 0, or the number of the check that failed. It
 * runs in a child, as the dispatcher does (LMDB forbids opening one
 * environment twice in a process), so it may not use cmocka's assertions. */
static int
reader_checks(const char *path, int to_writer, int from_writer)
{
    av_cached_t c;
    char b;
    av_cache_t *r = av_cache_open_reader(path);
    if (!r)
        return 10;
    if (av_cache_get(r, "before.com", &c) != 0 || c.status != AV_STATUS_REGISTERED ||
        c.expires_ms != T0 + S(60) || strcmp(c.registry, "verisign") != 0)
        return 11;
    if (av_cache_get(r, "after.com", &c) != 1)
        return 12;
    /* The writer commits while the reader is open... */
    if (write(to_writer, "r", 1) != 1 || read(from_writer, &b, 1) != 1)
        return 13;
    /* ...and the reader's next lookup sees it, every field. */
    if (av_cache_get(r, "after.com", &c) != 0 || c.status != AV_STATUS_AVAILABLE || c.source != AV_SOURCE_WHOIS ||
        c.at_ms != T0 || c.expires_ms != T0 + S(60) || c.latency_us != 1500 || strcmp(c.registry, "verisign") != 0 ||
        strcmp(c.reason, "") != 0)
        return 14;
    if (av_cache_get(r, "before.com", &c) != 0)
        return 15;
    if (write(to_writer, "r", 1) != 1 || read(from_writer, &b, 1) != 1)
        return 17;
    if (av_cache_get(r, "before.com", &c) != 1 || av_cache_get(r, "after.com", &c) != 0)
        return 18; /* the purge is seen too */
    /* The writer restarts with a larger map and stores more: the reader
     * adopts the new size (MDB_MAP_RESIZED) and reads on. */
    if (write(to_writer, "r", 1) != 1 || read(from_writer, &b, 1) != 1)
        return 20;
    if (av_cache_get(r, "grown.com", &c) != 0 || c.status != AV_STATUS_RESERVED || av_cache_get(r, "after.com", &c) != 0)
        return 21;
    if (av_cache_get(r, "filler-19-0999-to-grow-the-map.com", &c) != 0)
        return 22;
    av_cache_close(&r);
    return r == NULL ? 0 : 19;
}

static void
test_reader_in_another_process_sees_the_writers_commits(void **state)
{
    fixture_t *f = *state;
    int up[2], down[2]; /* child -> parent, parent -> child */
    char b;
    /* A small map, so that the writer can later grow past the reader's. */
    cache_store_close(&f->cache);
    unit_path(f->path, sizeof f->path, f->dir, "small");
    f->cfg.map_size_mb = 1;
    f->cfg.max_entries = 1000000;
    assert_non_null(f->cache = cache_store_open(NULL, &f->cfg));
    put_one(f, answer("before.com", AV_STATUS_REGISTERED, T0, 60), T0);
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        _exit(reader_checks(f->path, up[1], down[0]));
    }
    close(up[1]);
    close(down[0]);
    if (read(up[0], &b, 1) == 1) {
        av_put_t p = answer("after.com", AV_STATUS_AVAILABLE, T0, 60);
        p.timing = true;
        put_one(f, p, T0);
        assert_int_equal(write(down[1], "w", 1), 1);
    }
    if (read(up[0], &b, 1) == 1) {
        assert_int_equal(cache_store_purge(f->cache, "before.com"), 1);
        assert_int_equal(write(down[1], "w", 1), 1);
    }
    if (read(up[0], &b, 1) == 1) {
        /* Restarted with 8 MiB, it stores 2 MiB and more: past the end of
         * the reader's 1 MiB mapping. */
        cache_store_close(&f->cache);
        f->cfg.map_size_mb = 8;
        assert_non_null(f->cache = cache_store_open(NULL, &f->cfg));
        put_one(f, answer("grown.com", AV_STATUS_RESERVED, T0, 60), T0);
        enum { FILLER = 1000 };
        av_put_t *puts = calloc(FILLER, sizeof *puts);
        char (*names)[40] = calloc(FILLER, sizeof *names);
        assert_non_null(puts);
        assert_non_null(names);
        for (int round = 0; round < 20; round++) {
            for (int i = 0; i < FILLER; i++) {
                snprintf(names[i], sizeof names[i], "filler-%02d-%04d-to-grow-the-map.com", round, i);
                puts[i] = answer(names[i], AV_STATUS_REGISTERED, T0, 60);
            }
            put_batch(f, puts, FILLER, T0);
        }
        free(puts);
        free(names);
        assert_int_equal(write(down[1], "w", 1), 1);
    }
    close(up[0]);
    close(down[1]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("reader failed check %d (status 0x%x)", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                 status);
}


/* ---- a damaged cache -------------------------------------------------------- */

/* n answers fill-0.com .. fill-(n-1).com, in batches of 500. */
static void
fill(fixture_t *f, int n)
{
    enum { BATCH = 500 };
    if (f->cfg.max_entries < 1000000)
        reopen_with_max_entries(f, 1000000);
    av_put_t *puts = calloc(BATCH, sizeof *puts);
    char (*names)[32] = calloc(BATCH, sizeof *names);
    assert_non_null(puts);
    assert_non_null(names);
    for (int first = 0; first < n; first += BATCH) {
        int k = n - first < BATCH ? n - first : BATCH;
        for (int i = 0; i < k; i++) {
            snprintf(names[i], sizeof names[i], "fill-%d.com", first + i);
            puts[i] = answer(names[i], AV_STATUS_REGISTERED, T0, 3600);
        }
        put_batch(f, puts, (size_t)k, T0);
    }
    free(puts);
    free(names);
}

static const char *
data_file(fixture_t *f, char *buf, size_t size)
{
    return unit_path(buf, size, f->path, "data.mdb");
}

/* The three damages of issue 12: cut to 100,000 bytes (or to half, for a
 * smaller file), garbage over both meta pages, not LMDB at all. */
static void
damage(fixture_t *f, int kind)
{
    char data[PATH_MAX];
    struct stat st;
    data_file(f, data, sizeof data);
    assert_int_equal(stat(data, &st), 0);
    if (kind == 0) {
        assert_int_equal(truncate(data, st.st_size > 100000 ? 100000 : st.st_size / 2), 0);
    } else if (kind == 1) {
        static uint8_t garbage[8192];
        memset(garbage, 0xC3, sizeof garbage);
        FILE *out = fopen(data, "r+b");
        assert_non_null(out);
        assert_int_equal(fwrite(garbage, 1, sizeof garbage, out), sizeof garbage);
        assert_int_equal(fclose(out), 0);
    } else {
        assert_int_equal(unit_write_file(data, "this is not the cache you are looking for\n"), 0);
    }
}

static int
damaged_copies(fixture_t *f)
{
    struct dirent **list;
    int n = scandir(f->path, &list, NULL, alphasort), copies = 0;
    for (int i = 0; i < n; i++) {
        copies += strncmp(list[i]->d_name, "data.mdb.damaged-", 17) == 0;
        free(list[i]);
    }
    if (n >= 0)
        free(list);
    return copies;
}

static void
test_a_damaged_cache_is_moved_aside_and_the_writer_starts_empty(void **state)
{
    fixture_t *f = *state;
    for (int kind = 0; kind < 3; kind++) {
        fill(f, 3000);
        assert_cached(f->cache, "fill-1.com", AV_STATUS_REGISTERED, T0 + S(3600));
        cache_store_close(&f->cache);
        damage(f, kind);
        /* Before: SIGBUS at open (cut short), or a refusal at every start. */
        assert_non_null(f->cache = cache_store_open(NULL, &f->cfg));
        assert_absent(f->cache, "fill-1.com");
        assert_int_equal(damaged_copies(f), kind + 1);
        put_one(f, answer("after.com", AV_STATUS_AVAILABLE, T0, 60), T0);
        assert_cached(f->cache, "after.com", AV_STATUS_AVAILABLE, T0 + S(60));
    }
}

static void
test_a_reader_never_maps_a_damaged_cache_and_lets_go_of_one_cut_under_it(void **state)
{
    fixture_t *f = *state;
    av_cached_t c;
    fill(f, 3000);
    cache_store_close(&f->cache); /* one environment per process: the reader's */
    av_cache_t *r = av_cache_open_reader(f->path);
    assert_non_null(r);
    assert_int_equal(av_cache_get(r, "fill-1.com", &c), 0);
    /* Cut under it: the next lookup lets go instead of dying of SIGBUS. */
    damage(f, 0);
    assert_int_equal(av_cache_get(r, "fill-2999.com", &c), -1);
    av_cache_close(&r);
    /* Damaged: no reader (every lookup a miss) until it is rebuilt. */
    for (int kind = 0; kind < 3; kind++) {
        if (kind)
            damage(f, kind);
        assert_null(av_cache_open_reader(f->path));
    }
    assert_non_null(f->cache = cache_store_open(NULL, &f->cfg));
    cache_store_close(&f->cache);
    assert_non_null(r = av_cache_open_reader(f->path));
    assert_int_equal(av_cache_get(r, "fill-1.com", &c), 1);
    av_cache_close(&r);
}

static void
test_a_reader_lets_go_of_a_cache_replaced_under_it(void **state)
{
    fixture_t *f = *state;
    av_cached_t c;
    char aside[PATH_MAX];
    fill(f, 10);
    cache_store_close(&f->cache);
    av_cache_t *r = av_cache_open_reader(f->path);
    assert_non_null(r);
    assert_int_equal(av_cache_get(r, "fill-1.com", &c), 0);
    /* availd-cache moves it aside and starts a new one. */
    assert_int_equal(av_lmdb_set_aside(f->path, aside, sizeof aside), 0);
    assert_non_null(f->cache = cache_store_open(NULL, &f->cfg));
    put_one(f, answer("new.com", AV_STATUS_AVAILABLE, T0, 60), T0);
    cache_store_close(&f->cache);
    /* The reader notices within a second or so (it looks at the path once
     * a second), and reads the old file meanwhile: nothing wrong in it. */
    int rc;
    uint64_t deadline_us = av_mono_us() + 10 * 1000000;
    while ((rc = av_cache_get(r, "fill-1.com", &c)) == 0 && av_mono_us() < deadline_us)
        usleep(20000);
    assert_int_equal(rc, -1);
    av_cache_close(&r);
    assert_non_null(r = av_cache_open_reader(f->path));
    assert_int_equal(av_cache_get(r, "new.com", &c), 0);
    assert_int_equal(av_cache_get(r, "fill-1.com", &c), 1);
    av_cache_close(&r);
}

/* ---- timing ------------------------------------------------------------- */

static void
test_timing_counts_samples_errors_and_rate_limits_per_registry(void **state)
{
    fixture_t *f = *state;
    av_put_t first[6] = {
        sample("alpha", AV_STATUS_REGISTERED, NULL, 1000),
        sample("alpha", AV_STATUS_REGISTERED, NULL, 2000),
        sample("alpha", AV_STATUS_UNKNOWN, AV_REASON_TIMEOUT, 9000),
        sample("beta", AV_STATUS_AVAILABLE, NULL, 500),
        sample("alpha", AV_STATUS_AVAILABLE, NULL, 1500),
        sample("beta", AV_STATUS_AVAILABLE, NULL, 600),
    };
    put_batch(f, first, 6, T0);
    av_put_t second[5] = {
        sample("alpha", AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED, 300),
        sample("alpha", AV_STATUS_REGISTERED, NULL, 1000),
        /* Not samples: a cache hit and an answer without a registry. */
        answer("hit.com", AV_STATUS_REGISTERED, T0, 0),
        sample("", AV_STATUS_UNKNOWN, AV_REASON_NO_QUERIER, 0),
        sample("beta", AV_STATUS_REGISTERED, NULL, 700),
    };
    put_batch(f, second, 5, T0 + S(2));

    timings_t *all = timings_at(f->cache, T0 + S(3));
    assert_int_equal(all->n, 2);
    /* In name order. */
    assert_string_equal(all->t[0].registry, "alpha");
    assert_string_equal(all->t[1].registry, "beta");
    const timing_t *a = &all->t[0], *b = &all->t[1];
    assert_int_equal(a->total.count, 6);
    assert_int_equal(a->total.errors, 2);        /* both unknown answers */
    assert_int_equal(a->total.rate_limited, 1);
    assert_int_equal(a->last_ms, T0 + S(2));
    assert_int_equal(b->total.count, 3);
    assert_int_equal(b->total.errors, 0);
    assert_int_equal(b->total.rate_limited, 0);
    /* All within the last minutes: recent is the same as total. */
    assert_int_equal(a->recent.count, 6);
    assert_int_equal(a->recent.errors, 2);
    assert_int_equal(a->recent.rate_limited, 1);
    assert_memory_equal(a->recent.hist, a->total.hist, sizeof a->total.hist);
    uint64_t in_hist = 0;
    for (int i = 0; i < TIMING_BUCKETS; i++)
        in_hist += a->total.hist[i];
    assert_int_equal(in_hist, 6);
    assert_int_equal(a->total.hist[timing_bucket(1000)], 2);
    free(all);
}

static void
test_timing_of_many_registries_in_one_batch_counts_each_sample_once(void **state)
{
    fixture_t *f = *state;
    /* More registries than one batch accumulates before writing them out. */
    enum { REGISTRIES = 70, ROUNDS = 3 };
    char names[REGISTRIES][8];
    av_put_t *puts = calloc(REGISTRIES * ROUNDS, sizeof *puts);
    assert_non_null(puts);
    for (int i = 0; i < REGISTRIES; i++)
        snprintf(names[i], sizeof names[i], "r%02d", i);
    for (int round = 0; round < ROUNDS; round++)
        for (int i = 0; i < REGISTRIES; i++)
            puts[round * REGISTRIES + i] = sample(names[i], AV_STATUS_REGISTERED, NULL, 1000 + i);
    put_batch(f, puts, REGISTRIES * ROUNDS, T0);
    free(puts);

    timings_t *all = timings_at(f->cache, T0);
    assert_int_equal(all->n, REGISTRIES);
    for (int i = 0; i < REGISTRIES; i++) {
        const timing_t *t = timing_of(all, names[i]);
        if (t->total.count != ROUNDS)
            fail_msg("%s: %llu samples, want %d", names[i], (unsigned long long)t->total.count, ROUNDS);
    }
    free(all);
}

static void
test_timing_quantiles_lie_within_a_quarter_of_the_samples(void **state)
{
    fixture_t *f = *state;
    /* 100 samples of 1, 2, ... 100 ms, in a scrambled order. */
    av_put_t puts[100];
    for (int i = 0; i < 100; i++)
        puts[i] = sample("verisign", AV_STATUS_REGISTERED, NULL, (uint64_t)((i * 37) % 100 + 1) * 1000);
    put_batch(f, puts, 100, T0);
    timings_t *all = timings_at(f->cache, T0);
    const timing_t *t = timing_of(all, "verisign");
    assert_int_equal(t->total.count, 100);

    const double qs[] = { 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0 };
    uint64_t previous = 0;
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        uint64_t us = timing_quantile(&t->total, qs[i]);
        /* The q-th sample is about q * 100 ms; a bucket spans at most a
         * quarter of its lower bound. */
        double exact_us = qs[i] * 100 * 1000;
        double low = exact_us - 1000, high = (exact_us + 1000) * 1.25;
        if ((double)us < low || (double)us > high)
            fail_msg("p%g = %llu us, want within [%.0f, %.0f]", qs[i] * 100, (unsigned long long)us, low, high);
        assert_true(us >= previous); /* a higher quantile is never lower */
        previous = us;
        assert_int_equal(timing_quantile(&t->recent, qs[i]), us);
    }
    uint64_t p50 = timing_quantile(&t->total, 0.5);
    assert_in_range(p50, 49000, 62500);
    free(all);
}

static void
test_timing_quantile_of_an_empty_histogram_is_zero(void **state)
{
    (void)state;
    timing_counts_t empty = { 0 };
    assert_int_equal(timing_quantile(&empty, 0.5), 0);
    assert_int_equal(timing_quantile(&empty, 1.0), 0);
}

static void
test_timing_quantile_of_one_sample_bounds_it_within_a_quarter(void **state)
{
    (void)state;
    /* Every value up to 2^16 us, then steps of 1/64 up to the last bucket. */
    for (uint64_t us = 0; us < (1ULL << 31); us = us < 65536 ? us + 1 : us + us / 64) {
        timing_counts_t c = { .count = 1 };
        c.hist[timing_bucket(us)] = 1;
        uint64_t q = timing_quantile(&c, 0.5);
        if (q < us || q > us + us / 4)
            fail_msg("a single sample of %llu us reads as %llu us", (unsigned long long)us,
                     (unsigned long long)q);
    }
}

static void
test_timing_bucket_is_monotonic_bounded_and_a_quarter_fine(void **state)
{
    (void)state;
    int previous = 0;
    for (uint64_t us = 0; us < (1ULL << 22); us++) {
        int b = timing_bucket(us);
        if (b < previous || b >= TIMING_BUCKETS)
            fail_msg("bucket(%llu) = %d after %d", (unsigned long long)us, b, previous);
        previous = b;
    }
    for (uint64_t us = 1ULL << 22; us != 0 && us < UINT64_MAX / 2; us += us / 8) {
        int b = timing_bucket(us);
        if (b < previous || b >= TIMING_BUCKETS)
            fail_msg("bucket(%llu) = %d after %d", (unsigned long long)us, b, previous);
        previous = b;
    }
    assert_int_equal(timing_bucket(UINT64_MAX), TIMING_BUCKETS - 1);
    /* 0-3 us get a bucket each; above that, values a quarter apart never
     * share one (below the last bucket, which takes everything larger). */
    assert_int_not_equal(timing_bucket(1), timing_bucket(2));
    assert_int_not_equal(timing_bucket(2), timing_bucket(3));
    for (uint64_t us = 4; us < (1ULL << 31); us += us / 16 + 1)
        if (timing_bucket(us) == timing_bucket(us + (us + 3) / 4))
            fail_msg("%llu us and %llu us share a bucket", (unsigned long long)us,
                     (unsigned long long)(us + (us + 3) / 4));
}

static void
test_timing_bucket_upper_bound_is_the_last_value_of_its_bucket(void **state)
{
    (void)state;
    /* Walks the buckets from 0 us up, boundary to boundary: each upper
     * bound is in its bucket and one more microsecond is in the next. */
    uint64_t us = 0;
    int walked = 0;
    for (;;) {
        int b = timing_bucket(us);
        uint64_t upper = timing_bucket_upper_us(b);
        if (upper < us || timing_bucket(upper) != b)
            fail_msg("bucket %d holds %llu us, but its upper bound is %llu us", b, (unsigned long long)us,
                     (unsigned long long)upper);
        walked++;
        if (b == TIMING_BUCKETS - 1)
            break; /* the last takes everything larger */
        if (timing_bucket(upper + 1) <= b)
            fail_msg("bucket %d: %llu us, past its upper bound, is still in it", b,
                     (unsigned long long)(upper + 1));
        us = upper + 1;
    }
    assert_in_range(walked, 100, TIMING_BUCKETS);
}

static void
test_timing_recent_covers_only_the_last_windows(void **state)
{
    fixture_t *f = *state;
    av_put_t puts[3] = {
        sample("verisign", AV_STATUS_REGISTERED, NULL, 1000),
        sample("verisign", AV_STATUS_UNKNOWN, AV_REASON_TIMEOUT, 2000),
        sample("verisign", AV_STATUS_REGISTERED, NULL, 3000),
    };
    put_batch(f, puts, 3, T0);
    timings_t *all = timings_at(f->cache, T0 + (TIMING_WINDOWS - 1) * MINUTE_MS);
    assert_int_equal(all->t[0].recent.count, 3);
    assert_int_equal(all->t[0].recent.errors, 1);
    free(all);

    /* TIMING_WINDOWS minutes later, they are history only. */
    all = timings_at(f->cache, T0 + TIMING_WINDOWS * MINUTE_MS);
    assert_int_equal(all->t[0].recent.count, 0);
    assert_int_equal(all->t[0].recent.errors, 0);
    assert_int_equal(timing_quantile(&all->t[0].recent, 0.5), 0);
    assert_int_equal(all->t[0].total.count, 3);
    free(all);

    /* A sample then reuses the old minute's window without adding to it. */
    put_one(f, sample("verisign", AV_STATUS_REGISTERED, NULL, 4000), T0 + TIMING_WINDOWS * MINUTE_MS);
    all = timings_at(f->cache, T0 + TIMING_WINDOWS * MINUTE_MS);
    assert_int_equal(all->t[0].recent.count, 1);
    assert_int_equal(all->t[0].recent.errors, 0);
    assert_int_equal(all->t[0].total.count, 4);
    assert_int_equal(all->t[0].last_ms, T0 + TIMING_WINDOWS * MINUTE_MS);
    free(all);
}

static void
test_timing_survives_closing_and_reopening(void **state)
{
    fixture_t *f = *state;
    put_one(f, sample("verisign", AV_STATUS_REGISTERED, NULL, 1000), T0);
    put_one(f, answer("kept.com", AV_STATUS_REGISTERED, T0, 60), T0);
    reopen_with_max_entries(f, 1000);
    assert_cached(f->cache, "kept.com", AV_STATUS_REGISTERED, T0 + S(60));
    put_one(f, sample("verisign", AV_STATUS_REGISTERED, NULL, 1000), T0 + S(1));
    timings_t *all = timings_at(f->cache, T0 + S(1));
    assert_int_equal(timing_of(all, "verisign")->total.count, 2);
    free(all);
}

static void
test_close_clears_the_pointer_and_tolerates_null(void **state)
{
    fixture_t *f = *state;
    cache_store_close(&f->cache);
    assert_null(f->cache);
    cache_store_close(&f->cache);
    cache_store_close(NULL);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_put_then_get_returns_every_field),
        T(test_answer_without_at_ms_is_dated_now),
        T(test_long_registry_and_reason_are_cut_to_their_bounds),
        T(test_get_of_a_name_never_stored_is_absent),
        T(test_ttl_zero_stores_nothing_but_records_the_timing_sample),
        T(test_answer_already_stale_is_not_stored),
        T(test_overwrite_with_a_later_expiry_keeps_the_new_entry_through_a_sweep),
        T(test_overwrite_with_a_sooner_expiry_leaves_no_old_index_entry),
        T(test_overwrite_within_one_batch_keeps_the_last),
        T(test_sweep_deletes_only_expired_entries),
        T(test_sweep_deletes_only_expired_entries_stored_in_one_batch),
        T(test_sweep_deletes_at_most_max_soonest_first),
        T(test_max_entries_evicts_the_soonest_expiring_first),
        T(test_max_entries_evicts_across_batches_by_expiry_not_age),
        T(test_full_map_evicts_the_soonest_expiring_and_stores_the_batch),
        T(test_purge_of_one_name_removes_only_it),
        T(test_purge_of_everything_empties_the_cache_and_it_stays_usable),
        T(test_purge_keeps_the_timing_history),
        T(test_reader_of_a_path_without_an_environment_is_null),
        T(test_reader_in_another_process_sees_the_writers_commits),
        T(test_a_damaged_cache_is_moved_aside_and_the_writer_starts_empty),
        T(test_a_reader_never_maps_a_damaged_cache_and_lets_go_of_one_cut_under_it),
        T(test_a_reader_lets_go_of_a_cache_replaced_under_it),
        T(test_timing_counts_samples_errors_and_rate_limits_per_registry),
        T(test_timing_of_many_registries_in_one_batch_counts_each_sample_once),
        T(test_timing_quantiles_lie_within_a_quarter_of_the_samples),
        cmocka_unit_test(test_timing_quantile_of_an_empty_histogram_is_zero),
        cmocka_unit_test(test_timing_quantile_of_one_sample_bounds_it_within_a_quarter),
        cmocka_unit_test(test_timing_bucket_is_monotonic_bounded_and_a_quarter_fine),
        cmocka_unit_test(test_timing_bucket_upper_bound_is_the_last_value_of_its_bucket),
        T(test_timing_recent_covers_only_the_last_windows),
        T(test_timing_survives_closing_and_reopening),
        T(test_close_clears_the_pointer_and_tolerates_null),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
