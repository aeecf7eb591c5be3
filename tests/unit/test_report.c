/* Unit tests of av_report, every daemon's way to availd-errors: an event
 * carries every field; the same code about the same registry goes at most
 * once a second and the next says how many were held back; a storm is cut
 * by the token bucket; with availd-errors away the queue takes 1,000 and
 * the rest are dropped and counted, and reporting never blocks. The clock
 * is the test's (av_report_set_clock); availd-errors is a PULL socket. */
#include "unit_daemon.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define SECOND_US 1000000ULL

static uint64_t now_us;

static uint64_t
test_clock(void)
{
    return now_us;
}

typedef struct {
    unit_daemon_t *u;
    char endpoint[PATH_MAX];
    zsock_t *errors;        /* availd-errors' PULL, when it is up */
    char log_path[PATH_MAX];
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->u = unit_daemon_new("querier", "endpoints:\n  errors_events: ipc://errors.sock\n")))
        return -1;
    snprintf(f->u->d.instance, sizeof f->u->d.instance, "verisign");
    snprintf(f->u->d.ident, sizeof f->u->d.ident, "querier-verisign");
    unit_daemon_endpoint(f->u, f->endpoint, sizeof f->endpoint, "errors.sock");
    unit_path(f->log_path, sizeof f->log_path, f->u->dir, "log");
    av_log_target_t target = { .kind = AV_LOG_FILE, .path = f->log_path };
    if (av_log_open("test_report", &target, 1, AV_LOG_DEBUG) < 0)
        return -1;
    now_us = 1000 * SECOND_US;
    av_report_set_clock(test_clock);
    if (av_reporter_open(&f->u->d) < 0)
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    zsock_destroy(&f->errors);
    unit_daemon_destroy(&f->u);
    av_report_set_clock(NULL);
    av_log_close();
    free(f);
    return 0;
}

/* availd-errors comes up. */
static void
errors_up(fixture_t *f)
{
    f->errors = zsock_new(ZMQ_PULL);
    assert_non_null(f->errors);
    assert_int_equal(zsock_bind(f->errors, "%s", f->endpoint), 0);
}

/* The next event availd-errors receives, within timeout_ms; false when
 * none came. The event's strings are copied into the caller's buffers. */
typedef struct {
    char daemon[AV_DAEMON_MAX + 1];
    char registry[AV_REGISTRY_MAX + 1];
    char code[AV_CODE_MAX + 1];
    char text[AV_TEXT_MAX + 1];
    av_level_t level;
    uint64_t at_ms;
    uint32_t pid;
} event_t;

static bool
receive(fixture_t *f, event_t *ev, int timeout_ms)
{
    zsock_set_rcvtimeo(f->errors, timeout_ms);
    zframe_t *frame = zframe_recv(f->errors);
    if (!frame)
        return false;
    av_msg_t msg;
    av_msg_init(&msg);
    assert_int_equal(av_msg_decode(&msg, zframe_data(frame), zframe_size(frame)), 0);
    assert_int_equal(msg.type, AV_MSG_ERROR);
    const av_error_t *e = &msg.u.error;
    av_str_copy(ev->daemon, sizeof ev->daemon, e->daemon);
    av_str_copy(ev->registry, sizeof ev->registry, e->registry);
    av_str_copy(ev->code, sizeof ev->code, e->code);
    av_str_copy(ev->text, sizeof ev->text, e->text);
    ev->level = e->level;
    ev->at_ms = e->at_ms;
    ev->pid = e->pid;
    assert_int_equal(e->seq, 0); /* where it is stored is availd-errors' to say */
    av_msg_release(&msg);
    zframe_destroy(&frame);
    return true;
}

/* Receives until nothing comes for 200 ms; returns how many came. */
static uint32_t
receive_all(fixture_t *f)
{
    event_t ev;
    uint32_t n = 0;
    while (receive(f, &ev, 200))
        n++;
    return n;
}

static size_t
log_count(fixture_t *f, const char *needle)
{
    char *log = unit_read_file(f->log_path);
    assert_non_null(log);
    size_t n = unit_count(log, needle);
    free(log);
    return n;
}

/* ---- what an event says ------------------------------------------------- */

static void
test_an_event_carries_every_field_and_is_logged(void **state)
{
    fixture_t *f = *state;
    event_t ev;
    errors_up(f);
    uint64_t before_ms = av_now_ms();
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "no answer in %d ms", 500);
    assert_true(receive(f, &ev, 2000));
    assert_string_equal(ev.daemon, "querier-verisign");
    assert_string_equal(ev.registry, "verisign");
    assert_int_equal(ev.level, AV_LEVEL_WARNING);
    assert_string_equal(ev.code, "timeout");
    assert_string_equal(ev.text, "no answer in 500 ms");
    assert_in_range(ev.at_ms, before_ms, av_now_ms());
    assert_int_equal(ev.pid, (uint32_t)getpid());
    assert_int_equal(unit_daemon_counter(f->u, "events_sent"), 1);
    assert_int_equal(log_count(f, "warning: [timeout] verisign: no answer in 500 ms"), 1);
}

static void
test_an_event_about_no_registry_has_an_empty_one(void **state)
{
    fixture_t *f = *state;
    event_t ev;
    errors_up(f);
    av_report(&f->u->d, AV_LOG_ERR, NULL, "config_refused", "bad file");
    assert_true(receive(f, &ev, 2000));
    assert_string_equal(ev.registry, "");
    assert_int_equal(ev.level, AV_LEVEL_ERR);
    assert_int_equal(log_count(f, "error: [config_refused] bad file"), 1);
}

static void
test_without_a_daemon_a_report_is_only_logged(void **state)
{
    fixture_t *f = *state;
    errors_up(f);
    av_report(NULL, AV_LOG_NOTICE, "denic", "tool", "from a tool");
    assert_int_equal(receive_all(f), 0);
    assert_int_equal(log_count(f, "[tool] denic: from a tool"), 1);
}

/* ---- once a second ------------------------------------------------------ */

static void
test_the_same_code_and_registry_goes_once_a_second_and_the_next_says_how_many_were_held(void **state)
{
    fixture_t *f = *state;
    event_t ev;
    errors_up(f);
    for (int i = 0; i < 5; i++) {
        av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "no answer");
        now_us += SECOND_US / 10;
    }
    assert_int_equal(receive_all(f), 1);
    assert_int_equal(unit_daemon_counter(f->u, "events_sent"), 1);
    assert_int_equal(unit_daemon_counter(f->u, "events_repeated"), 4);
    assert_int_equal(log_count(f, "no answer"), 1); /* the log is spared too */

    now_us += SECOND_US / 2; /* a second after the first */
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "no answer");
    assert_true(receive(f, &ev, 2000));
    assert_string_equal(ev.text, "no answer (and 4 more like it)");
    /* The count starts again: one held, then the next says one. */
    now_us += SECOND_US / 2;
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "no answer");
    now_us += SECOND_US / 2;
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "no answer");
    assert_true(receive(f, &ev, 2000));
    assert_string_equal(ev.text, "no answer (and 1 more like it)");
    assert_int_equal(receive_all(f), 0);
    assert_int_equal(unit_daemon_counter(f->u, "events_sent"), 3);
    assert_int_equal(unit_daemon_counter(f->u, "events_repeated"), 5);
}

static void
test_a_report_a_second_later_without_repeats_says_nothing_more(void **state)
{
    fixture_t *f = *state;
    event_t ev;
    errors_up(f);
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "no answer");
    now_us += SECOND_US;
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "no answer");
    assert_true(receive(f, &ev, 2000));
    assert_true(receive(f, &ev, 2000));
    assert_string_equal(ev.text, "no answer");
}

static void
test_other_codes_and_registries_are_not_held(void **state)
{
    fixture_t *f = *state;
    errors_up(f);
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "x");
    av_report(&f->u->d, AV_LOG_WARNING, "denic", "timeout", "x");
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "refused", "x");
    av_report(&f->u->d, AV_LOG_WARNING, NULL, "timeout", "x");
    assert_int_equal(receive_all(f), 4);
    assert_int_equal(unit_daemon_counter(f->u, "events_repeated"), 0);
}

/* ---- storms and absence ------------------------------------------------- */

static void
test_a_storm_is_cut_to_the_burst_then_the_rate(void **state)
{
    fixture_t *f = *state;
    errors_up(f);
    /* 600 different codes at once: a burst of 400 goes, 200 are dropped. */
    for (int i = 0; i < 600; i++) {
        char code[16];
        snprintf(code, sizeof code, "c%d", i);
        av_report(&f->u->d, AV_LOG_INFO, "r", code, "storm");
    }
    assert_int_equal(unit_daemon_counter(f->u, "events_sent"), 400);
    assert_int_equal(unit_daemon_counter(f->u, "events_dropped"), 200);
    /* A second refills 200. */
    now_us += SECOND_US;
    for (int i = 0; i < 250; i++) {
        char code[16];
        snprintf(code, sizeof code, "d%d", i);
        av_report(&f->u->d, AV_LOG_INFO, "r", code, "storm");
    }
    assert_int_equal(unit_daemon_counter(f->u, "events_sent"), 600);
    assert_int_equal(unit_daemon_counter(f->u, "events_dropped"), 250);
    assert_int_equal(receive_all(f), 600);
}

static void
test_with_availd_errors_away_the_queue_holds_a_thousand_and_drops_the_rest_without_blocking(void **state)
{
    fixture_t *f = *state;
    uint64_t started_ms = (av_mono_us() / 1000);
    for (int i = 0; i < 1500; i++) {
        now_us += SECOND_US; /* neither repeats nor the rate hold any back */
        av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "n=%d", i);
    }
    uint64_t took_ms = (av_mono_us() / 1000) - started_ms;
    uint64_t sent = unit_daemon_counter(f->u, "events_sent");
    uint64_t dropped = unit_daemon_counter(f->u, "events_dropped");
    assert_int_equal(sent + dropped, 1500);
    if (sent < 1000 || sent > 1010)
        fail_msg("%llu events queued, want the queue's 1000", (unsigned long long)sent);
    if (took_ms > 5000)
        fail_msg("1500 reports took %llu ms: reporting waited", (unsigned long long)took_ms);
    /* availd-errors comes back: what was queued arrives, oldest first. */
    errors_up(f);
    event_t ev;
    assert_true(receive(f, &ev, 5000));
    assert_string_equal(ev.text, "n=0");
    assert_int_equal(1 + receive_all(f), sent);
}

static void
test_closing_the_reporter_forgets_what_was_held(void **state)
{
    fixture_t *f = *state;
    errors_up(f);
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "x");
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "x"); /* held */
    assert_int_equal(receive_all(f), 1);
    av_reporter_close(&f->u->d);
    assert_int_equal(av_reporter_open(&f->u->d), 0);
    av_report(&f->u->d, AV_LOG_WARNING, "verisign", "timeout", "x");
    event_t ev;
    assert_true(receive(f, &ev, 2000));
    assert_string_equal(ev.text, "x");
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_an_event_carries_every_field_and_is_logged),
        T(test_an_event_about_no_registry_has_an_empty_one),
        T(test_without_a_daemon_a_report_is_only_logged),
        T(test_the_same_code_and_registry_goes_once_a_second_and_the_next_says_how_many_were_held),
        T(test_a_report_a_second_later_without_repeats_says_nothing_more),
        T(test_other_codes_and_registries_are_not_held),
        T(test_a_storm_is_cut_to_the_burst_then_the_rate),
        T(test_with_availd_errors_away_the_queue_holds_a_thousand_and_drops_the_rest_without_blocking),
        T(test_closing_the_reporter_forgets_what_was_held),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
