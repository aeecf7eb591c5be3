/* Unit tests of the wire format: every message type survives encode then
 * decode field by field, and every kind of bad input is rejected with the
 * right error code and bad_key, never a crash or a huge allocation. Bad
 * inputs are built by hand with msgpack-c's packer. */
#include "av_proto.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <cmocka.h>

/* A decoder that lost its bounds would let msgpack-c reserve tens of
 * gigabytes for a 5-byte input. Such a reservation can succeed (the pages
 * are never touched), which would hide the bug, so allocations are capped:
 * under AddressSanitizer by the options below (a larger request returns
 * NULL, which the decoder turns into AV_PROTO_E_NOMEM), otherwise by
 * RLIMIT_AS around the memory-bomb test. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
    return "max_allocation_size_mb=1024:allocator_may_return_null=1";
}

/* ---- helpers ------------------------------------------------------------ */

/* An sbuffer and a packer writing into it: how hand-made inputs are built. */
typedef struct {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
} builder_t;

static void
builder_init(builder_t *b)
{
    msgpack_sbuffer_init(&b->sbuf);
    msgpack_packer_init(&b->pk, &b->sbuf, msgpack_sbuffer_write);
}

static void
builder_free(builder_t *b)
{
    msgpack_sbuffer_destroy(&b->sbuf);
}

static void
pack_s(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void
pack_kv_s(msgpack_packer *pk, const char *key, const char *val)
{
    pack_s(pk, key);
    pack_s(pk, val);
}

static void
pack_kv_u(msgpack_packer *pk, const char *key, uint64_t val)
{
    pack_s(pk, key);
    msgpack_pack_uint64(pk, val);
}

/* A string of n copies of c. */
static void
pack_long(msgpack_packer *pk, size_t n, char c)
{
    char *s = malloc(n ? n : 1);
    assert_non_null(s);
    memset(s, c, n);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
    free(s);
}

static void
pack_kv_long(msgpack_packer *pk, const char *key, size_t n, char c)
{
    pack_s(pk, key);
    pack_long(pk, n, c);
}

/* Starts a map of 2 + more_pairs entries holding t and v. */
static void
pack_envelope(builder_t *b, const char *t, uint64_t v, uint32_t more_pairs)
{
    msgpack_pack_map(&b->pk, 2 + more_pairs);
    pack_kv_s(&b->pk, "t", t);
    pack_kv_u(&b->pk, "v", v);
}

static int
decode(av_msg_t *m, const builder_t *b)
{
    return av_msg_decode(m, b->sbuf.data, b->sbuf.size);
}

/* The av_str_t must hold exactly want (not relying on av_str_eq, which is
 * under test too). */
static void
assert_av_str(av_str_t s, const char *want)
{
    size_t n = strlen(want);
    if (s.len != n || (n && memcmp(s.ptr, want, n) != 0))
        fail_msg("got \"%.*s\" (%u bytes), want \"%s\"", (int)s.len, s.ptr ? s.ptr : "", s.len, want);
}

static const char *
key_or_null(const char *key)
{
    return key ? key : "(null)";
}

/* Decoding data must fail with want_err and bad_key want_key (NULL: none). */
static void
assert_rejected_bytes(const void *data, size_t size, int want_err, const char *want_key)
{
    av_msg_t m;
    av_msg_init(&m);
    int rc = av_msg_decode(&m, data, size);
    const char *key = m.bad_key;
    bool key_ok = want_key ? key && strcmp(key, want_key) == 0 : key == NULL;
    av_msg_release(&m);
    if (rc != want_err || !key_ok)
        fail_msg("want %d (%s) bad_key %s, got %d (%s) bad_key %s", want_err, av_proto_strerror(want_err),
                 key_or_null(want_key), rc, av_proto_strerror(rc), key_or_null(key));
}

static void
assert_rejected(const builder_t *b, int want_err, const char *want_key)
{
    assert_rejected_bytes(b->sbuf.data, b->sbuf.size, want_err, want_key);
}

static msgpack_object
str_obj(const char *s)
{
    msgpack_object o = { .type = MSGPACK_OBJECT_STR };
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)strlen(s);
    return o;
}

/* ---- names of enum values ----------------------------------------------- */

static void
test_status_names_round_trip(void **state)
{
    (void)state;
    static const char *const want[] = { "available", "registered", "reserved", "invalid", "unknown" };
    for (int s = 0; s < AV_STATUS_COUNT; s++) {
        assert_string_equal(av_status_name((av_status_t)s), want[s]);
        assert_int_equal(av_status_parse(av_str(want[s])), s);
    }
    assert_int_equal(av_status_parse(AV_STR("Available")), -1); /* exact, case-sensitive */
    assert_int_equal(av_status_parse(AV_STR("avail")), -1);
    assert_int_equal(av_status_parse(AV_STR("")), -1);
    assert_string_equal(av_status_name(AV_STATUS_COUNT), "unknown");
    assert_string_equal(av_status_name((av_status_t)-1), "unknown");
}

static void
test_source_names_round_trip(void **state)
{
    (void)state;
    static const char *const want[] = { "none", "cache", "whois", "das", "rdap", "dns", "epp" };
    for (int s = 0; s < AV_SOURCE_COUNT; s++) {
        assert_string_equal(av_source_name((av_source_t)s), want[s]);
        assert_int_equal(av_source_parse(av_str(want[s])), s);
    }
    assert_int_equal(av_source_parse(AV_STR("smtp")), -1);
    assert_string_equal(av_source_name(AV_SOURCE_COUNT), "none");
}

static void
test_level_names_round_trip(void **state)
{
    (void)state;
    static const char *const want[] = { "err", "warning", "notice", "info", "debug" };
    for (int l = 0; l < AV_LEVEL_COUNT; l++) {
        assert_string_equal(av_level_name((av_level_t)l), want[l]);
        assert_int_equal(av_level_parse(av_str(want[l])), l);
    }
    /* The wire word is "err"; the log's "error" is not a level here. */
    assert_int_equal(av_level_parse(AV_STR("error")), -1);
    assert_string_equal(av_level_name(AV_LEVEL_COUNT), "err");
}

static void
test_msg_type_names(void **state)
{
    (void)state;
    assert_string_equal(av_msg_type_name(AV_MSG_CHECK), "check");
    assert_string_equal(av_msg_type_name(AV_MSG_ANSWER), "answer");
    assert_string_equal(av_msg_type_name(AV_MSG_READY), "ready");
    assert_string_equal(av_msg_type_name(AV_MSG_HEARTBEAT), "heartbeat");
    assert_string_equal(av_msg_type_name(AV_MSG_BYE), "bye");
    assert_string_equal(av_msg_type_name(AV_MSG_ERROR), "error");
    assert_string_equal(av_msg_type_name(AV_MSG_PUT), "put");
    assert_string_equal(av_msg_type_name(AV_MSG_CTL), "ctl");
    assert_string_equal(av_msg_type_name(AV_MSG_CTL_REPLY), "ctl_reply");
    assert_string_equal(av_msg_type_name(AV_MSG_ANSWERS), "answers");
    assert_string_equal(av_msg_type_name((av_msg_type_t)0), "?");
    assert_string_equal(av_msg_type_name((av_msg_type_t)99), "?");
}

static void
test_str_eq_and_copy(void **state)
{
    (void)state;
    assert_true(av_str_eq(AV_STR("abc"), "abc"));
    assert_false(av_str_eq(AV_STR("abc"), "abcd"));
    assert_false(av_str_eq(AV_STR("abd"), "abc"));
    assert_true(av_str_eq((av_str_t){ NULL, 0 }, ""));
    assert_int_equal(av_str(NULL).len, 0);

    char buf[4] = "xyz";
    av_str_copy(buf, sizeof buf, AV_STR("example")); /* truncates to size-1 */
    assert_string_equal(buf, "exa");
    av_str_copy(buf, sizeof buf, (av_str_t){ NULL, 0 });
    assert_string_equal(buf, "");
    buf[0] = 'q';
    av_str_copy(buf, 0, AV_STR("example")); /* size 0 writes nothing */
    assert_int_equal(buf[0], 'q');
}

/* ---- round trips -------------------------------------------------------- */

static void
test_check_with_one_name_round_trips(void **state)
{
    (void)state;
    av_check_t in = {
        .id = AV_STR("req-42"), .name = AV_STR("Exämple.COM"), .fresh = true, .raw = true, .deadline_ms = 2500,
        .rid = 0x1122334455667788ull, .idx = 7,
    };
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_check(&b.sbuf, &in), 0);

    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_CHECK);
    assert_int_equal(m.v, AV_PROTO_VERSION);
    assert_null(m.bad_key);
    const av_check_t *c = &m.u.check;
    assert_av_str(c->id, "req-42");
    assert_av_str(c->name, "Exämple.COM");
    assert_int_equal(c->n_names, 0);
    assert_null(c->names);
    assert_true(c->fresh);
    assert_true(c->raw);
    assert_int_equal(c->deadline_ms, 2500);
    assert_true(c->rid == 0x1122334455667788ull);
    assert_int_equal(c->idx, 7);
    assert_int_equal(av_check_count(c), 1);
    assert_av_str(av_check_name_at(c, 0), "Exämple.COM");
    assert_int_equal(av_check_name_at(c, 1).len, 0);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_check_with_a_batch_of_names_round_trips(void **state)
{
    (void)state;
    msgpack_object items[3] = { str_obj("a.com"), str_obj("b.net"), str_obj("xn--bcher-kva.de") };
    msgpack_object names = { .type = MSGPACK_OBJECT_ARRAY };
    names.via.array.size = 3;
    names.via.array.ptr = items;
    av_check_t in = { .id = AV_STR("batch-1"), .names = &names, .n_names = 3 };
    assert_int_equal(av_check_count(&in), 3);

    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_check(&b.sbuf, &in), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    const av_check_t *c = &m.u.check;
    assert_av_str(c->id, "batch-1");
    assert_int_equal(c->n_names, 3);
    assert_int_equal(av_check_count(c), 3);
    assert_int_equal(c->name.len, 0); /* a batch carries no single name */
    assert_av_str(av_check_name_at(c, 0), "a.com");
    assert_av_str(av_check_name_at(c, 1), "b.net");
    assert_av_str(av_check_name_at(c, 2), "xn--bcher-kva.de");
    assert_int_equal(av_check_name_at(c, 3).len, 0); /* past the end: empty */
    /* Optional keys absent: their zero values. */
    assert_false(c->fresh);
    assert_false(c->raw);
    assert_int_equal(c->deadline_ms, 0);
    assert_true(c->rid == 0);
    assert_int_equal(c->idx, 0);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_check_with_a_batch_given_as_views_encodes_as_names(void **state)
{
    (void)state;
    /* How intake forwards a batch: its names as views, not an array. */
    av_str_t views[3] = { AV_STR("a.com"), AV_STR("bücher.de"), AV_STR("") };
    av_check_t in = { .id = AV_STR("batch-2"), .name_views = views, .n_names = 3, .rid = 9, .batches = true };
    assert_int_equal(av_check_count(&in), 3);
    assert_av_str(av_check_name_at(&in, 1), "bücher.de");
    assert_int_equal(av_check_name_at(&in, 3).len, 0);

    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_check(&b.sbuf, &in), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    const av_check_t *c = &m.u.check;
    assert_av_str(c->id, "batch-2");
    assert_int_equal(c->n_names, 3);
    assert_non_null(c->names); /* decoded: an array, as from any frontend */
    assert_null(c->name_views);
    assert_av_str(av_check_name_at(c, 0), "a.com");
    assert_av_str(av_check_name_at(c, 1), "bücher.de");
    assert_av_str(av_check_name_at(c, 2), "");
    assert_true(c->rid == 9);
    assert_int_equal(c->idx, 0);
    assert_true(c->batches);
    av_msg_release(&m);
    builder_free(&b);
}

/* The check as intake packed it by hand before it used av_encode_check:
 * every key, false ones too. */
static void
pack_intake_check(builder_t *b, const char *id, const char *const *names, uint32_t n, bool fresh, bool raw,
                  uint64_t rid, uint32_t idx, uint32_t deadline_ms)
{
    msgpack_pack_map(&b->pk, 10);
    pack_kv_s(&b->pk, "t", "check");
    pack_s(&b->pk, "batches");
    msgpack_pack_true(&b->pk);
    pack_kv_u(&b->pk, "v", 1);
    pack_kv_s(&b->pk, "id", id);
    if (n > 1) {
        pack_s(&b->pk, "names");
        msgpack_pack_array(&b->pk, n);
        for (uint32_t i = 0; i < n; i++)
            pack_s(&b->pk, names[i]);
    } else {
        pack_kv_s(&b->pk, "name", names[0]);
    }
    pack_s(&b->pk, "fresh");
    if (fresh)
        msgpack_pack_true(&b->pk);
    else
        msgpack_pack_false(&b->pk);
    pack_s(&b->pk, "raw");
    if (raw)
        msgpack_pack_true(&b->pk);
    else
        msgpack_pack_false(&b->pk);
    pack_kv_u(&b->pk, "rid", rid);
    pack_kv_u(&b->pk, "idx", idx);
    pack_kv_u(&b->pk, "deadline_ms", deadline_ms);
}

/* Both decode to the same check, field by field. */
static void
assert_same_check(const av_check_t *x, const av_check_t *y)
{
    assert_int_equal(x->id.len, y->id.len);
    assert_memory_equal(x->id.ptr, y->id.ptr, x->id.len);
    assert_int_equal(av_check_count(x), av_check_count(y));
    for (uint32_t i = 0; i < av_check_count(x); i++) {
        av_str_t a = av_check_name_at(x, i), b = av_check_name_at(y, i);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.ptr, b.ptr, a.len);
    }
    assert_int_equal(x->n_names, y->n_names);
    assert_int_equal(x->fresh, y->fresh);
    assert_int_equal(x->raw, y->raw);
    assert_int_equal(x->deadline_ms, y->deadline_ms);
    assert_true(x->rid == y->rid);
    assert_int_equal(x->idx, y->idx);
    assert_int_equal(x->batches, y->batches);
    assert_int_equal(x->n_more, y->n_more);
}

static void
test_check_from_the_encoder_reads_as_intakes_hand_packed_one(void **state)
{
    (void)state;
    static const char *const names[2] = { "a.com", "xn--bcher-kva.de" };
    av_str_t views[2] = { AV_STR("a.com"), AV_STR("xn--bcher-kva.de") };
    const struct {
        uint32_t n;
        bool fresh, raw;
        uint32_t idx;
    } cases[] = { { 1, false, false, 4 }, { 1, true, true, 0 }, { 2, false, true, 0 }, { 2, true, false, 0 } };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        builder_t old, now;
        builder_init(&old);
        builder_init(&now);
        pack_intake_check(&old, "req-5", names, cases[k].n, cases[k].fresh, cases[k].raw, 77, cases[k].idx, 9500);
        av_check_t in = {
            .id = AV_STR("req-5"), .fresh = cases[k].fresh, .raw = cases[k].raw, .deadline_ms = 9500,
            .rid = 77, .idx = cases[k].idx, .batches = true,
        };
        if (cases[k].n > 1) {
            in.name_views = views;
            in.n_names = cases[k].n;
        } else {
            in.name = views[0];
        }
        assert_int_equal(av_encode_check(&now.sbuf, &in), 0);
        av_msg_t mo, mn;
        av_msg_init(&mo);
        av_msg_init(&mn);
        assert_int_equal(decode(&mo, &old), AV_PROTO_OK);
        assert_int_equal(decode(&mn, &now), AV_PROTO_OK);
        assert_int_equal(mn.type, AV_MSG_CHECK);
        assert_same_check(&mo.u.check, &mn.u.check);
        /* False keys are left out: never longer than the hand-packed one. */
        assert_true(now.sbuf.size <= old.sbuf.size);
        av_msg_release(&mo);
        av_msg_release(&mn);
        builder_free(&old);
        builder_free(&now);
    }
}

static void
test_checks_ride_in_one_message_batches_of_views_too(void **state)
{
    (void)state;
    av_str_t views[2] = { AV_STR("c.org"), AV_STR("d.org") };
    av_check_t in[3] = {
        { .id = AV_STR("r1"), .name = AV_STR("a.com"), .rid = 1, .deadline_ms = 100, .batches = true },
        { .id = AV_STR("r2"), .name = AV_STR("b.net"), .rid = 2, .fresh = true, .batches = true },
        { .id = AV_STR("r3"), .name_views = views, .n_names = 2, .rid = 3, .raw = true, .batches = true },
    };
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_checks(&b.sbuf, in, 3), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    const av_check_t *first = &m.u.check;
    assert_av_str(first->name, "a.com");
    assert_true(first->rid == 1);
    assert_int_equal(first->deadline_ms, 100);
    assert_int_equal(first->n_more, 2);
    av_check_t more;
    assert_int_equal(av_check_more_at(first, 0, &more), 0);
    assert_av_str(more.id, "r2");
    assert_av_str(more.name, "b.net");
    assert_true(more.fresh);
    assert_true(more.rid == 2);
    assert_int_equal(av_check_more_at(first, 1, &more), 0);
    assert_av_str(more.id, "r3");
    assert_int_equal(av_check_count(&more), 2);
    assert_av_str(av_check_name_at(&more, 0), "c.org");
    assert_av_str(av_check_name_at(&more, 1), "d.org");
    assert_true(more.raw);
    assert_true(more.rid == 3);
    assert_int_not_equal(av_check_more_at(first, 2, &more), 0); /* past the end */
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_answer_with_every_field_round_trips(void **state)
{
    (void)state;
    av_answer_t in = {
        .id = AV_STR("req-1"), .name = AV_STR("xn--bcher-kva.de"), .query = AV_STR("bücher.de"),
        .status = AV_STATUS_UNKNOWN, .reason = AV_STR(AV_REASON_RATE_LIMITED), .registry = AV_STR("denic"),
        .source = AV_SOURCE_DAS, .at_ms = 1700000000123ull, .latency_us = 45678,
        .raw = AV_STR("Domain: bücher.de\nStatus: free\n"), .rid = UINT64_MAX, .idx = UINT32_MAX,
        .matched = AV_STR("^Status: free"),
    };
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_answer(&b.sbuf, &in), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_ANSWER);
    const av_answer_t *a = &m.u.answer;
    assert_av_str(a->id, "req-1");
    assert_av_str(a->name, "xn--bcher-kva.de");
    assert_av_str(a->query, "bücher.de");
    assert_int_equal(a->status, AV_STATUS_UNKNOWN);
    assert_av_str(a->reason, "rate_limited");
    assert_av_str(a->registry, "denic");
    assert_int_equal(a->source, AV_SOURCE_DAS);
    assert_true(a->at_ms == 1700000000123ull);
    assert_true(a->latency_us == 45678);
    assert_av_str(a->raw, "Domain: bücher.de\nStatus: free\n");
    assert_true(a->rid == UINT64_MAX);
    assert_true(a->idx == UINT32_MAX);
    assert_av_str(a->matched, "^Status: free");
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_minimal_answer_round_trips(void **state)
{
    (void)state;
    av_answer_t in = { .id = AV_STR("r"), .name = AV_STR("example.com"), .status = AV_STATUS_AVAILABLE };
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_answer(&b.sbuf, &in), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    const av_answer_t *a = &m.u.answer;
    assert_av_str(a->id, "r");
    assert_av_str(a->name, "example.com");
    assert_int_equal(a->status, AV_STATUS_AVAILABLE);
    assert_int_equal(a->source, AV_SOURCE_NONE);
    assert_true(a->at_ms == 0);
    assert_int_equal(a->query.len, 0);
    assert_int_equal(a->reason.len, 0);
    assert_int_equal(a->registry.len, 0);
    assert_true(a->latency_us == 0);
    assert_int_equal(a->raw.len, 0);
    assert_int_equal(a->matched.len, 0);
    assert_true(a->rid == 0);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_answer_round_trips_every_status_and_source(void **state)
{
    (void)state;
    for (int st = 0; st < AV_STATUS_COUNT; st++) {
        for (int src = 0; src < AV_SOURCE_COUNT; src++) {
            av_answer_t in = { .id = AV_STR("r"), .name = AV_STR("n.com"), .status = (av_status_t)st,
                               .source = (av_source_t)src };
            builder_t b;
            builder_init(&b);
            assert_int_equal(av_encode_answer(&b.sbuf, &in), 0);
            av_msg_t m;
            av_msg_init(&m);
            assert_int_equal(decode(&m, &b), AV_PROTO_OK);
            assert_int_equal(m.u.answer.status, st);
            assert_int_equal(m.u.answer.source, src);
            av_msg_release(&m);
            builder_free(&b);
        }
    }
}

static void
test_ready_heartbeat_and_bye_round_trip(void **state)
{
    (void)state;
    const av_msg_type_t types[] = { AV_MSG_READY, AV_MSG_HEARTBEAT, AV_MSG_BYE };
    for (size_t i = 0; i < 3; i++) {
        av_ready_t in = { .registry = AV_STR("verisign"), .credit = 32 + (uint32_t)i, .pid = 4242 };
        builder_t b;
        builder_init(&b);
        assert_int_equal(av_encode_ready(&b.sbuf, types[i], &in), 0);
        av_msg_t m;
        av_msg_init(&m);
        assert_int_equal(decode(&m, &b), AV_PROTO_OK);
        assert_int_equal(m.type, types[i]);
        assert_av_str(m.u.ready.registry, "verisign");
        assert_int_equal(m.u.ready.credit, 32 + i);
        assert_int_equal(m.u.ready.pid, 4242);
        av_msg_release(&m);
        builder_free(&b);
    }
}

static void
test_heartbeat_and_bye_need_no_keys(void **state)
{
    (void)state;
    const char *types[] = { "heartbeat", "bye" };
    for (size_t i = 0; i < 2; i++) {
        builder_t b;
        builder_init(&b);
        pack_envelope(&b, types[i], 1, 0);
        av_msg_t m;
        av_msg_init(&m);
        assert_int_equal(decode(&m, &b), AV_PROTO_OK);
        assert_int_equal(m.u.ready.registry.len, 0);
        av_msg_release(&m);
        builder_free(&b);
    }
}

static void
test_error_event_round_trips_at_every_level(void **state)
{
    (void)state;
    for (int lv = 0; lv < AV_LEVEL_COUNT; lv++) {
        av_error_t in = {
            .daemon = AV_STR("querier"), .registry = AV_STR("verisign"), .level = (av_level_t)lv,
            .code = AV_STR("timeout"), .text = AV_STR("no reply from whois.verisign-grs.com:43 in 10000 ms"),
            .at_ms = 1700000000000ull + (uint64_t)lv, .pid = 777,
        };
        builder_t b;
        builder_init(&b);
        assert_int_equal(av_encode_error(&b.sbuf, &in), 0);
        av_msg_t m;
        av_msg_init(&m);
        assert_int_equal(decode(&m, &b), AV_PROTO_OK);
        assert_int_equal(m.type, AV_MSG_ERROR);
        const av_error_t *e = &m.u.error;
        assert_av_str(e->daemon, "querier");
        assert_av_str(e->registry, "verisign");
        assert_int_equal(e->level, lv);
        assert_av_str(e->code, "timeout");
        assert_av_str(e->text, "no reply from whois.verisign-grs.com:43 in 10000 ms");
        assert_true(e->at_ms == 1700000000000ull + (uint64_t)lv);
        assert_int_equal(e->pid, 777);
        av_msg_release(&m);
        builder_free(&b);
    }
}

static void
test_put_round_trips(void **state)
{
    (void)state;
    av_put_t in = {
        .answer = { .id = AV_STR("r9"), .name = AV_STR("example.org"), .status = AV_STATUS_REGISTERED,
                    .registry = AV_STR("pir"), .source = AV_SOURCE_WHOIS, .at_ms = 99, .latency_us = 1500,
                    .rid = 5, .idx = 2 },
        .ttl_s = 86400, .timing = true,
    };
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_put(&b.sbuf, &in), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_PUT);
    const av_put_t *p = &m.u.put;
    assert_av_str(p->answer.id, "r9");
    assert_av_str(p->answer.name, "example.org");
    assert_int_equal(p->answer.status, AV_STATUS_REGISTERED);
    assert_av_str(p->answer.registry, "pir");
    assert_int_equal(p->answer.source, AV_SOURCE_WHOIS);
    assert_true(p->answer.at_ms == 99);
    assert_true(p->answer.latency_us == 1500);
    assert_true(p->answer.rid == 5);
    assert_int_equal(p->answer.idx, 2);
    assert_int_equal(p->ttl_s, 86400);
    assert_true(p->timing);
    av_msg_release(&m);
    builder_free(&b);

    /* ttl_s 0 (a timing sample only) and timing false survive too. */
    in.ttl_s = 0;
    in.timing = false;
    builder_init(&b);
    assert_int_equal(av_encode_put(&b.sbuf, &in), 0);
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.u.put.ttl_s, 0);
    assert_false(m.u.put.timing);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_ctl_round_trips(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_ctl(&b.sbuf, "status"), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_CTL);
    assert_av_str(m.u.ctl.cmd, "status");
    assert_non_null(m.u.ctl.body);
    assert_int_equal(m.u.ctl.body->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(m.u.ctl.body->via.map.size, 3); /* t, v, cmd */
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_ctl_with_arguments_round_trips(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    av_pack_ctl_begin(&b.pk, "errors", 3);
    av_pack_kv_str(&b.pk, "registry", "verisign");
    av_pack_kv_uint(&b.pk, "limit", 50);
    av_pack_kv_bool(&b.pk, "follow", true);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_CTL);
    assert_av_str(m.u.ctl.cmd, "errors");
    av_str_t reg;
    uint64_t limit;
    bool follow = false;
    assert_true(av_obj_get_str(m.u.ctl.body, "registry", &reg));
    assert_av_str(reg, "verisign");
    assert_true(av_obj_get_uint(m.u.ctl.body, "limit", &limit));
    assert_true(limit == 50);
    assert_true(av_obj_get_bool(m.u.ctl.body, "follow", &follow));
    assert_true(follow);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_ctl_reply_ok_round_trips_with_extra_pairs(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    av_pack_ctl_reply_begin(&b.pk, true, NULL, 2);
    av_pack_kv_str(&b.pk, "name", "errors");
    av_pack_kv_uint(&b.pk, "uptime_s", 3600);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_CTL_REPLY);
    assert_true(m.u.ctl_reply.ok);
    assert_int_equal(m.u.ctl_reply.error.len, 0);
    av_str_t name;
    uint64_t uptime;
    assert_true(av_obj_get_str(m.u.ctl_reply.body, "name", &name));
    assert_av_str(name, "errors");
    assert_true(av_obj_get_uint(m.u.ctl_reply.body, "uptime_s", &uptime));
    assert_true(uptime == 3600);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_ctl_reply_error_round_trips(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    av_pack_ctl_reply_begin(&b.pk, false, "no such registry 'x'", 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_false(m.u.ctl_reply.ok);
    assert_av_str(m.u.ctl_reply.error, "no such registry 'x'");
    av_msg_release(&m);
    builder_free(&b);

    /* No text given: the reply still says "error", never an empty reason. */
    builder_init(&b);
    av_pack_ctl_reply_begin(&b.pk, false, NULL, 0);
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_false(m.u.ctl_reply.ok);
    assert_av_str(m.u.ctl_reply.error, "error");
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_answer_idx_travels_without_rid_only_when_asked(void **state)
{
    (void)state;
    /* A batch answer to a frontend carries its position but no rid. */
    av_answer_t in = { .id = AV_STR("r"), .name = AV_STR("n.com"), .status = AV_STATUS_INVALID, .idx = 0,
                       .has_idx = true };
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_answer(&b.sbuf, &in), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_true(m.u.answer.has_idx);
    assert_int_equal(m.u.answer.idx, 0);
    assert_true(m.u.answer.rid == 0);
    builder_free(&b);

    /* Without has_idx and rid, idx is not sent, and has_idx says so. */
    in.has_idx = false;
    in.idx = 9;
    builder_init(&b);
    assert_int_equal(av_encode_answer(&b.sbuf, &in), 0);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_false(m.u.answer.has_idx);
    assert_int_equal(m.u.answer.idx, 0);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_bye_with_handed_back_ids_round_trips(void **state)
{
    (void)state;
    const uint64_t ids[] = { 1, 0x7fffffffffffffffull, UINT64_MAX, 42 };
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_bye(&b.sbuf, &(av_ready_t){ .registry = AV_STR("verisign") }, ids, 4), 0);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_BYE);
    assert_av_str(m.u.ready.registry, "verisign");
    assert_int_equal(m.u.ready.n_ids, 4);
    for (uint32_t i = 0; i < 4; i++)
        assert_true(av_bye_id_at(&m.u.ready, i) == ids[i]);
    assert_true(av_bye_id_at(&m.u.ready, 4) == 0); /* past the end */
    av_msg_release(&m);
    builder_free(&b);

    /* A bye with nothing to hand back. */
    builder_init(&b);
    assert_int_equal(av_encode_bye(&b.sbuf, &(av_ready_t){ .registry = AV_STR("pir") }, NULL, 0), 0);
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.u.ready.n_ids, 0);
    assert_true(av_bye_id_at(&m.u.ready, 0) == 0);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_a_group_queriers_ready_and_bye_carry_every_registry(void **state)
{
    (void)state;
    const av_credit_t credits[] = { { AV_STR("verisign-com"), 1010 }, { AV_STR("rdap-rdap-nic-xyz"), 0 },
                                    { AV_STR("pir"), UINT32_MAX } };
    av_ready_t in = { .registry = AV_STR("verisign-com"), .credit = 1010, .pid = 77, .credits = credits,
                      .n_registries = 3 };
    builder_t b;
    av_msg_t m;
    builder_init(&b);
    assert_int_equal(av_encode_ready(&b.sbuf, AV_MSG_HEARTBEAT, &in), 0);
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_HEARTBEAT);
    /* what an older dispatcher reads: the first registry */
    assert_av_str(m.u.ready.registry, "verisign-com");
    assert_int_equal(m.u.ready.credit, 1010);
    assert_int_equal(m.u.ready.n_registries, 3);
    for (uint32_t i = 0; i < 3; i++) {
        av_credit_t c;
        av_ready_credit_at(&m.u.ready, i, &c);
        assert_true(c.registry.len == credits[i].registry.len &&
                    memcmp(c.registry.ptr, credits[i].registry.ptr, c.registry.len) == 0);
        assert_int_equal(c.credit, credits[i].credit);
    }
    av_msg_release(&m);
    builder_free(&b);

    /* a bye for one registry of the group, with its checks */
    const uint64_t ids[] = { 5, 6 };
    av_ready_t bye = { .registry = AV_STR("pir"), .credits = credits + 2, .n_registries = 1 };
    builder_init(&b);
    assert_int_equal(av_encode_bye(&b.sbuf, &bye, ids, 2), 0);
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.u.ready.n_registries, 1);
    assert_int_equal(m.u.ready.n_ids, 2);
    av_credit_t c;
    av_ready_credit_at(&m.u.ready, 0, &c);
    assert_true(av_str_eq(c.registry, "pir"));
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_bad_registries_of_a_ready_are_refused(void **state)
{
    (void)state;
    /* {t: ready, v: 1, registry: x, registries: ...} with a bad list each time */
    static const struct {
        const char *why;
        const char *hex; /* the `registries` value, msgpack */
        int err;
    } cases[] = {
        { "not an array", "a3616263", AV_PROTO_E_TYPE },
        { "an entry not a pair", "91a3616263", AV_PROTO_E_TYPE },
        { "a credit not a number", "9192a178a3616263", AV_PROTO_E_TYPE },
        { "an empty name", "9192a000", AV_PROTO_E_VALUE },
        { "a credit past 32 bits", "9192a178cf0000000100000000", AV_PROTO_E_VALUE },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        unsigned char buf[128];
        size_t n = 0;
        const char head[] = "\x84\xa1t\xa5ready\xa1v\x01\xa8registry\xa1x\xaaregistries";
        memcpy(buf, head, sizeof head - 1);
        n = sizeof head - 1;
        for (const char *h = cases[k].hex; h[0] && h[1]; h += 2) {
            unsigned int byte;
            sscanf(h, "%2x", &byte);
            buf[n++] = (unsigned char)byte;
        }
        av_msg_t m;
        av_msg_init(&m);
        int rc = av_msg_decode(&m, buf, n);
        if (rc != cases[k].err)
            fail_msg("%s: want %d, got %d", cases[k].why, cases[k].err, rc);
        assert_string_equal(m.bad_key, "registries");
        av_msg_release(&m);
    }
}

static void
test_answers_batch_round_trips(void **state)
{
    (void)state;
    const av_answer_t in[3] = {
        { .id = AV_STR("b-1"), .name = AV_STR("a.com"), .query = AV_STR("A.com"), .status = AV_STATUS_REGISTERED,
          .registry = AV_STR("verisign"), .source = AV_SOURCE_CACHE, .at_ms = 123, .idx = 0, .has_idx = true,
          .matched = AV_STR("^Domain Name:") },
        { .id = AV_STR("b-1"), .name = AV_STR("b.net"), .status = AV_STATUS_UNKNOWN,
          .reason = AV_STR(AV_REASON_TIMEOUT), .source = AV_SOURCE_WHOIS, .latency_us = 10000000, .idx = 1,
          .has_idx = true },
        { .id = AV_STR("b-1"), .name = AV_STR("bad..name"), .status = AV_STATUS_INVALID, .idx = 2, .has_idx = true },
    };
    builder_t b;
    builder_init(&b);
    av_pack_answers_begin(&b.pk, AV_STR("b-1"), 3);
    for (int i = 0; i < 3; i++)
        av_pack_answer_map(&b.pk, &in[i]);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_ANSWERS);
    assert_av_str(m.u.answers.id, "b-1");
    assert_int_equal(m.u.answers.count, 3);

    av_answer_t out;
    assert_int_equal(av_answers_at(&m.u.answers, 0, &out), 0);
    assert_av_str(out.name, "a.com");
    assert_av_str(out.query, "A.com");
    assert_int_equal(out.status, AV_STATUS_REGISTERED);
    assert_av_str(out.registry, "verisign");
    assert_int_equal(out.source, AV_SOURCE_CACHE);
    assert_true(out.at_ms == 123);
    assert_av_str(out.matched, "^Domain Name:");
    assert_true(out.has_idx);
    assert_int_equal(out.idx, 0);

    assert_int_equal(av_answers_at(&m.u.answers, 1, &out), 0);
    assert_av_str(out.name, "b.net");
    assert_int_equal(out.status, AV_STATUS_UNKNOWN);
    assert_av_str(out.reason, "timeout");
    assert_true(out.latency_us == 10000000);
    assert_int_equal(out.idx, 1);

    assert_int_equal(av_answers_at(&m.u.answers, 2, &out), 0);
    assert_av_str(out.name, "bad..name");
    assert_int_equal(out.status, AV_STATUS_INVALID);
    assert_int_equal(out.idx, 2);

    /* Past the end: an error and an emptied answer, not a read overrun. */
    assert_int_equal(av_answers_at(&m.u.answers, 3, &out), AV_PROTO_E_VALUE);
    assert_int_equal(out.name.len, 0);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_utf8_sanitize_keeps_valid_utf8_and_replaces_the_rest(void **state)
{
    (void)state;
    char out[64];
    const struct { const char *in; size_t len; const char *want; } cases[] = {
        { "plain ascii", 11, "plain ascii" },
        { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
        { "caf\xe9.fr", 7, "caf?.fr" },             /* Latin-1, the usual whois case */
        { "a\0b", 3, "a?b" },                        /* NUL would end a C string */
        { "\xc0\x80", 2, "??" },                     /* overlong NUL */
        { "\xe0\x80\xaf", 3, "???" },                /* overlong '/' */
        { "\xed\xa0\x80", 3, "???" },                /* UTF-16 surrogate */
        { "\xf4\x90\x80\x80", 4, "????" },           /* beyond U+10FFFF */
        { "\xf8\x88\x80\x80\x80", 5, "?????" },      /* 5-byte form */
        { "\x80\xbf", 2, "??" },                     /* continuation bytes alone */
        { "ok\xe2\x82", 4, "ok??" },                 /* cut-off sequence at the end */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = av_utf8_sanitize(out, sizeof out, cases[i].in, cases[i].len);
        if (strcmp(out, cases[i].want) != 0 || n != strlen(cases[i].want))
            fail_msg("case %zu: want \"%s\", got \"%s\" (%zu)", i, cases[i].want, out, n);
    }

    /* Truncation never splits a character: "a\xc3\xa9" into 3 bytes is "a". */
    assert_int_equal(av_utf8_sanitize(out, 3, "a\xc3\xa9", 3), 1);
    assert_string_equal(out, "a");
    assert_int_equal(av_utf8_sanitize(out, 4, "a\xc3\xa9", 3), 3);
    assert_string_equal(out, "a\xc3\xa9");
    out[0] = 'x';
    assert_int_equal(av_utf8_sanitize(out, 0, "abc", 3), 0);
    assert_int_equal(out[0], 'x'); /* size 0: nothing written */
}

static void
test_encoders_append_one_message_after_another(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_ctl(&b.sbuf, "status"), 0);
    size_t first = b.sbuf.size;
    av_ready_t r = { .registry = AV_STR("pir"), .credit = 1 };
    assert_int_equal(av_encode_ready(&b.sbuf, AV_MSG_READY, &r), 0);
    assert_true(b.sbuf.size > first);

    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(av_msg_decode(&m, b.sbuf.data, first), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_CTL);
    /* Decoding again into the same message replaces the previous one. */
    assert_int_equal(av_msg_decode(&m, b.sbuf.data + first, b.sbuf.size - first), AV_PROTO_OK);
    assert_int_equal(m.type, AV_MSG_READY);
    assert_av_str(m.u.ready.registry, "pir");
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_failed_decode_leaves_nothing_stale_for_the_next(void **state)
{
    (void)state;
    av_msg_t m;
    av_msg_init(&m);
    builder_t good;
    builder_init(&good);
    assert_int_equal(av_encode_ctl(&good.sbuf, "status"), 0);
    builder_t bad;
    builder_init(&bad);
    pack_envelope(&bad, "check", 1, 1);
    pack_kv_s(&bad.pk, "name", "example.com");

    for (int round = 0; round < 3; round++) {
        assert_int_equal(decode(&m, &bad), AV_PROTO_E_MISSING);
        assert_string_equal(m.bad_key, "id");
        assert_int_equal(decode(&m, &good), AV_PROTO_OK);
        assert_null(m.bad_key);
        assert_int_equal(m.type, AV_MSG_CTL);
        assert_av_str(m.u.ctl.cmd, "status");
    }
    av_msg_release(&m);
    av_msg_release(&m); /* releasing twice is harmless */
    builder_free(&good);
    builder_free(&bad);
}

/* ---- rejections: the envelope ------------------------------------------- */

static void
test_rejects_empty_input(void **state)
{
    (void)state;
    assert_rejected_bytes("", 0, AV_PROTO_E_NOT_MSGPACK, NULL);
    assert_rejected_bytes(NULL, 0, AV_PROTO_E_NOT_MSGPACK, NULL);
}

static void
test_rejects_bytes_that_are_not_msgpack(void **state)
{
    (void)state;
    assert_rejected_bytes("\xc1", 1, AV_PROTO_E_NOT_MSGPACK, NULL); /* the one unused type byte */
    /* JSON is a fixint ('{') followed by junk. */
    const char *json = "{\"t\":\"check\",\"v\":1}";
    assert_rejected_bytes(json, strlen(json), AV_PROTO_E_NOT_MSGPACK, NULL);
    assert_rejected_bytes("\x82\xc1\xc1\xc1\xc1", 5, AV_PROTO_E_NOT_MSGPACK, NULL);
}

static void
test_rejects_every_truncation_of_a_valid_message(void **state)
{
    (void)state;
    av_answer_t a = { .id = AV_STR("r1"), .name = AV_STR("example.com"), .status = AV_STATUS_REGISTERED,
                      .registry = AV_STR("verisign"), .at_ms = 1700000000000ull, .rid = 1, .idx = 65536 };
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_answer(&b.sbuf, &a), 0);
    for (size_t n = 1; n < b.sbuf.size; n++)
        assert_rejected_bytes(b.sbuf.data, n, AV_PROTO_E_NOT_MSGPACK, NULL);
    builder_free(&b);
}

static void
test_rejects_trailing_bytes_after_the_value(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    assert_int_equal(av_encode_ctl(&b.sbuf, "status"), 0);
    msgpack_pack_nil(&b.pk);
    assert_rejected(&b, AV_PROTO_E_NOT_MSGPACK, NULL);
    builder_free(&b);

    /* Two whole messages in one frame are not one message. */
    builder_init(&b);
    assert_int_equal(av_encode_ctl(&b.sbuf, "status"), 0);
    assert_int_equal(av_encode_ctl(&b.sbuf, "status"), 0);
    assert_rejected(&b, AV_PROTO_E_NOT_MSGPACK, NULL);
    builder_free(&b);
}

static void
test_rejects_top_level_that_is_not_a_map(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    msgpack_pack_array(&b.pk, 2);
    pack_s(&b.pk, "t");
    pack_s(&b.pk, "check");
    assert_rejected(&b, AV_PROTO_E_NOT_MAP, NULL);
    builder_free(&b);

    assert_rejected_bytes("\x05", 1, AV_PROTO_E_NOT_MAP, NULL);
    assert_rejected_bytes("\xa5" "check", 6, AV_PROTO_E_NOT_MAP, NULL);
    assert_rejected_bytes("\xc0", 1, AV_PROTO_E_NOT_MAP, NULL);
}

static void
test_rejects_missing_t(void **state)
{
    (void)state;
    assert_rejected_bytes("\x80", 1, AV_PROTO_E_MISSING, "t"); /* {} */
    builder_t b;
    builder_init(&b);
    msgpack_pack_map(&b.pk, 2);
    pack_kv_u(&b.pk, "v", 1);
    pack_kv_s(&b.pk, "type", "check");
    assert_rejected(&b, AV_PROTO_E_MISSING, "t");
    builder_free(&b);
}

static void
test_rejects_t_that_is_not_a_string(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    msgpack_pack_map(&b.pk, 2);
    pack_kv_u(&b.pk, "t", 1);
    pack_kv_u(&b.pk, "v", 1);
    assert_rejected(&b, AV_PROTO_E_TYPE, "t");
    builder_free(&b);

    /* Binary is not a string, even with the right bytes. */
    builder_init(&b);
    msgpack_pack_map(&b.pk, 2);
    pack_s(&b.pk, "t");
    msgpack_pack_bin(&b.pk, 5);
    msgpack_pack_bin_body(&b.pk, "check", 5);
    pack_kv_u(&b.pk, "v", 1);
    assert_rejected(&b, AV_PROTO_E_TYPE, "t");
    builder_free(&b);
}

static void
test_rejects_unknown_t(void **state)
{
    (void)state;
    const char *bad[] = { "bogus", "", "CHECK", "check ", "ctl_reply2" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        builder_t b;
        builder_init(&b);
        pack_envelope(&b, bad[i], 1, 0);
        assert_rejected(&b, AV_PROTO_E_UNKNOWN_TYPE, "t");
        builder_free(&b);
    }
}

static void
test_rejects_missing_v(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    msgpack_pack_map(&b.pk, 2);
    pack_kv_s(&b.pk, "t", "ctl");
    pack_kv_s(&b.pk, "cmd", "status");
    assert_rejected(&b, AV_PROTO_E_MISSING, "v");
    builder_free(&b);
}

static void
test_rejects_v_zero_or_beyond_32_bits(void **state)
{
    (void)state;
    const uint64_t bad[] = { 0, (uint64_t)UINT32_MAX + 1, UINT64_MAX };
    for (size_t i = 0; i < 3; i++) {
        builder_t b;
        builder_init(&b);
        pack_envelope(&b, "ctl", bad[i], 1);
        pack_kv_s(&b.pk, "cmd", "status");
        assert_rejected(&b, AV_PROTO_E_VALUE, "v");
        builder_free(&b);
    }
}

static void
test_rejects_v_that_is_not_an_unsigned_integer(void **state)
{
    (void)state;
    for (int variant = 0; variant < 4; variant++) {
        builder_t b;
        builder_init(&b);
        msgpack_pack_map(&b.pk, 3);
        pack_kv_s(&b.pk, "t", "ctl");
        pack_kv_s(&b.pk, "cmd", "status");
        pack_s(&b.pk, "v");
        switch (variant) {
        case 0: pack_s(&b.pk, "1"); break;
        case 1: msgpack_pack_int64(&b.pk, -1); break;
        case 2: msgpack_pack_double(&b.pk, 1.0); break;
        case 3: msgpack_pack_true(&b.pk); break;
        }
        assert_rejected(&b, AV_PROTO_E_TYPE, "v");
        builder_free(&b);
    }
}

/* ---- rejections: the keys of each type ---------------------------------- */

typedef enum { F_STR, F_UINT, F_BOOL, F_ANSWER_LIST } field_kind_t;

typedef struct {
    const char *key;
    field_kind_t kind;
    const char *s;
    uint64_t u;
} field_spec_t;

/* The required keys of one message type, with valid values. */
typedef struct {
    const char *t;
    size_t n;
    field_spec_t fields[4];
} type_spec_t;

static const type_spec_t required_keys[] = {
    { "check", 2, { { "id", F_STR, "req-1", 0 }, { "name", F_STR, "example.com", 0 } } },
    { "answer", 3,
      { { "id", F_STR, "req-1", 0 }, { "name", F_STR, "example.com", 0 },
        { "status", F_STR, "available", 0 } } },
    { "put", 3,
      { { "name", F_STR, "example.com", 0 }, { "status", F_STR, "registered", 0 },
        { "ttl_s", F_UINT, NULL, 60 } } },
    { "ready", 1, { { "registry", F_STR, "verisign", 0 } } },
    { "error", 4,
      { { "daemon", F_STR, "querier", 0 }, { "level", F_STR, "warning", 0 },
        { "code", F_STR, "timeout", 0 }, { "text", F_STR, "slow", 0 } } },
    { "ctl", 1, { { "cmd", F_STR, "status", 0 } } },
    { "ctl_reply", 1, { { "ok", F_BOOL, NULL, 1 } } },
    { "answers", 2, { { "id", F_STR, "req-1", 0 }, { "answers", F_ANSWER_LIST, NULL, 0 } } },
};

/* Packs a message of spec's type with every required key except `omit`,
 * and with `mistype` given a value of a wrong type: a number for a string,
 * a string for a number, a boolean or a list. */
static void
pack_spec(builder_t *b, const type_spec_t *spec, const char *omit, const char *mistype)
{
    uint32_t pairs = (uint32_t)spec->n - (omit ? 1 : 0);
    pack_envelope(b, spec->t, 1, pairs);
    for (size_t i = 0; i < spec->n; i++) {
        const field_spec_t *f = &spec->fields[i];
        if (omit && strcmp(f->key, omit) == 0)
            continue;
        pack_s(&b->pk, f->key);
        bool wrong = mistype && strcmp(f->key, mistype) == 0;
        switch (f->kind) {
        case F_STR:
            if (wrong)
                msgpack_pack_uint64(&b->pk, 7);
            else
                pack_s(&b->pk, f->s);
            break;
        case F_UINT:
            if (wrong)
                pack_s(&b->pk, "60");
            else
                msgpack_pack_uint64(&b->pk, f->u);
            break;
        case F_BOOL:
            if (wrong)
                pack_s(&b->pk, "true");
            else if (f->u)
                msgpack_pack_true(&b->pk);
            else
                msgpack_pack_false(&b->pk);
            break;
        case F_ANSWER_LIST:
            if (wrong) {
                pack_s(&b->pk, "a.com");
            } else {
                msgpack_pack_array(&b->pk, 1);
                msgpack_pack_map(&b->pk, 2);
                pack_kv_s(&b->pk, "name", "a.com");
                pack_kv_s(&b->pk, "status", "available");
            }
            break;
        }
    }
}

static void
test_rejects_each_missing_required_key_of_each_type(void **state)
{
    (void)state;
    for (size_t s = 0; s < sizeof required_keys / sizeof required_keys[0]; s++) {
        const type_spec_t *spec = &required_keys[s];
        builder_t b;
        /* With every required key the message is fine... */
        builder_init(&b);
        pack_spec(&b, spec, NULL, NULL);
        av_msg_t m;
        av_msg_init(&m);
        int rc = decode(&m, &b);
        av_msg_release(&m);
        builder_free(&b);
        if (rc != AV_PROTO_OK)
            fail_msg("complete %s refused: %d", spec->t, rc);
        /* ...so leaving one out is what gets it rejected. */
        for (size_t i = 0; i < spec->n; i++) {
            builder_init(&b);
            pack_spec(&b, spec, spec->fields[i].key, NULL);
            print_message("%s without %s\n", spec->t, spec->fields[i].key);
            assert_rejected(&b, AV_PROTO_E_MISSING, spec->fields[i].key);
            builder_free(&b);
        }
    }
}

static void
test_rejects_required_key_of_the_wrong_type(void **state)
{
    (void)state;
    for (size_t s = 0; s < sizeof required_keys / sizeof required_keys[0]; s++) {
        const type_spec_t *spec = &required_keys[s];
        for (size_t i = 0; i < spec->n; i++) {
            builder_t b;
            builder_init(&b);
            pack_spec(&b, spec, NULL, spec->fields[i].key);
            print_message("%s with a mistyped %s\n", spec->t, spec->fields[i].key);
            assert_rejected(&b, AV_PROTO_E_TYPE, spec->fields[i].key);
            builder_free(&b);
        }
    }
}

static void
test_rejects_optional_key_of_the_wrong_type(void **state)
{
    (void)state;
    /* Optional keys are typed too: a wrong one is an error, not ignored. */
    const char *keys[] = { "fresh", "deadline_ms", "rid", "idx" };
    for (size_t i = 0; i < 4; i++) {
        builder_t b;
        builder_init(&b);
        pack_envelope(&b, "check", 1, 3);
        pack_kv_s(&b.pk, "id", "r");
        pack_kv_s(&b.pk, "name", "example.com");
        pack_kv_s(&b.pk, keys[i], "1");
        assert_rejected(&b, AV_PROTO_E_TYPE, keys[i]);
        builder_free(&b);
    }
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "answer", 1, 4);
    pack_kv_s(&b.pk, "id", "r");
    pack_kv_s(&b.pk, "name", "example.com");
    pack_kv_s(&b.pk, "status", "available");
    pack_s(&b.pk, "at");
    msgpack_pack_int64(&b.pk, -5);
    assert_rejected(&b, AV_PROTO_E_TYPE, "at");
    builder_free(&b);
}

static void
test_rejects_strings_longer_than_their_bound(void **state)
{
    (void)state;
    /* id: AV_ID_MAX bytes pass, one more is too long. */
    for (size_t extra = 0; extra < 2; extra++) {
        builder_t b;
        builder_init(&b);
        pack_envelope(&b, "check", 1, 2);
        pack_kv_long(&b.pk, "id", AV_ID_MAX + extra, 'i');
        pack_kv_s(&b.pk, "name", "example.com");
        if (extra)
            assert_rejected(&b, AV_PROTO_E_TOO_LONG, "id");
        else
            assert_rejected(&b, AV_PROTO_OK, NULL);
        builder_free(&b);
    }
    /* name, single and in a batch. */
    for (size_t extra = 0; extra < 2; extra++) {
        builder_t b;
        builder_init(&b);
        pack_envelope(&b, "check", 1, 2);
        pack_kv_s(&b.pk, "id", "r");
        pack_kv_long(&b.pk, "name", AV_NAME_MAX + extra, 'n');
        if (extra)
            assert_rejected(&b, AV_PROTO_E_TOO_LONG, "name");
        else
            assert_rejected(&b, AV_PROTO_OK, NULL);
        builder_free(&b);
    }
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "check", 1, 2);
    pack_kv_s(&b.pk, "id", "r");
    pack_s(&b.pk, "names");
    msgpack_pack_array(&b.pk, 2);
    pack_s(&b.pk, "ok.com");
    pack_long(&b.pk, AV_NAME_MAX + 1, 'n');
    assert_rejected(&b, AV_PROTO_E_TOO_LONG, "names");
    builder_free(&b);

    /* text of an error event. */
    for (size_t extra = 0; extra < 2; extra++) {
        builder_init(&b);
        pack_envelope(&b, "error", 1, 4);
        pack_kv_s(&b.pk, "daemon", "querier");
        pack_kv_s(&b.pk, "level", "err");
        pack_kv_s(&b.pk, "code", "x");
        pack_kv_long(&b.pk, "text", AV_TEXT_MAX + extra, 't');
        if (extra)
            assert_rejected(&b, AV_PROTO_E_TOO_LONG, "text");
        else
            assert_rejected(&b, AV_PROTO_OK, NULL);
        builder_free(&b);
    }
    /* registry of a ready. */
    builder_init(&b);
    pack_envelope(&b, "ready", 1, 1);
    pack_kv_long(&b.pk, "registry", AV_REGISTRY_MAX + 1, 'r');
    assert_rejected(&b, AV_PROTO_E_TOO_LONG, "registry");
    builder_free(&b);
}

/* An `answers` message whose list holds the maps packed by fn. */
static void
pack_answers_with(builder_t *b, uint32_t count, void (*fn)(msgpack_packer *pk, uint32_t i))
{
    pack_envelope(b, "answers", 1, 2);
    pack_kv_s(&b->pk, "id", "b");
    pack_s(&b->pk, "answers");
    msgpack_pack_array(&b->pk, count);
    for (uint32_t i = 0; i < count; i++)
        fn(&b->pk, i);
}

static void
answer_ok(msgpack_packer *pk, uint32_t i)
{
    (void)i;
    msgpack_pack_map(pk, 2);
    pack_kv_s(pk, "name", "a.com");
    pack_kv_s(pk, "status", "registered");
}

static void
answer_second_not_a_map(msgpack_packer *pk, uint32_t i)
{
    if (i == 1)
        pack_s(pk, "b.com");
    else
        answer_ok(pk, i);
}

static void
answer_second_without_status(msgpack_packer *pk, uint32_t i)
{
    if (i == 1) {
        msgpack_pack_map(pk, 1);
        pack_kv_s(pk, "name", "b.com");
    } else {
        answer_ok(pk, i);
    }
}

static void
answer_second_with_bad_status(msgpack_packer *pk, uint32_t i)
{
    if (i == 1) {
        msgpack_pack_map(pk, 2);
        pack_kv_s(pk, "name", "b.com");
        pack_kv_s(pk, "status", "taken");
    } else {
        answer_ok(pk, i);
    }
}

static void
test_rejects_bad_entries_in_an_answers_batch(void **state)
{
    (void)state;
    /* Every entry is checked when the message is decoded, not when read. */
    builder_t b;
    builder_init(&b);
    pack_answers_with(&b, 3, answer_second_not_a_map);
    assert_rejected(&b, AV_PROTO_E_TYPE, "answers");
    builder_free(&b);

    builder_init(&b);
    pack_answers_with(&b, 3, answer_second_without_status);
    assert_rejected(&b, AV_PROTO_E_MISSING, "answers");
    builder_free(&b);

    builder_init(&b);
    pack_answers_with(&b, 3, answer_second_with_bad_status);
    assert_rejected(&b, AV_PROTO_E_VALUE, "status");
    builder_free(&b);

    builder_init(&b);
    pack_answers_with(&b, AV_BATCH_MAX, answer_ok);
    assert_rejected(&b, AV_PROTO_OK, NULL);
    builder_free(&b);

    builder_init(&b);
    pack_answers_with(&b, AV_BATCH_MAX + 1, answer_ok);
    assert_rejected(&b, AV_PROTO_E_TOO_LONG, "answers");
    builder_free(&b);
}

/* A bye whose `ids` holds n ids, the one at `bad` (if < n) a string. */
static void
pack_bye_ids(builder_t *b, uint32_t n, uint32_t bad)
{
    pack_envelope(b, "bye", 1, 2);
    pack_kv_s(&b->pk, "registry", "verisign");
    pack_s(&b->pk, "ids");
    msgpack_pack_array(&b->pk, n);
    for (uint32_t i = 0; i < n; i++) {
        if (i == bad)
            pack_s(&b->pk, "7");
        else
            msgpack_pack_uint64(&b->pk, i + 1);
    }
}

static void
test_rejects_bad_ids_in_a_bye(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    pack_bye_ids(&b, 3, 1);
    assert_rejected(&b, AV_PROTO_E_TYPE, "ids");
    builder_free(&b);

    builder_init(&b);
    pack_envelope(&b, "bye", 1, 1);
    pack_kv_u(&b.pk, "ids", 7);
    assert_rejected(&b, AV_PROTO_E_TYPE, "ids");
    builder_free(&b);

    builder_init(&b);
    pack_bye_ids(&b, AV_HANDBACK_MAX, UINT32_MAX);
    assert_rejected(&b, AV_PROTO_OK, NULL);
    builder_free(&b);

    builder_init(&b);
    pack_bye_ids(&b, AV_HANDBACK_MAX + 1, UINT32_MAX);
    assert_rejected(&b, AV_PROTO_E_TOO_LONG, "ids");
    builder_free(&b);
}

/* A check whose `names` holds n strings "nN.com". */
static void
pack_batch(builder_t *b, uint32_t n)
{
    pack_envelope(b, "check", 1, 2);
    pack_kv_s(&b->pk, "id", "batch");
    pack_s(&b->pk, "names");
    msgpack_pack_array(&b->pk, n);
    for (uint32_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "n%u.com", i);
        pack_s(&b->pk, name);
    }
}

static void
test_rejects_batch_larger_than_AV_BATCH_MAX(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    pack_batch(&b, AV_BATCH_MAX);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(av_check_count(&m.u.check), AV_BATCH_MAX);
    assert_av_str(av_check_name_at(&m.u.check, AV_BATCH_MAX - 1), "n999.com");
    av_msg_release(&m);
    builder_free(&b);

    builder_init(&b);
    pack_batch(&b, AV_BATCH_MAX + 1);
    assert_rejected(&b, AV_PROTO_E_TOO_LONG, "names");
    builder_free(&b);
}

static void
test_rejects_empty_batch(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    pack_batch(&b, 0);
    assert_rejected(&b, AV_PROTO_E_VALUE, "names");
    builder_free(&b);
}

static void
test_rejects_batch_holding_a_non_string(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "check", 1, 2);
    pack_kv_s(&b.pk, "id", "r");
    pack_s(&b.pk, "names");
    msgpack_pack_array(&b.pk, 3);
    pack_s(&b.pk, "a.com");
    msgpack_pack_uint64(&b.pk, 42);
    pack_s(&b.pk, "c.com");
    assert_rejected(&b, AV_PROTO_E_TYPE, "names");
    builder_free(&b);

    /* `names` that is not an array at all. */
    builder_init(&b);
    pack_envelope(&b, "check", 1, 2);
    pack_kv_s(&b.pk, "id", "r");
    pack_kv_s(&b.pk, "names", "a.com");
    assert_rejected(&b, AV_PROTO_E_TYPE, "names");
    builder_free(&b);
}

static void
test_rejects_unknown_status_source_and_level(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "answer", 1, 3);
    pack_kv_s(&b.pk, "id", "r");
    pack_kv_s(&b.pk, "name", "example.com");
    pack_kv_s(&b.pk, "status", "maybe");
    assert_rejected(&b, AV_PROTO_E_VALUE, "status");
    builder_free(&b);

    builder_init(&b);
    pack_envelope(&b, "put", 1, 3);
    pack_kv_s(&b.pk, "name", "example.com");
    pack_kv_s(&b.pk, "status", "Available");
    pack_kv_u(&b.pk, "ttl_s", 1);
    assert_rejected(&b, AV_PROTO_E_VALUE, "status");
    builder_free(&b);

    builder_init(&b);
    pack_envelope(&b, "answer", 1, 4);
    pack_kv_s(&b.pk, "id", "r");
    pack_kv_s(&b.pk, "name", "example.com");
    pack_kv_s(&b.pk, "status", "registered");
    pack_kv_s(&b.pk, "source", "carrier-pigeon");
    assert_rejected(&b, AV_PROTO_E_VALUE, "source");
    builder_free(&b);

    builder_init(&b);
    pack_envelope(&b, "error", 1, 4);
    pack_kv_s(&b.pk, "daemon", "querier");
    pack_kv_s(&b.pk, "level", "critical");
    pack_kv_s(&b.pk, "code", "x");
    pack_kv_s(&b.pk, "text", "y");
    assert_rejected(&b, AV_PROTO_E_VALUE, "level");
    builder_free(&b);
}

static void
test_rejects_32_bit_fields_beyond_32_bits(void **state)
{
    (void)state;
    const char *keys[] = { "deadline_ms", "idx" };
    for (size_t i = 0; i < 2; i++) {
        builder_t b;
        builder_init(&b);
        pack_envelope(&b, "check", 1, 3);
        pack_kv_s(&b.pk, "id", "r");
        pack_kv_s(&b.pk, "name", "example.com");
        pack_kv_u(&b.pk, keys[i], (uint64_t)UINT32_MAX + 1);
        assert_rejected(&b, AV_PROTO_E_VALUE, keys[i]);
        builder_free(&b);
    }
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "ready", 1, 2);
    pack_kv_s(&b.pk, "registry", "verisign");
    pack_kv_u(&b.pk, "credit", (uint64_t)UINT32_MAX + 1);
    assert_rejected(&b, AV_PROTO_E_VALUE, "credit");
    builder_free(&b);

    builder_init(&b);
    pack_envelope(&b, "put", 1, 3);
    pack_kv_s(&b.pk, "name", "example.com");
    pack_kv_s(&b.pk, "status", "available");
    pack_kv_u(&b.pk, "ttl_s", (uint64_t)UINT32_MAX + 1);
    assert_rejected(&b, AV_PROTO_E_VALUE, "ttl_s");
    builder_free(&b);
}

/* ---- rejections: size, depth, allocation bombs ------------------------- */

static void
test_rejects_message_bigger_than_AV_MSG_MAX_BYTES(void **state)
{
    (void)state;
    /* A ctl padded with an unknown key to exactly AV_MSG_MAX_BYTES. */
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "ctl", 1, 2);
    pack_kv_s(&b.pk, "cmd", "status");
    pack_s(&b.pk, "pad");
    pack_long(&b.pk, AV_MSG_MAX_BYTES - b.sbuf.size - 5, 'p'); /* 5: the str32 header */
    assert_int_equal(b.sbuf.size, AV_MSG_MAX_BYTES);

    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK); /* the limit itself is fine */
    av_msg_release(&m);

    /* One byte more is too big, whatever the byte: size is checked first. */
    char *over = malloc(AV_MSG_MAX_BYTES + 1);
    assert_non_null(over);
    memcpy(over, b.sbuf.data, AV_MSG_MAX_BYTES);
    over[AV_MSG_MAX_BYTES] = '\xc0';
    assert_rejected_bytes(over, AV_MSG_MAX_BYTES + 1, AV_PROTO_E_TOO_BIG, NULL);
    free(over);
    builder_free(&b);
}

/* A ctl whose "deep" key holds `levels` arrays nested in one another. The
 * message's own map is one more level. */
static void
pack_nested(builder_t *b, int levels)
{
    pack_envelope(b, "ctl", 1, 2);
    pack_kv_s(&b->pk, "cmd", "status");
    pack_s(&b->pk, "deep");
    for (int i = 0; i < levels; i++)
        msgpack_pack_array(&b->pk, 1);
    msgpack_pack_uint64(&b->pk, 1);
}

static void
test_rejects_nesting_deeper_than_AV_DEPTH_MAX(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    pack_nested(&b, AV_DEPTH_MAX - 1); /* map + 7 arrays = 8 levels */
    assert_rejected(&b, AV_PROTO_OK, NULL);
    builder_free(&b);

    builder_init(&b);
    pack_nested(&b, AV_DEPTH_MAX); /* 9 levels */
    assert_rejected(&b, AV_PROTO_E_NOT_MSGPACK, NULL);
    builder_free(&b);

    builder_init(&b);
    pack_nested(&b, 100000); /* far past any recursion limit */
    assert_rejected(&b, AV_PROTO_E_NOT_MSGPACK, NULL);
    builder_free(&b);

    /* Empty containers do not open a level. */
    builder_init(&b);
    pack_envelope(&b, "ctl", 1, 2);
    pack_kv_s(&b.pk, "cmd", "status");
    pack_s(&b.pk, "empties");
    msgpack_pack_array(&b.pk, AV_DEPTH_MAX * 2);
    for (int i = 0; i < AV_DEPTH_MAX * 2; i++)
        msgpack_pack_map(&b.pk, 0);
    assert_rejected(&b, AV_PROTO_OK, NULL);
    builder_free(&b);
}

static double
elapsed_ms(const struct timespec *from)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - from->tv_sec) * 1e3 + (double)(now.tv_nsec - from->tv_nsec) / 1e6;
}

static void
test_rejects_memory_bomb_headers_quickly(void **state)
{
    (void)state;
    /* Each claims about 4 billion elements or bytes in a handful of bytes. If
     * msgpack-c saw one it would try to reserve tens of gigabytes first. */
    static const struct { const char *what; unsigned char bytes[12]; size_t size; } bombs[] = {
        { "array32", { 0xdd, 0xff, 0xff, 0xff, 0xff }, 5 },
        { "map32", { 0xdf, 0xff, 0xff, 0xff, 0xff }, 5 },
        { "str32", { 0xdb, 0xff, 0xff, 0xff, 0xff }, 5 },
        { "bin32", { 0xc6, 0xff, 0xff, 0xff, 0xff }, 5 },
        { "ext32", { 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01 }, 6 },
        { "array16 with 3 bytes", { 0xdc, 0xff, 0xff, 0x01, 0x02, 0x03 }, 6 },
        { "array32 inside a map", { 0x81, 0xa1, 't', 0xdd, 0xff, 0xff, 0xff, 0xff }, 8 },
        { "fixmap short of pairs", { 0x8f, 0xa1, 't', 0xa1, 'x' }, 5 },
    };
#ifndef UNDER_ASAN
    struct rlimit saved, capped;
    assert_int_equal(getrlimit(RLIMIT_AS, &saved), 0);
    capped = saved;
    if (capped.rlim_cur == RLIM_INFINITY || capped.rlim_cur > (rlim_t)8 << 30)
        capped.rlim_cur = (rlim_t)8 << 30;
    assert_int_equal(setrlimit(RLIMIT_AS, &capped), 0);
#endif
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int rc[sizeof bombs / sizeof bombs[0]];
    for (size_t i = 0; i < sizeof bombs / sizeof bombs[0]; i++) {
        av_msg_t m;
        av_msg_init(&m);
        rc[i] = av_msg_decode(&m, bombs[i].bytes, bombs[i].size);
        av_msg_release(&m);
    }
    double ms = elapsed_ms(&start);
#ifndef UNDER_ASAN
    assert_int_equal(setrlimit(RLIMIT_AS, &saved), 0);
#endif
    for (size_t i = 0; i < sizeof bombs / sizeof bombs[0]; i++)
        if (rc[i] != AV_PROTO_E_NOT_MSGPACK)
            fail_msg("%s: want %d (not msgpack), got %d (%s)", bombs[i].what, AV_PROTO_E_NOT_MSGPACK, rc[i],
                     av_proto_strerror(rc[i]));
    /* Microseconds in practice; the bound only has to catch a real attempt
     * to allocate, even under the sanitizers. */
    assert_true(ms < 200.0);
}

/* ---- what is accepted besides the known keys ---------------------------- */

static void
test_unknown_keys_are_ignored(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "answer", 1, 6);
    pack_kv_s(&b.pk, "id", "r");
    pack_kv_s(&b.pk, "future_text", "ignored");
    pack_kv_s(&b.pk, "name", "example.com");
    pack_s(&b.pk, "future_list");
    msgpack_pack_array(&b.pk, 2);
    msgpack_pack_int64(&b.pk, -1);
    msgpack_pack_nil(&b.pk);
    msgpack_pack_uint64(&b.pk, 12); /* a non-string key */
    pack_s(&b.pk, "ignored too");
    pack_kv_s(&b.pk, "status", "reserved");
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_av_str(m.u.answer.id, "r");
    assert_av_str(m.u.answer.name, "example.com");
    assert_int_equal(m.u.answer.status, AV_STATUS_RESERVED);
    av_msg_release(&m);
    builder_free(&b);
}

static void
test_newer_version_with_extra_keys_decodes(void **state)
{
    (void)state;
    /* What a v2 intake might send: the keys we know, and more we don't. */
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "check", 2, 5);
    pack_kv_s(&b.pk, "id", "r2");
    pack_kv_s(&b.pk, "name", "example.com");
    pack_kv_u(&b.pk, "priority", 5);
    pack_s(&b.pk, "trace");
    msgpack_pack_map(&b.pk, 2);
    pack_kv_s(&b.pk, "span", "abc123");
    pack_s(&b.pk, "tags");
    msgpack_pack_array(&b.pk, 2);
    pack_s(&b.pk, "x");
    pack_s(&b.pk, "y");
    pack_s(&b.pk, "sig");
    msgpack_pack_bin(&b.pk, 4);
    msgpack_pack_bin_body(&b.pk, "\x00\x01\x02\x03", 4);
    av_msg_t m;
    av_msg_init(&m);
    assert_int_equal(decode(&m, &b), AV_PROTO_OK);
    assert_int_equal(m.v, 2);
    assert_int_equal(m.type, AV_MSG_CHECK);
    assert_av_str(m.u.check.id, "r2");
    assert_av_str(m.u.check.name, "example.com");
    av_msg_release(&m);
    builder_free(&b);
}

/* ---- error texts and reading helpers ------------------------------------ */

static void
test_strerror_names_the_code_and_the_key(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    pack_envelope(&b, "check", 1, 1);
    pack_kv_s(&b.pk, "name", "example.com");
    av_msg_t m;
    av_msg_init(&m);
    int rc = decode(&m, &b);
    char buf[64];
    assert_string_equal(av_msg_strerror(&m, rc, buf, sizeof buf), "missing key 'id'");
    av_msg_release(&m);
    builder_free(&b);

    av_msg_init(&m);
    rc = av_msg_decode(&m, "\xc1", 1);
    assert_string_equal(av_msg_strerror(&m, rc, buf, sizeof buf), "not msgpack");
    av_msg_release(&m);
    assert_string_equal(av_msg_strerror(NULL, AV_PROTO_E_TOO_BIG, buf, sizeof buf), "message too big");

    /* Every code has its own text; an unknown code a generic one. */
    const int codes[] = { AV_PROTO_OK, AV_PROTO_E_TOO_BIG, AV_PROTO_E_NOT_MSGPACK, AV_PROTO_E_NOT_MAP,
                          AV_PROTO_E_MISSING, AV_PROTO_E_TYPE, AV_PROTO_E_TOO_LONG, AV_PROTO_E_UNKNOWN_TYPE,
                          AV_PROTO_E_VALUE, AV_PROTO_E_NOMEM };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_string_not_equal(av_proto_strerror(codes[i]), "error");
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(av_proto_strerror(codes[i]), av_proto_strerror(codes[j]));
    }
    assert_string_equal(av_proto_strerror(-100), "error");
}

static void
test_obj_get_helpers_read_only_their_type(void **state)
{
    (void)state;
    builder_t b;
    builder_init(&b);
    msgpack_pack_map(&b.pk, 5);
    pack_kv_s(&b.pk, "s", "text");
    pack_kv_u(&b.pk, "u", 7);
    pack_s(&b.pk, "b");
    msgpack_pack_false(&b.pk);
    pack_s(&b.pk, "neg");
    msgpack_pack_int64(&b.pk, -3);
    msgpack_pack_uint64(&b.pk, 1); /* a non-string key is never found */
    pack_s(&b.pk, "one");
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, b.sbuf.data, b.sbuf.size, NULL), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *map = &up.data;

    av_str_t s = AV_STR("untouched");
    uint64_t u = 99;
    bool flag = true;
    assert_non_null(av_obj_get(map, "s"));
    assert_null(av_obj_get(map, "absent"));
    assert_null(av_obj_get(map, "1"));
    assert_null(av_obj_get(NULL, "s"));
    assert_null(av_obj_get(av_obj_get(map, "s"), "s")); /* not a map */

    assert_true(av_obj_get_str(map, "s", &s));
    assert_av_str(s, "text");
    assert_true(av_obj_get_uint(map, "u", &u));
    assert_true(u == 7);
    assert_true(av_obj_get_bool(map, "b", &flag));
    assert_false(flag);

    /* The wrong type or no key: false, and the output left alone. */
    s = AV_STR("untouched");
    u = 99;
    flag = true;
    assert_false(av_obj_get_str(map, "u", &s));
    assert_false(av_obj_get_str(map, "absent", &s));
    assert_av_str(s, "untouched");
    assert_false(av_obj_get_uint(map, "neg", &u));
    assert_false(av_obj_get_uint(map, "s", &u));
    assert_true(u == 99);
    assert_false(av_obj_get_bool(map, "u", &flag));
    assert_true(flag);

    msgpack_unpacked_destroy(&up);
    builder_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names_round_trip),
        cmocka_unit_test(test_source_names_round_trip),
        cmocka_unit_test(test_level_names_round_trip),
        cmocka_unit_test(test_msg_type_names),
        cmocka_unit_test(test_str_eq_and_copy),

        cmocka_unit_test(test_check_with_one_name_round_trips),
        cmocka_unit_test(test_check_with_a_batch_of_names_round_trips),
        cmocka_unit_test(test_check_with_a_batch_given_as_views_encodes_as_names),
        cmocka_unit_test(test_check_from_the_encoder_reads_as_intakes_hand_packed_one),
        cmocka_unit_test(test_checks_ride_in_one_message_batches_of_views_too),
        cmocka_unit_test(test_answer_with_every_field_round_trips),
        cmocka_unit_test(test_minimal_answer_round_trips),
        cmocka_unit_test(test_answer_round_trips_every_status_and_source),
        cmocka_unit_test(test_ready_heartbeat_and_bye_round_trip),
        cmocka_unit_test(test_heartbeat_and_bye_need_no_keys),
        cmocka_unit_test(test_error_event_round_trips_at_every_level),
        cmocka_unit_test(test_put_round_trips),
        cmocka_unit_test(test_ctl_round_trips),
        cmocka_unit_test(test_ctl_with_arguments_round_trips),
        cmocka_unit_test(test_ctl_reply_ok_round_trips_with_extra_pairs),
        cmocka_unit_test(test_ctl_reply_error_round_trips),
        cmocka_unit_test(test_answer_idx_travels_without_rid_only_when_asked),
        cmocka_unit_test(test_bye_with_handed_back_ids_round_trips),
        cmocka_unit_test(test_a_group_queriers_ready_and_bye_carry_every_registry),
        cmocka_unit_test(test_bad_registries_of_a_ready_are_refused),
        cmocka_unit_test(test_answers_batch_round_trips),
        cmocka_unit_test(test_utf8_sanitize_keeps_valid_utf8_and_replaces_the_rest),
        cmocka_unit_test(test_encoders_append_one_message_after_another),
        cmocka_unit_test(test_failed_decode_leaves_nothing_stale_for_the_next),

        cmocka_unit_test(test_rejects_empty_input),
        cmocka_unit_test(test_rejects_bytes_that_are_not_msgpack),
        cmocka_unit_test(test_rejects_every_truncation_of_a_valid_message),
        cmocka_unit_test(test_rejects_trailing_bytes_after_the_value),
        cmocka_unit_test(test_rejects_top_level_that_is_not_a_map),
        cmocka_unit_test(test_rejects_missing_t),
        cmocka_unit_test(test_rejects_t_that_is_not_a_string),
        cmocka_unit_test(test_rejects_unknown_t),
        cmocka_unit_test(test_rejects_missing_v),
        cmocka_unit_test(test_rejects_v_zero_or_beyond_32_bits),
        cmocka_unit_test(test_rejects_v_that_is_not_an_unsigned_integer),

        cmocka_unit_test(test_rejects_each_missing_required_key_of_each_type),
        cmocka_unit_test(test_rejects_required_key_of_the_wrong_type),
        cmocka_unit_test(test_rejects_optional_key_of_the_wrong_type),
        cmocka_unit_test(test_rejects_strings_longer_than_their_bound),
        cmocka_unit_test(test_rejects_batch_larger_than_AV_BATCH_MAX),
        cmocka_unit_test(test_rejects_empty_batch),
        cmocka_unit_test(test_rejects_batch_holding_a_non_string),
        cmocka_unit_test(test_rejects_bad_entries_in_an_answers_batch),
        cmocka_unit_test(test_rejects_bad_ids_in_a_bye),
        cmocka_unit_test(test_rejects_unknown_status_source_and_level),
        cmocka_unit_test(test_rejects_32_bit_fields_beyond_32_bits),

        cmocka_unit_test(test_rejects_message_bigger_than_AV_MSG_MAX_BYTES),
        cmocka_unit_test(test_rejects_nesting_deeper_than_AV_DEPTH_MAX),
        cmocka_unit_test(test_rejects_memory_bomb_headers_quickly),

        cmocka_unit_test(test_unknown_keys_are_ignored),
        cmocka_unit_test(test_newer_version_with_extra_keys_decodes),
        cmocka_unit_test(test_strerror_names_the_code_and_the_key),
        cmocka_unit_test(test_obj_get_helpers_read_only_their_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
