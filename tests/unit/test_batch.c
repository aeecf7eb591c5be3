/* Unit tests of av_batch: the messages read in one loop turn are handed
 * over as one batch, in order, never more than max at a time; malformed
 * ones are counted, dropped and (when asked) reported once; a flush, a
 * finish and a destroy hand over what was read and not yet handed over.
 * Messages come over inproc://, so a send is readable at once. */
#include "av_batch.h"

#include "unit_daemon.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define BATCHES_MAX 64
#define MESSAGES_MAX 256

/* What the daemon's batch function saw, in order. */
typedef struct {
    uint32_t batches;
    uint32_t sizes[BATCHES_MAX];
    uint32_t messages;
    char codes[MESSAGES_MAX][AV_CODE_MAX + 1];
} seen_t;

typedef struct {
    unit_daemon_t *u;
    zsock_t *pull;          /* the daemon's */
    zsock_t *push;          /* the test's */
    av_batch_t *batch;
    seen_t seen;
    char log_path[PATH_MAX];
} fixture_t;

static void
on_batch(av_daemon_t *d, av_msg_t *const *msgs, uint32_t n)
{
    seen_t *s = av_daemon_state(d);
    if (s->batches < BATCHES_MAX)
        s->sizes[s->batches] = n;
    s->batches++;
    for (uint32_t i = 0; i < n; i++, s->messages++) {
        assert_int_equal(msgs[i]->type, AV_MSG_ERROR);
        if (s->messages < MESSAGES_MAX)
            av_str_copy(s->codes[s->messages], sizeof s->codes[0], msgs[i]->u.error.code);
    }
}

static int
setup(void **state)
{
    static unsigned serial;
    char endpoint[64];
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->u = unit_daemon_new("errors", "")))
        return -1;
    av_daemon_set_state(&f->u->d, &f->seen);
    /* The log, to see what is reported. */
    unit_path(f->log_path, sizeof f->log_path, f->u->dir, "log");
    av_log_target_t target = { .kind = AV_LOG_FILE, .path = f->log_path };
    if (av_log_open("test_batch", &target, 1, AV_LOG_NOTICE) < 0)
        return -1;
    snprintf(endpoint, sizeof endpoint, "inproc://batch-%u", serial++);
    f->pull = zsock_new(ZMQ_PULL);
    f->push = zsock_new(ZMQ_PUSH);
    if (!f->pull || !f->push || zsock_bind(f->pull, "%s", endpoint) < 0 || zsock_connect(f->push, "%s", endpoint) < 0)
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    av_batch_destroy(&f->batch);
    zsock_destroy(&f->push);
    zsock_destroy(&f->pull);
    unit_daemon_destroy(&f->u);
    av_log_close();
    free(f);
    return 0;
}

static void
new_batch(fixture_t *f, uint32_t max, bool report_malformed)
{
    f->batch = av_batch_new(&f->u->d, f->pull, AV_MSG_ERROR, max, report_malformed, on_batch);
    assert_non_null(f->batch);
}

/* Sends an error event whose code is `code`. */
static void
send_event(fixture_t *f, const char *code)
{
    msgpack_sbuffer sbuf;
    av_error_t ev = { .daemon = AV_STR("test"), .level = AV_LEVEL_WARNING, .code = av_str(code), .text = AV_STR("x") };
    msgpack_sbuffer_init(&sbuf);
    assert_int_equal(av_encode_error(&sbuf, &ev), 0);
    assert_int_equal(zsock_send(f->push, "b", sbuf.data, sbuf.size), 0);
    msgpack_sbuffer_destroy(&sbuf);
}

static void
send_events(fixture_t *f, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        char code[16];
        snprintf(code, sizeof code, "c%u", i);
        send_event(f, code);
    }
}

typedef struct {
    const seen_t *seen;
    uint32_t messages;
} want_t;

static bool
seen_enough(void *arg)
{
    const want_t *w = arg;
    return w->seen->messages >= w->messages;
}

/* Runs the loop until n messages were handed over (or 2 s), then a little
 * longer, so that anything handed over too many would show. */
static void
run_until_handed_over(fixture_t *f, uint32_t n)
{
    want_t want = { &f->seen, n };
    if (!unit_daemon_run_until(f->u, seen_enough, &want, 2000))
        fail_msg("%u of %u messages handed over", f->seen.messages, n);
    unit_daemon_run_for(f->u, 50);
}

/* The codes handed over are c0, c1, ... c(n-1), in order. */
static void
assert_codes_in_order(const fixture_t *f, uint32_t n)
{
    assert_int_equal(f->seen.messages, n);
    for (uint32_t i = 0; i < n; i++) {
        char want[16];
        snprintf(want, sizeof want, "c%u", i);
        assert_string_equal(f->seen.codes[i], want);
    }
}

/* ---- batches ------------------------------------------------------------ */

static void
test_messages_read_in_one_turn_are_one_batch_in_order(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 100, true);
    send_events(f, 5);
    run_until_handed_over(f, 5);
    assert_int_equal(f->seen.batches, 1);
    assert_int_equal(f->seen.sizes[0], 5);
    assert_codes_in_order(f, 5);
    assert_int_equal(unit_daemon_counter(f->u, "received"), 5);
    assert_int_equal(unit_daemon_counter(f->u, "malformed"), 0);
}

static void
test_a_batch_never_holds_more_than_max(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 4, true);
    send_events(f, 10);
    run_until_handed_over(f, 10);
    assert_int_equal(f->seen.batches, 3);
    assert_int_equal(f->seen.sizes[0], 4);
    assert_int_equal(f->seen.sizes[1], 4);
    assert_int_equal(f->seen.sizes[2], 2);
    assert_codes_in_order(f, 10);
}

static void
test_max_zero_hands_over_each_message_alone(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 0, true);
    send_events(f, 3);
    run_until_handed_over(f, 3);
    assert_int_equal(f->seen.batches, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(f->seen.sizes[i], 1);
    assert_codes_in_order(f, 3);
}

static void
test_later_turns_make_later_batches(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 100, true);
    send_events(f, 2);
    run_until_handed_over(f, 2);
    send_event(f, "c2");
    run_until_handed_over(f, 3);
    assert_int_equal(f->seen.batches, 2);
    assert_int_equal(f->seen.sizes[0], 2);
    assert_int_equal(f->seen.sizes[1], 1);
    assert_codes_in_order(f, 3);
}

/* ---- malformed messages ------------------------------------------------- */

/* Garbage, a message of another type, and two frames, around good ones. */
static void
send_malformed_among_good(fixture_t *f)
{
    msgpack_sbuffer sbuf;
    send_event(f, "c0");
    assert_int_equal(zsock_send(f->push, "s", "not msgpack"), 0);
    msgpack_sbuffer_init(&sbuf);
    av_encode_ctl(&sbuf, "status");
    assert_int_equal(zsock_send(f->push, "b", sbuf.data, sbuf.size), 0);
    assert_int_equal(zsock_send(f->push, "bb", sbuf.data, sbuf.size, sbuf.data, sbuf.size), 0);
    msgpack_sbuffer_destroy(&sbuf);
    send_event(f, "c1");
}

static void
test_malformed_messages_are_counted_and_dropped_and_the_rest_handed_over(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 100, false);
    send_malformed_among_good(f);
    run_until_handed_over(f, 2);
    assert_codes_in_order(f, 2);
    assert_int_equal(unit_daemon_counter(f->u, "received"), 5);
    assert_int_equal(unit_daemon_counter(f->u, "malformed"), 3);
    /* Not reported: availd-errors itself does not report to itself. */
    char *log = unit_read_file(f->log_path);
    assert_non_null(log);
    assert_int_equal(unit_count(log, "malformed_message"), 0);
    free(log);
}

static void
test_malformed_messages_are_reported_once_a_second(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 100, true);
    send_malformed_among_good(f);
    run_until_handed_over(f, 2);
    assert_int_equal(unit_daemon_counter(f->u, "malformed"), 3);
    char *log = unit_read_file(f->log_path);
    assert_non_null(log);
    /* The first says why; the two after it within the second are held. */
    if (unit_count(log, "[malformed_message] dropped a message: not msgpack") != 1 ||
        unit_count(log, "malformed_message") != 1)
        fail_msg("log:\n%s", log);
    free(log);
}

/* ---- handing over before the turn ends ---------------------------------- */

static void
test_flush_hands_over_what_was_read_at_once(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 100, true);
    av_batch_flush(f->batch); /* nothing read: nothing handed over */
    assert_int_equal(f->seen.batches, 0);
    send_events(f, 3);
    unit_daemon_drain(NULL, &f->u->d); /* read, as in a turn before a query */
    assert_int_equal(f->seen.batches, 0);
    av_batch_flush(f->batch);
    assert_int_equal(f->seen.batches, 1);
    assert_codes_in_order(f, 3);
    unit_daemon_run_for(f->u, 50); /* the turn's end has nothing left */
    assert_int_equal(f->seen.batches, 1);
}

static void
test_finish_reads_at_most_limit_hands_them_over_and_stops_reading(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 100, true);
    send_events(f, 3);
    av_batch_finish(f->batch, 2);
    assert_int_equal(f->seen.batches, 1);
    assert_codes_in_order(f, 2);
    send_event(f, "c3");
    unit_daemon_run_for(f->u, 100);
    assert_int_equal(f->seen.messages, 2);
    assert_int_equal(unit_daemon_counter(f->u, "received"), 2);
}

static void
test_destroy_hands_over_what_was_read(void **state)
{
    fixture_t *f = *state;
    new_batch(f, 100, true);
    send_events(f, 3);
    unit_daemon_drain(NULL, &f->u->d);
    av_batch_destroy(&f->batch);
    assert_null(f->batch);
    assert_int_equal(f->seen.batches, 1);
    assert_codes_in_order(f, 3);
    av_batch_destroy(&f->batch); /* twice is harmless */
    av_batch_destroy(NULL);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_messages_read_in_one_turn_are_one_batch_in_order),
        T(test_a_batch_never_holds_more_than_max),
        T(test_max_zero_hands_over_each_message_alone),
        T(test_later_turns_make_later_batches),
        T(test_malformed_messages_are_counted_and_dropped_and_the_rest_handed_over),
        T(test_malformed_messages_are_reported_once_a_second),
        T(test_flush_hands_over_what_was_read_at_once),
        T(test_finish_reads_at_most_limit_hands_them_over_and_stops_reading),
        T(test_destroy_hands_over_what_was_read),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
