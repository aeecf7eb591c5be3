/* Unit tests of intake's request journal: a record survives encode then
 * decode field by field, the bytes are those the journal has always
 * written (a journal of an older intake still loads), damaged or hostile
 * records are refused without a crash, and a journal's records become the
 * requests a restarted intake asks again: names already answered left out,
 * deadlines carried over, unreadable records dropped. On a full disk (the
 * data file may not grow: RLIMIT_FSIZE), a failed commit keeps its deletes
 * and rewrites for the next one, gives up its new records, and writes the
 * deletes on their own when only the new records do not fit; its causes
 * are told apart. A damaged journal (cut short, garbage meta pages) is
 * found so, and salvaged: the records still readable go into a new
 * journal, the lost ones are counted. Each test has its own LMDB
 * environment in a temp directory. */
#include "intake.h"
#include "journal.h"

#include "av_lmdb.h"
#include "unit_files.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cmocka.h>

/* A record declaring four billion names would have msgpack-c reserve 64 GiB;
 * under AddressSanitizer such a reservation returns NULL (the decoder's
 * refusal) instead of aborting, as in test_proto. */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
    return "max_allocation_size_mb=1024:allocator_may_return_null=1";
}

#define SECOND_MS 1000ULL

/* ---- fixture and helpers ------------------------------------------------ */

typedef struct {
    char *dir;
    char path[PATH_MAX];    /* dir/journal, the environment */
    av_intake_cfg_t cfg;
    journal_t *journal;
    intake_t in;            /* for resubmission: the request table only */
    uint64_t counters[16];
    msgpack_sbuffer sbuf;
    bool disk_full;         /* RLIMIT_FSIZE set: lifted in teardown */
    struct rlimit fsize;    /* as it was */
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = unit_tmpdir_new("journal"))) {
        free(f);
        return -1;
    }
    unit_path(f->path, sizeof f->path, f->dir, "journal");
    f->cfg.journal = f->path;
    f->cfg.journal_map_mb = 16;
    msgpack_sbuffer_init(&f->sbuf);
    *state = f;
    return (f->journal = journal_open(NULL, &f->cfg)) ? 0 : -1;
}

static void disk_freed(fixture_t *f);

static int
teardown(void **state)
{
    fixture_t *f = *state;
    disk_freed(f);
    if (f->in.requests)
        requests_close(&f->in); /* closes in.journal */
    journal_close(&f->journal);
    msgpack_sbuffer_destroy(&f->sbuf);
    unit_tmpdir_remove(&f->dir);
    free(f);
    return 0;
}

static void
reopen(fixture_t *f)
{
    journal_close(&f->journal);
    f->journal = journal_open(NULL, &f->cfg);
    assert_non_null(f->journal);
}

/* The journal's LMDB environment itself, past the journal's code: the
 * journal is closed meanwhile (one environment per process). */
static MDB_env *
raw_open(fixture_t *f, MDB_txn **txn, MDB_dbi *dbi)
{
    MDB_env *env;
    journal_close(&f->journal);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 2), 0);
    assert_int_equal(mdb_env_open(env, f->path, MDB_NOTLS, 0660), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, txn), 0);
    assert_int_equal(mdb_dbi_open(*txn, "requests", MDB_CREATE, dbi), 0);
    return env;
}

static void
raw_close(fixture_t *f, MDB_env *env, MDB_txn *txn)
{
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    reopen(f);
}

/* Stores bytes under rid as they are. */
static void
put_raw(fixture_t *f, uint64_t rid, const void *bytes, size_t size)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t keybuf[8];
    MDB_env *env = raw_open(f, &txn, &dbi);
    av_be64_put(keybuf, rid);
    MDB_val key = { 8, keybuf }, val = { size, (void *)bytes };
    assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
    raw_close(f, env, txn);
}

/* Records stored, readable or not. */
static size_t
stored_records(fixture_t *f)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st;
    MDB_env *env = raw_open(f, &txn, &dbi);
    assert_int_equal(mdb_stat(txn, dbi, &st), 0);
    raw_close(f, env, txn);
    return st.ms_entries;
}

/* The record layout as intake's journal_put packed it by hand before the
 * record had its own encoder: what journals on disk hold today. */
static void
pack_old_record(msgpack_sbuffer *sbuf, uint64_t origin, const char *id, bool batch, bool fresh, bool raw,
                uint64_t deadline_at, const char *peer, size_t peer_len, bool delimiter, const char *const *names,
                const uint8_t *done, uint32_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 10);
    av_pack_kv_uint(&pk, "version", 1);
    av_pack_kv_uint(&pk, "origin", origin);
    av_pack_kv_strn(&pk, "id", av_str(id));
    av_pack_kv_bool(&pk, "batch", batch);
    av_pack_kv_bool(&pk, "fresh", fresh);
    av_pack_kv_bool(&pk, "raw", raw);
    av_pack_kv_uint(&pk, "deadline_at", deadline_at);
    av_pack_str(&pk, "peer");
    msgpack_pack_bin(&pk, peer_len);
    if (peer_len)
        msgpack_pack_bin_body(&pk, peer, peer_len);
    av_pack_kv_bool(&pk, "delimiter", delimiter);
    uint32_t left = 0;
    for (uint32_t i = 0; i < n; i++)
        left += !done[i];
    av_pack_str(&pk, "names");
    msgpack_pack_array(&pk, left);
    for (uint32_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, i);
        av_pack_strn(&pk, av_str(names[i]));
    }
}

/* ---- a full disk ------------------------------------------------------------ */

/* From now on the journal's data file cannot grow, as on a full disk: a
 * write past its size fails (EFBIG; SIGXFSZ is ignored) or comes out short
 * (LMDB's EIO), while pages inside it, freed by earlier commits, can still
 * be written. */
static void
disk_full(fixture_t *f)
{
    char data[PATH_MAX];
    struct stat st;
    unit_path(data, sizeof data, f->path, "data.mdb");
    assert_int_equal(stat(data, &st), 0);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &f->fsize), 0);
    struct rlimit full = { (rlim_t)st.st_size, f->fsize.rlim_max };
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &full), 0);
    f->disk_full = true;
}

static void
disk_freed(fixture_t *f)
{
    if (f->disk_full)
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &f->fsize), 0);
    f->disk_full = false;
}

/* A pushed batch of n long names (about n KiB): more pages than a full
 * disk has free. */
#define BIG_NAMES 400
static av_str_t big_names[BIG_NAMES];
static uint8_t none_of_them_answered[BIG_NAMES];

static journal_record_t
big_record(uint64_t rid, uint32_t n)
{
    static char name[1000];
    memset(name, 'x', sizeof name);
    for (uint32_t i = 0; i < n && i < BIG_NAMES; i++)
        big_names[i] = (av_str_t){ name, sizeof name };
    return (journal_record_t){
        .rid = rid,
        .origin = ORIGIN_PULL,
        .id = AV_STR("big"),
        .batch = true,
        .deadline_at_ms = 5000,
        .n_names = n,
        .names = big_names,
        .answered = none_of_them_answered,
    };
}

static void
assert_str(av_str_t s, const char *want)
{
    if (s.len != strlen(want) || (s.len && memcmp(s.ptr, want, s.len) != 0))
        fail_msg("got '%.*s', want '%s'", (int)s.len, s.ptr, want);
}

/* A batch of three pushed names, the middle one already published. */
static av_str_t three_names[3] = { AV_STR("a.com"), AV_STR("b.net"), AV_STR("xn--bcher-kva.de") };
static uint8_t middle_answered[3] = { 0, 1, 0 };

static journal_record_t
batch_record(uint64_t rid, uint64_t deadline_at_ms)
{
    return (journal_record_t){
        .rid = rid,
        .origin = ORIGIN_PULL,
        .id = AV_STR("push-7"),
        .batch = true,
        .fresh = true,
        .deadline_at_ms = deadline_at_ms,
        .n_names = 3,
        .names = three_names,
        .answered = middle_answered,
    };
}

static journal_record_t
router_record(uint64_t rid, const char *name, uint64_t deadline_at_ms)
{
    static uint8_t none_answered[1];
    static av_str_t one_name[1];
    one_name[0] = av_str(name);
    return (journal_record_t){
        .rid = rid,
        .origin = ORIGIN_ROUTER,
        .id = AV_STR("req-1"),
        .raw = true,
        .deadline_at_ms = deadline_at_ms,
        .peer = { "\0\x8b\x45\x67\x01", 5 },
        .delimiter = true,
        .n_names = 1,
        .names = one_name,
        .answered = none_answered,
    };
}

static int
decode_sbuf(journal_record_t *rec, uint64_t rid, const msgpack_sbuffer *sbuf)
{
    return journal_record_decode(rec, rid, sbuf->data, sbuf->size);
}

/* ---- the record ---------------------------------------------------------- */

static void
test_record_round_trips_field_by_field(void **state)
{
    fixture_t *f = *state;
    journal_record_t in = router_record(42, "example.com", 1700000000123ull), out;
    assert_int_equal(journal_record_encode(&f->sbuf, &in), 0);
    assert_int_equal(decode_sbuf(&out, 42, &f->sbuf), 0);
    assert_true(out.rid == 42);
    assert_int_equal(out.origin, ORIGIN_ROUTER);
    assert_str(out.id, "req-1");
    assert_false(out.batch);
    assert_false(out.fresh);
    assert_true(out.raw);
    assert_true(out.deadline_at_ms == 1700000000123ull);
    assert_int_equal(out.peer.len, 5);
    assert_memory_equal(out.peer.ptr, "\0\x8b\x45\x67\x01", 5);
    assert_true(out.delimiter);
    assert_int_equal(out.n_names, 1);
    assert_str(out.names[0], "example.com");
    assert_int_equal(out.answered[0], 0);
    /* The decoded record owns its strings: the bytes may go. */
    msgpack_sbuffer_clear(&f->sbuf);
    assert_str(out.id, "req-1");
    journal_record_clear(&out);
    assert_null(out.names);
    journal_record_clear(&out); /* twice is harmless */
}

static void
test_record_leaves_answered_names_out_and_keeps_positions(void **state)
{
    fixture_t *f = *state;
    journal_record_t in = batch_record(9, 5000), out;
    assert_int_equal(journal_record_encode(&f->sbuf, &in), 0);
    assert_int_equal(decode_sbuf(&out, 9, &f->sbuf), 0);
    assert_true(out.batch);
    assert_true(out.fresh);
    assert_false(out.raw);
    assert_int_equal(out.peer.len, 0);
    assert_int_equal(out.n_names, 3);
    assert_str(out.names[0], "a.com");
    assert_int_equal(out.names[1].len, 0); /* not in the record */
    assert_str(out.names[2], "xn--bcher-kva.de");
    assert_memory_equal(out.answered, middle_answered, 3);
    journal_record_clear(&out);
    /* With the last names answered, the request comes back as long as its
     * last unanswered position: those answers are out already. */
    uint8_t tail_answered[3] = { 0, 1, 1 };
    in.answered = tail_answered;
    msgpack_sbuffer_clear(&f->sbuf);
    assert_int_equal(journal_record_encode(&f->sbuf, &in), 0);
    assert_int_equal(decode_sbuf(&out, 9, &f->sbuf), 0);
    assert_int_equal(out.n_names, 1);
    assert_str(out.names[0], "a.com");
    journal_record_clear(&out);
}

static void
test_record_bytes_are_the_old_hand_packed_layout(void **state)
{
    fixture_t *f = *state;
    const char *names[3] = { "a.com", "b.net", "xn--bcher-kva.de" };
    msgpack_sbuffer old;
    msgpack_sbuffer_init(&old);
    pack_old_record(&old, ORIGIN_PULL, "push-7", true, true, false, 5000, NULL, 0, false, names, middle_answered, 3);
    journal_record_t in = batch_record(9, 5000);
    assert_int_equal(journal_record_encode(&f->sbuf, &in), 0);
    assert_int_equal(f->sbuf.size, old.size);
    assert_memory_equal(f->sbuf.data, old.data, old.size);

    /* And a router request packed the old way reads back. */
    const char *one[1] = { "example.com" };
    uint8_t open[1] = { 0 };
    msgpack_sbuffer_clear(&old);
    pack_old_record(&old, ORIGIN_ROUTER, "req-1", false, false, true, 1700000000123ull, "\0\x8b\x45\x67\x01", 5, true,
                    one, open, 1);
    journal_record_t out;
    assert_int_equal(journal_record_decode(&out, 77, old.data, old.size), 0);
    assert_int_equal(out.origin, ORIGIN_ROUTER);
    assert_str(out.id, "req-1");
    assert_true(out.raw);
    assert_true(out.delimiter);
    assert_int_equal(out.peer.len, 5);
    assert_true(out.deadline_at_ms == 1700000000123ull);
    assert_str(out.names[0], "example.com");
    journal_record_clear(&out);
    msgpack_sbuffer_destroy(&old);
}

/* A good record of the required keys, but for `key`, whose value replace()
 * packs instead, or which is left out when replace is NULL. */
static void
pack_edited(msgpack_sbuffer *sbuf, const char *key, void (*replace)(msgpack_packer *pk))
{
    static const char *const keys[] = { "version", "origin", "id", "deadline_at", "peer", "names" };
    uint32_t pairs = 0;
    for (size_t i = 0; i < 6; i++)
        pairs += strcmp(keys[i], key) != 0 || replace;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, pairs);
    for (size_t i = 0; i < 6; i++) {
        const char *k = keys[i];
        if (strcmp(k, key) == 0) {
            if (replace) {
                av_pack_str(&pk, k);
                replace(&pk);
            }
            continue;
        }
        av_pack_str(&pk, k);
        if (strcmp(k, "version") == 0)
            msgpack_pack_uint64(&pk, 1);
        else if (strcmp(k, "origin") == 0)
            msgpack_pack_uint64(&pk, ORIGIN_PULL);
        else if (strcmp(k, "id") == 0)
            av_pack_str(&pk, "id-1");
        else if (strcmp(k, "deadline_at") == 0)
            msgpack_pack_uint64(&pk, 1000);
        else if (strcmp(k, "peer") == 0)
            msgpack_pack_bin(&pk, 0);
        else {
            msgpack_pack_array(&pk, 1);
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint32(&pk, 0);
            av_pack_str(&pk, "example.com");
        }
    }
}

static void
origin_3(msgpack_packer *pk)
{
    msgpack_pack_uint64(pk, 3);
}

static void
origin_gateway(msgpack_packer *pk)
{
    msgpack_pack_uint64(pk, ORIGIN_GATEWAY);
}

static void
origin_negative(msgpack_packer *pk)
{
    msgpack_pack_int64(pk, -1);
}

static void
id_as_bin(msgpack_packer *pk)
{
    msgpack_pack_bin(pk, 1);
    msgpack_pack_bin_body(pk, "x", 1);
}

static void
id_too_long(msgpack_packer *pk)
{
    char id[AV_ID_MAX + 1];
    memset(id, 'i', sizeof id);
    msgpack_pack_str(pk, sizeof id);
    msgpack_pack_str_body(pk, id, sizeof id);
}

static void
deadline_as_str(msgpack_packer *pk)
{
    av_pack_str(pk, "soon");
}

static void
peer_as_str(msgpack_packer *pk)
{
    av_pack_str(pk, "peer");
}

static void
peer_too_long(msgpack_packer *pk)
{
    char peer[256] = { 0 };
    msgpack_pack_bin(pk, sizeof peer);
    msgpack_pack_bin_body(pk, peer, sizeof peer);
}

static void
names_as_map(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 0);
}

static void
names_empty(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 0);
}

static void
names_too_many(msgpack_packer *pk)
{
    msgpack_pack_array(pk, AV_BATCH_MAX + 1);
    for (uint32_t i = 0; i <= AV_BATCH_MAX; i++) {
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint32(pk, i % AV_BATCH_MAX);
        av_pack_str(pk, "a.com");
    }
}

static void
names_entry_not_a_pair(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    av_pack_str(pk, "example.com");
}

static void
names_entry_of_three(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint32(pk, 0);
    av_pack_str(pk, "example.com");
    msgpack_pack_nil(pk);
}

static void
names_position_past_a_batch(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint32(pk, AV_BATCH_MAX);
    av_pack_str(pk, "example.com");
}

static void
names_position_negative(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int32(pk, -1);
    av_pack_str(pk, "example.com");
}

static void
names_name_too_long(msgpack_packer *pk)
{
    char name[AV_NAME_MAX + 1];
    memset(name, 'n', sizeof name);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_str(pk, sizeof name);
    msgpack_pack_str_body(pk, name, sizeof name);
}

static void
names_name_as_int(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint32(pk, 7);
}

static void
test_damaged_records_are_refused(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *key;
        void (*replace)(msgpack_packer *pk);
        const char *why;
    } cases[] = {
        { "origin", NULL, "origin missing" },
        { "origin", origin_3, "origin 3" },
        { "origin", origin_gateway, "a gateway request (never journaled)" },
        { "origin", origin_negative, "origin -1" },
        { "id", NULL, "id missing" },
        { "id", id_as_bin, "id as bin" },
        { "id", id_too_long, "id of 257 bytes" },
        { "deadline_at", NULL, "deadline missing" },
        { "deadline_at", deadline_as_str, "deadline as a string" },
        { "peer", NULL, "peer missing" },
        { "peer", peer_as_str, "peer as a string" },
        { "peer", peer_too_long, "peer of 256 bytes" },
        { "names", NULL, "names missing" },
        { "names", names_as_map, "names as a map" },
        { "names", names_empty, "no name at all" },
        { "names", names_too_many, "1001 names" },
        { "names", names_entry_not_a_pair, "a name without its position" },
        { "names", names_entry_of_three, "an entry of three" },
        { "names", names_position_past_a_batch, "position 1000" },
        { "names", names_position_negative, "position -1" },
        { "names", names_name_too_long, "a name of 1025 bytes" },
        { "names", names_name_as_int, "a name as an integer" },
    };
    /* The unedited record is good: each case fails for its one change. */
    journal_record_t rec;
    pack_edited(&f->sbuf, "none", NULL);
    assert_int_equal(decode_sbuf(&rec, 1, &f->sbuf), 0);
    journal_record_clear(&rec);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        msgpack_sbuffer_clear(&f->sbuf);
        pack_edited(&f->sbuf, cases[i].key, cases[i].replace);
        if (decode_sbuf(&rec, 1, &f->sbuf) != -1)
            fail_msg("%s: decoded, want it refused", cases[i].why);
        assert_null(rec.names);
        assert_null(rec.strings);
    }
    /* No rid (a key that is not 8 bytes reads as rid 0). */
    msgpack_sbuffer_clear(&f->sbuf);
    pack_edited(&f->sbuf, "none", NULL);
    assert_int_equal(decode_sbuf(&rec, 0, &f->sbuf), -1);
}

static void
test_truncated_garbage_and_hostile_bytes_are_refused_without_a_crash(void **state)
{
    fixture_t *f = *state;
    journal_record_t in = batch_record(3, 5000), out;
    assert_int_equal(journal_record_encode(&f->sbuf, &in), 0);
    /* Every proper prefix of a good record. */
    for (size_t n = 0; n < f->sbuf.size; n++)
        if (journal_record_decode(&out, 3, f->sbuf.data, n) != -1)
            fail_msg("a record cut to %zu of %zu bytes decoded", n, f->sbuf.size);
    static const struct {
        const char *bytes;
        size_t size;
    } bad[] = {
        { "", 0 },
        { "\xc1", 1 },                               /* never used in msgpack */
        { "\x93\x01\x02\x03", 4 },                   /* an array, not a map */
        { "\xa5hello", 6 },                          /* a string */
        { "\x81\xa5names\xdd\xff\xff\xff\xff", 12 }, /* four billion names declared */
        { "\xdf\xff\xff\xff\xff", 5 },               /* four billion pairs declared */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (journal_record_decode(&out, 3, bad[i].bytes, bad[i].size) != -1)
            fail_msg("bad record %zu decoded", i);
}

/* ---- the journal ---------------------------------------------------------- */

static int
count_record(void *arg, journal_record_t *rec)
{
    (void)rec;
    (*(int *)arg)++;
    return 0;
}

static int
records_in(fixture_t *f)
{
    int n = 0;
    assert_int_equal(journal_load(f->journal, count_record, &n), 0);
    return n;
}

/* What the journal holds: names not answered per rid (0: no record). */
typedef struct {
    uint32_t left[64];
} on_disk_t;

static int
note_record(void *arg, journal_record_t *rec)
{
    on_disk_t *d = arg;
    uint32_t left = 0;
    for (uint32_t i = 0; i < rec->n_names; i++)
        left += !rec->answered[i];
    if (rec->rid < 64)
        d->left[rec->rid] = left;
    return 0;
}

static on_disk_t
on_disk(journal_t *j)
{
    on_disk_t d = { { 0 } };
    assert_int_equal(journal_load(j, note_record, &d), 0);
    return d;
}

static void
test_put_commit_delete_survive_reopening(void **state)
{
    fixture_t *f = *state;
    journal_record_t a = batch_record(1, 5000), b = router_record(2, "example.com", 6000);
    assert_int_equal(journal_put(f->journal, &a), 0);
    assert_int_equal(journal_put(f->journal, &b), 0);
    assert_int_equal(records_in(f), 0); /* queued, not committed */
    assert_int_equal(journal_commit(f->journal), 0);
    assert_int_equal(records_in(f), 2);
    assert_int_equal(journal_delete(f->journal, 1), 0);
    assert_int_equal(journal_delete(f->journal, 99), 0); /* not there: fine */
    assert_int_equal(journal_commit(f->journal), 0);
    assert_int_equal(journal_commit(f->journal), 0);     /* nothing queued */
    reopen(f);
    assert_int_equal(records_in(f), 1);
    assert_int_equal(stored_records(f), 1);
}

static void
test_a_failed_commit_keeps_its_deletes_and_rewrites_and_retries_them(void **state)
{
    fixture_t *f = *state;
    journal_record_t one = router_record(1, "one.com", 5000), three = batch_record(3, 5000);
    journal_record_t two = router_record(2, "two.com", 5000);
    assert_int_equal(journal_put(f->journal, &one), 0);
    assert_int_equal(journal_put(f->journal, &two), 0);
    assert_int_equal(journal_put(f->journal, &three), 0);
    assert_int_equal(journal_commit(f->journal), 0);

    disk_full(f);
    /* A turn: request 1 answered, request 2's record rewritten (a record
     * too big for the pages the file has free), a new request 4. */
    journal_record_t rewrite = big_record(2, BIG_NAMES), four = router_record(4, "four.com", 5000);
    assert_int_equal(journal_delete(f->journal, 1), 0);
    assert_int_equal(journal_put(f->journal, &rewrite), 0);
    assert_int_equal(journal_put_new(f->journal, &four), 0);
    assert_int_equal(journal_pending(f->journal), 2);
    assert_int_equal(journal_commit(f->journal), -1);
    /* Not written, not forgotten: the delete and the rewrite wait; the new
     * record is given up (its request is refused). */
    assert_int_equal(journal_pending(f->journal), 2);
    assert_false(journal_retry_due(f->journal, av_mono_us()));
    on_disk_t d = on_disk(f->journal);
    assert_int_equal(d.left[1], 1);
    assert_int_equal(d.left[2], 1);
    assert_int_equal(d.left[3], 2);
    assert_int_equal(d.left[4], 0);

    /* Sooner than JOURNAL_RETRY_MS, a commit tries nothing: a new record
     * is refused at once, what waits still waits. */
    journal_record_t five = router_record(5, "five.com", 5000);
    assert_int_equal(journal_put_new(f->journal, &five), 0);
    assert_int_equal(journal_commit(f->journal), -1);
    assert_int_equal(journal_pending(f->journal), 2);

    /* Space again: the retry, once due, writes what waited, in order. */
    disk_freed(f);
    uint64_t waited_us = 0;
    while (!journal_retry_due(f->journal, av_mono_us()) && waited_us < 5000000) {
        usleep(10000);
        waited_us += 10000;
    }
    assert_true(journal_retry_due(f->journal, av_mono_us()));
    assert_int_equal(journal_commit(f->journal), 0);
    assert_int_equal(journal_pending(f->journal), 0);
    assert_false(journal_retry_due(f->journal, av_mono_us()));
    reopen(f);
    d = on_disk(f->journal);
    assert_int_equal(d.left[1], 0);
    assert_int_equal(d.left[2], BIG_NAMES);
    assert_int_equal(d.left[3], 2);
    assert_int_equal(d.left[4], 0);
    assert_int_equal(d.left[5], 0);
}

static void
test_deletes_are_written_when_only_the_new_records_do_not_fit(void **state)
{
    fixture_t *f = *state;
    journal_record_t one = router_record(1, "one.com", 5000), two = router_record(2, "two.com", 5000);
    assert_int_equal(journal_put(f->journal, &one), 0);
    assert_int_equal(journal_put(f->journal, &two), 0);
    assert_int_equal(journal_commit(f->journal), 0);
    /* Pages freed inside the file (a record written and deleted, and two
     * commits after, as a running journal has them). */
    journal_record_t medium = big_record(10, BIG_NAMES / 4), small = router_record(11, "small.com", 5000);
    assert_int_equal(journal_put(f->journal, &medium), 0);
    assert_int_equal(journal_commit(f->journal), 0);
    assert_int_equal(journal_delete(f->journal, 10), 0);
    assert_int_equal(journal_commit(f->journal), 0);
    assert_int_equal(journal_put(f->journal, &small), 0);
    assert_int_equal(journal_commit(f->journal), 0);
    assert_int_equal(journal_delete(f->journal, 11), 0);
    assert_int_equal(journal_commit(f->journal), 0);

    disk_full(f);
    journal_record_t big = big_record(20, BIG_NAMES);
    assert_int_equal(journal_delete(f->journal, 1), 0);
    assert_int_equal(journal_put_new(f->journal, &big), 0);
    assert_int_equal(journal_commit(f->journal), -1); /* the new record did not fit */
    assert_int_equal(journal_pending(f->journal), 0);  /* the delete went on its own */
    on_disk_t d = on_disk(f->journal);
    assert_int_equal(d.left[1], 0);
    assert_int_equal(d.left[2], 1);
    assert_int_equal(d.left[20], 0);
}

static void
test_a_stop_writes_at_once_or_leaves_the_journal_as_it_was(void **state)
{
    fixture_t *f = *state;
    journal_record_t one = router_record(1, "one.com", 5000), two = router_record(2, "two.com", 5000);
    assert_int_equal(journal_put(f->journal, &one), 0);
    assert_int_equal(journal_put(f->journal, &two), 0);
    assert_int_equal(journal_commit(f->journal), 0);
    journal_record_t rewrite = big_record(2, BIG_NAMES);

    /* Still full at the stop: closing gives up what waits, and the journal
     * holds requests 1 and 2 as they were, for the next intake to answer
     * (their answers were never sent). */
    disk_full(f);
    assert_int_equal(journal_delete(f->journal, 1), 0);
    assert_int_equal(journal_put(f->journal, &rewrite), 0);
    assert_int_equal(journal_commit(f->journal), -1);
    assert_int_equal(journal_commit_now(f->journal), -1);
    assert_int_equal(journal_pending(f->journal), 2);
    disk_freed(f);
    reopen(f);
    on_disk_t d = on_disk(f->journal);
    assert_int_equal(d.left[1], 1);
    assert_int_equal(d.left[2], 1);

    /* Space again at the stop: written at once, however recent the
     * failure. */
    disk_full(f);
    assert_int_equal(journal_delete(f->journal, 1), 0);
    assert_int_equal(journal_put(f->journal, &rewrite), 0);
    assert_int_equal(journal_commit(f->journal), -1);
    disk_freed(f);
    assert_int_equal(journal_commit_now(f->journal), 0);
    assert_int_equal(journal_pending(f->journal), 0);
    d = on_disk(f->journal);
    assert_int_equal(d.left[1], 0);
    assert_int_equal(d.left[2], BIG_NAMES);
}

static void
test_failure_causes_are_told_apart(void **state)
{
    fixture_t *f = *state;
    char cause[160];
    assert_string_equal(journal_describe_failure(MDB_MAP_FULL, f->path, cause, sizeof cause), "journal_map_full");
    assert_non_null(strstr(cause, "MDB_MAP_FULL"));
    assert_non_null(strstr(cause, "intake.journal_map_mb"));
    assert_string_equal(journal_describe_failure(ENOSPC, f->path, cause, sizeof cause), "journal_no_space");
    assert_string_equal(cause, "No space left on device");
    assert_string_equal(journal_describe_failure(EDQUOT, f->path, cause, sizeof cause), "journal_no_space");
    assert_string_equal(cause, "Disk quota exceeded");
    /* EIO with room on the filesystem (a test directory has room) is an
     * I/O error; with none it would be a short write on a full disk. */
    assert_string_equal(journal_describe_failure(EIO, f->path, cause, sizeof cause), "journal_io_error");
    assert_string_equal(cause, "Input/output error");
    assert_string_equal(journal_describe_failure(EFBIG, f->path, cause, sizeof cause), "journal_failed");
    assert_string_equal(cause, "File too large");
    assert_string_equal(journal_describe_failure(MDB_PANIC, NULL, cause, sizeof cause), "journal_failed");
    assert_non_null(strstr(cause, "MDB_PANIC"));
}

/* ---- resubmission ---------------------------------------------------------- */

/* The intake's request table over the fixture's journal, as a restarted
 * intake has it before it asks the dispatcher again. */
static void
resubmit_all(fixture_t *f)
{
    intake_t *in = &f->in;
    uint64_t **counters[] = {
        &in->requests_in, &in->names_in, &in->invalid_requests, &in->answers_out, &in->answers_lost, &in->duplicates,
        &in->stale,       &in->deadlines, &in->overloaded,     &in->malformed,   &in->resent,       &in->resubmitted,
        &in->storage_refused,
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        *counters[i] = &f->counters[i];
    assert_int_equal(requests_init(in), 0);
    in->journal = f->journal;
    f->journal = NULL; /* the intake's now */
    assert_int_equal(requests_resubmit_journal(in), 0);
}

static request_t *
request_of(fixture_t *f, uint64_t rid)
{
    char key[24];
    snprintf(key, sizeof key, "%llu", (unsigned long long)rid);
    return zhashx_lookup(f->in.requests, key);
}

static bool
queued_to_forward(const fixture_t *f, uint64_t rid)
{
    for (uint32_t i = 0; i < f->in.to_forward.count; i++)
        if (f->in.to_forward.rids[i] == rid)
            return true;
    return false;
}

static void
test_resubmission_rebuilds_the_requests_the_journal_holds(void **state)
{
    fixture_t *f = *state;
    uint64_t now_ms = av_now_ms();
    journal_record_t batch = batch_record(17, now_ms + 5 * SECOND_MS);
    journal_record_t single = router_record(5, "example.com", now_ms + 8 * SECOND_MS);
    single.peer = (av_str_t){ "shop-7", 6 }; /* a routing id the frontend set */
    assert_int_equal(journal_put(f->journal, &batch), 0);
    assert_int_equal(journal_put(f->journal, &single), 0);
    /* libzmq made this one up (first byte 0) for a connection to the
     * previous process: it may name another frontend's now. (After the
     * put: router_record's names are static.) */
    journal_record_t made_up = router_record(6, "example.net", now_ms + 7 * SECOND_MS);
    assert_int_equal(journal_put(f->journal, &made_up), 0);
    assert_int_equal(journal_commit(f->journal), 0);

    uint64_t before_us = av_mono_us();
    resubmit_all(f);
    uint64_t after_us = av_mono_us();

    assert_int_equal(zhashx_size(f->in.requests), 3);
    assert_true(f->in.next_rid == 17); /* new requests number on after the highest */
    assert_int_equal(*f->in.resubmitted, 3);
    assert_true(queued_to_forward(f, 17));
    assert_true(queued_to_forward(f, 5));

    request_t *r = request_of(f, 17);
    assert_non_null(r);
    assert_int_equal(r->origin, ORIGIN_PULL);
    assert_str(r->id, "push-7");
    assert_true(r->batch);
    assert_true(r->fresh);
    assert_false(r->raw);
    assert_int_equal(r->n_names, 3);
    assert_int_equal(r->answered, 1); /* the middle name was published: not again */
    assert_memory_equal(r->done, middle_answered, 3);
    assert_str(r->names[0], "a.com");
    assert_str(r->names[2], "xn--bcher-kva.de");
    assert_null(r->env.identity);
    assert_false(r->forwarded);
    assert_true(r->journaled); /* its end deletes its record */
    assert_true(r->durable);   /* never refused for storage */
    /* The deadline carried over: about 5 s from now, on the new clock. */
    assert_true(r->deadline_at_ms == now_ms + 5 * SECOND_MS);
    assert_in_range(r->deadline_us, before_us + 4000 * 1000, after_us + 5000 * 1000);

    r = request_of(f, 5);
    assert_non_null(r);
    assert_int_equal(r->origin, ORIGIN_ROUTER);
    assert_true(r->raw);
    assert_int_equal(r->n_names, 1);
    assert_int_equal(r->answered, 0);
    assert_str(r->names[0], "example.com");
    assert_non_null(r->env.identity); /* the reply goes to the frontend's routing id */
    assert_int_equal(zframe_size(r->env.identity), 6);
    assert_memory_equal(zframe_data(r->env.identity), "shop-7", 6);
    assert_true(r->env.delimiter);
    assert_in_range(r->deadline_us, before_us + 7000 * 1000, after_us + 8000 * 1000);

    r = request_of(f, 6);
    assert_non_null(r); /* still asked: its answer goes to the cache */
    assert_null(r->env.identity); /* and to no frontend */

    /* Sooner deadlines first: the scan answers them in order. */
    assert_ptr_equal(TAILQ_FIRST(&f->in.by_deadline), request_of(f, 17));
    assert_ptr_equal(TAILQ_LAST(&f->in.by_deadline, request_list), request_of(f, 5));
}

static void
test_resubmission_of_a_request_past_its_deadline_makes_it_due_now(void **state)
{
    fixture_t *f = *state;
    journal_record_t late = router_record(3, "late.com", av_now_ms() - 60 * SECOND_MS);
    journal_record_t far = router_record(4, "far.com", av_now_ms() + 3600 * SECOND_MS); /* a clock set back */
    assert_int_equal(journal_put(f->journal, &late), 0);
    assert_int_equal(journal_put(f->journal, &far), 0);
    assert_int_equal(journal_commit(f->journal), 0);
    resubmit_all(f);
    uint64_t now_us = av_mono_us();
    request_t *r = request_of(f, 3);
    assert_non_null(r);
    assert_true(r->deadline_us <= now_us); /* the first scan answers it `deadline` */
    r = request_of(f, 4);
    assert_non_null(r);
    assert_true(r->deadline_us <= now_us + 10 * 60 * 1000 * 1000ULL); /* never past the longest deadline */
}

static void
test_resubmission_drops_unreadable_records(void **state)
{
    fixture_t *f = *state;
    journal_record_t good = router_record(8, "example.com", av_now_ms() + 5 * SECOND_MS);
    assert_int_equal(journal_put(f->journal, &good), 0);
    assert_int_equal(journal_commit(f->journal), 0);
    put_raw(f, 9, "\x93\x01\x02\x03", 4);   /* not a map */
    msgpack_sbuffer_clear(&f->sbuf);
    pack_edited(&f->sbuf, "names", names_empty);
    put_raw(f, 10, f->sbuf.data, f->sbuf.size);
    put_raw(f, 0, f->sbuf.data, f->sbuf.size); /* rid 0 is never ours */
    assert_int_equal(stored_records(f), 4);

    resubmit_all(f);
    assert_int_equal(zhashx_size(f->in.requests), 1);
    assert_non_null(request_of(f, 8));
    assert_true(f->in.next_rid == 8);
    /* The bad ones are queued for deletion with the next commit. */
    assert_int_equal(journal_commit(f->in.journal), 0);
    f->journal = f->in.journal;
    f->in.journal = NULL;
    assert_int_equal(stored_records(f), 1);
    assert_int_equal(records_in(f), 1);
}

/* ---- a damaged journal ---------------------------------------------------- */

#define SALVAGE_REQUESTS 2000

/* Requests 1..n, each one name "req-RID.com", in commits of 100. */
static void
journal_requests(fixture_t *f, uint64_t n)
{
    char name[32];
    for (uint64_t rid = 1; rid <= n; rid++) {
        snprintf(name, sizeof name, "req-%llu.com", (unsigned long long)rid);
        journal_record_t rec = router_record(rid, name, av_now_ms() + 60 * SECOND_MS);
        assert_int_equal(journal_put(f->journal, &rec), 0);
        if (rid % 100 == 0 || rid == n)
            assert_int_equal(journal_commit(f->journal), 0);
    }
}

/* The whole data file, into *bytes (malloc'd). */
static size_t
read_data_file(fixture_t *f, uint8_t **bytes)
{
    char data[PATH_MAX];
    struct stat st;
    unit_path(data, sizeof data, f->path, "data.mdb");
    assert_int_equal(stat(data, &st), 0);
    *bytes = malloc((size_t)st.st_size);
    assert_non_null(*bytes);
    FILE *in = fopen(data, "rb");
    assert_non_null(in);
    assert_int_equal(fread(*bytes, 1, (size_t)st.st_size, in), (size_t)st.st_size);
    fclose(in);
    return (size_t)st.st_size;
}

/* The journal directory anew, holding only bytes[0..n) as its data file. */
static void
write_journal_file(fixture_t *f, const uint8_t *bytes, size_t n)
{
    char data[PATH_MAX];
    unit_tmpdir_remove(&(char *){ strdup(f->path) }); /* the directory, damaged copies and all */
    assert_int_equal(mkdir(f->path, 0700), 0);
    FILE *out = fopen(unit_path(data, sizeof data, f->path, "data.mdb"), "wb");
    assert_non_null(out);
    assert_int_equal(fwrite(bytes, 1, n, out), n);
    assert_int_equal(fclose(out), 0);
}

/* Each record the journal holds is one written by journal_requests. */
typedef struct {
    uint64_t n;
    uint64_t wrong;
} salvaged_check_t;

static int
check_salvaged(void *arg, journal_record_t *rec)
{
    salvaged_check_t *c = arg;
    char name[32];
    snprintf(name, sizeof name, "req-%llu.com", (unsigned long long)rec->rid);
    c->n++;
    if (rec->rid < 1 || rec->rid > SALVAGE_REQUESTS || rec->n_names != 1 || rec->names[0].len != strlen(name) ||
        memcmp(rec->names[0].ptr, name, rec->names[0].len) != 0 || rec->origin != ORIGIN_ROUTER ||
        rec->peer.len != 5)
        c->wrong++;
    return 0;
}

static void
test_check_finds_a_sound_journal_sound_and_a_cut_or_garbled_one_damaged(void **state)
{
    fixture_t *f = *state;
    char why[256];
    uint8_t *bytes;
    journal_requests(f, 300);
    assert_int_equal(journal_check(&f->cfg, why, sizeof why), 0);
    journal_close(&f->journal);
    assert_int_equal(journal_check(&f->cfg, why, sizeof why), 0);
    size_t n = read_data_file(f, &bytes);
    write_journal_file(f, bytes, 3 * 4096);
    assert_int_equal(journal_check(&f->cfg, why, sizeof why), -1);
    assert_non_null(strstr(why, "truncated"));
    memset(bytes, 0x42, 4096);
    write_journal_file(f, bytes, n);
    assert_int_equal(journal_check(&f->cfg, why, sizeof why), -1);
    assert_non_null(strstr(why, "meta page 0 is not LMDB's"));
    free(bytes);
    unit_tmpdir_remove(&(char *){ strdup(f->path) });
    assert_int_equal(journal_check(&f->cfg, why, sizeof why), 1); /* none: intake makes one */
}

static void
test_salvage_saves_the_readable_records_and_counts_the_lost(void **state)
{
    fixture_t *f = *state;
    char why[512];
    uint8_t *bytes;
    journal_salvage_t out;
    journal_requests(f, SALVAGE_REQUESTS);
    journal_close(&f->journal);
    /* A sound journal is left alone. */
    assert_int_equal(journal_salvage(&f->cfg, &out, why, sizeof why), 1);
    assert_non_null(strstr(why, "sound"));
    size_t n = read_data_file(f, &bytes);
    /* Cut from the end, a page at a time, until a cut loses some records
     * and keeps some (the pages of a journal lie in no particular order). */
    bool partly = false;
    for (size_t at = n - 4096; at > 2 * 4096 && !partly; at -= 4096) {
        write_journal_file(f, bytes, at);
        if (journal_check(&f->cfg, why, sizeof why) == 0)
            continue; /* only free pages cut */
        assert_int_equal(journal_salvage(&f->cfg, &out, why, sizeof why), 0);
        partly = out.counted && out.saved > 0 && out.saved < SALVAGE_REQUESTS;
    }
    free(bytes);
    assert_true(partly);
    assert_non_null(strstr(out.damage, "truncated"));
    assert_int_equal(out.saved + out.lost, SALVAGE_REQUESTS);
    assert_int_equal(out.unreadable, 0);
    assert_true(out.pages_lost > 0);
    struct stat st;
    assert_int_equal(stat(out.aside, &st), 0); /* the damaged file, kept aside */
    assert_non_null(strstr(out.aside, "/data.mdb.damaged-"));
    /* The new journal is sound and holds what was saved, each as written. */
    assert_int_equal(journal_check(&f->cfg, why, sizeof why), 0);
    f->journal = journal_open(NULL, &f->cfg);
    assert_non_null(f->journal);
    salvaged_check_t c = { 0 };
    assert_int_equal(journal_load(f->journal, check_salvaged, &c), 0);
    assert_int_equal(c.n, out.saved);
    assert_int_equal(c.wrong, 0);
}

static void
test_salvage_of_a_journal_with_nothing_readable_leaves_an_empty_one(void **state)
{
    fixture_t *f = *state;
    char why[512];
    uint8_t *bytes;
    journal_salvage_t out;
    journal_requests(f, 100);
    journal_close(&f->journal);
    size_t n = read_data_file(f, &bytes);
    memset(bytes, 0x42, 2 * 4096); /* both meta pages */
    write_journal_file(f, bytes, n);
    free(bytes);
    assert_int_equal(journal_salvage(&f->cfg, &out, why, sizeof why), 0);
    assert_int_equal(out.saved, 0);
    assert_false(out.counted);
    assert_non_null(strstr(out.unread, "not LMDB's"));
    f->journal = journal_open(NULL, &f->cfg);
    assert_non_null(f->journal);
    assert_int_equal(records_in(f), 0);
    /* No journal at all: nothing to do. */
    journal_close(&f->journal);
    unit_tmpdir_remove(&(char *){ strdup(f->path) });
    assert_int_equal(journal_salvage(&f->cfg, &out, why, sizeof why), 1);
    assert_non_null(strstr(why, "no journal"));
}

int
main(void)
{
    signal(SIGXFSZ, SIG_IGN); /* a write past RLIMIT_FSIZE fails instead (disk_full) */
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_record_round_trips_field_by_field),
        T(test_record_leaves_answered_names_out_and_keeps_positions),
        T(test_record_bytes_are_the_old_hand_packed_layout),
        T(test_damaged_records_are_refused),
        T(test_truncated_garbage_and_hostile_bytes_are_refused_without_a_crash),
        T(test_put_commit_delete_survive_reopening),
        T(test_a_failed_commit_keeps_its_deletes_and_rewrites_and_retries_them),
        T(test_deletes_are_written_when_only_the_new_records_do_not_fit),
        T(test_a_stop_writes_at_once_or_leaves_the_journal_as_it_was),
        T(test_failure_causes_are_told_apart),
        T(test_resubmission_rebuilds_the_requests_the_journal_holds),
        T(test_resubmission_of_a_request_past_its_deadline_makes_it_due_now),
        T(test_resubmission_drops_unreadable_records),
        T(test_check_finds_a_sound_journal_sound_and_a_cut_or_garbled_one_damaged),
        T(test_salvage_saves_the_readable_records_and_counts_the_lost),
        T(test_salvage_of_a_journal_with_nothing_readable_leaves_an_empty_one),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
