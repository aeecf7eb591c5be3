/* Unit tests of the error event's encodings in proto: as a daemon reports
 * it (t, v and its seven keys), as availd-errors publishes it (seq and
 * received after them) and lists it (a map led by seq and received, without
 * t and v), and the decoder that reads all three back. Key order is part of
 * what is tested: `availctl errors --json` prints keys in the order sent. */
#include "av_proto.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static av_error_t
sample(void)
{
    return (av_error_t){
        .daemon = AV_STR("querier-verisign"),
        .registry = AV_STR("verisign"),
        .level = AV_LEVEL_WARNING,
        .code = AV_STR("timeout"),
        .text = AV_STR("no answer in 5000 ms"),
        .at_ms = 1800000000123ULL,
        .pid = 4321,
    };
}

/* The keys of a msgpack map, in order, joined by commas. */
static void
keys_of(const msgpack_object *map, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        assert_int_equal(k->type, MSGPACK_OBJECT_STR);
        len += (size_t)snprintf(out + len, size - len, "%s%.*s", i ? "," : "", (int)k->via.str.size, k->via.str.ptr);
    }
}

static void
assert_sample_fields(const av_error_t *e)
{
    assert_true(av_str_eq(e->daemon, "querier-verisign"));
    assert_true(av_str_eq(e->registry, "verisign"));
    assert_int_equal(e->level, AV_LEVEL_WARNING);
    assert_true(av_str_eq(e->code, "timeout"));
    assert_true(av_str_eq(e->text, "no answer in 5000 ms"));
    assert_int_equal(e->at_ms, 1800000000123ULL);
    assert_int_equal(e->pid, 4321);
}

static void
test_a_reported_event_has_its_seven_keys_and_no_place(void **state)
{
    (void)state;
    av_error_t in = sample();
    msgpack_sbuffer sbuf;
    av_msg_t msg;
    char keys[256];
    msgpack_sbuffer_init(&sbuf);
    assert_int_equal(av_encode_error(&sbuf, &in), 0);
    av_msg_init(&msg);
    assert_int_equal(av_msg_decode(&msg, sbuf.data, sbuf.size), 0);
    assert_int_equal(msg.type, AV_MSG_ERROR);
    keys_of(&msg.root, keys, sizeof keys);
    assert_string_equal(keys, "t,v,daemon,registry,level,code,text,at,pid");
    assert_sample_fields(&msg.u.error);
    assert_int_equal(msg.u.error.seq, 0);
    assert_int_equal(msg.u.error.received_ms, 0);
    av_msg_release(&msg);
    msgpack_sbuffer_destroy(&sbuf);
}

static void
test_a_published_event_adds_seq_and_received_after_its_keys(void **state)
{
    (void)state;
    av_error_t in = sample();
    in.seq = 17;
    in.received_ms = 1800000000999ULL;
    msgpack_sbuffer sbuf;
    av_msg_t msg;
    char keys[256];
    msgpack_sbuffer_init(&sbuf);
    assert_int_equal(av_encode_error(&sbuf, &in), 0);
    av_msg_init(&msg);
    assert_int_equal(av_msg_decode(&msg, sbuf.data, sbuf.size), 0);
    keys_of(&msg.root, keys, sizeof keys);
    assert_string_equal(keys, "t,v,daemon,registry,level,code,text,at,pid,seq,received");
    assert_sample_fields(&msg.u.error);
    assert_int_equal(msg.u.error.seq, 17);
    assert_int_equal(msg.u.error.received_ms, 1800000000999ULL);
    av_msg_release(&msg);
    msgpack_sbuffer_destroy(&sbuf);
}

static void
test_a_listed_event_is_a_map_led_by_seq_and_received(void **state)
{
    (void)state;
    av_error_t in = sample();
    in.seq = 17;
    in.received_ms = 1800000000999ULL;
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_unpacked up;
    char keys[256];
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    av_pack_error_map(&pk, &in);
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, sbuf.data, sbuf.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, sbuf.size);
    keys_of(&up.data, keys, sizeof keys);
    assert_string_equal(keys, "seq,received,daemon,registry,level,code,text,at,pid");
    uint64_t v = 0;
    assert_true(av_obj_get_uint(&up.data, "seq", &v));
    assert_int_equal(v, 17);
    assert_true(av_obj_get_uint(&up.data, "received", &v));
    assert_int_equal(v, 1800000000999ULL);
    av_str_t s;
    assert_true(av_obj_get_str(&up.data, "level", &s));
    assert_true(av_str_eq(s, "warning"));
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sbuf);
}

static void
test_a_seq_that_is_not_a_number_is_refused(void **state)
{
    (void)state;
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    av_msg_t msg;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    av_pack_kv_str(&pk, "t", "error");
    av_pack_kv_uint(&pk, "v", 1);
    av_pack_kv_str(&pk, "daemon", "intake");
    av_pack_kv_str(&pk, "level", "err");
    av_pack_kv_str(&pk, "code", "x");
    av_pack_kv_str(&pk, "text", "x");
    av_pack_kv_str(&pk, "seq", "17");
    av_msg_init(&msg);
    assert_int_equal(av_msg_decode(&msg, sbuf.data, sbuf.size), AV_PROTO_E_TYPE);
    assert_string_equal(msg.bad_key, "seq");
    av_msg_release(&msg);
    msgpack_sbuffer_destroy(&sbuf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_reported_event_has_its_seven_keys_and_no_place),
        cmocka_unit_test(test_a_published_event_adds_seq_and_received_after_its_keys),
        cmocka_unit_test(test_a_listed_event_is_a_map_led_by_seq_and_received),
        cmocka_unit_test(test_a_seq_that_is_not_a_number_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
