/* Unit tests of av_log: log_level filtering with a file target read back,
 * level clamping, av_log_close restoring the built-in state (stderr at
 * notice), and av_log_reopen after logrotate has renamed the file. The
 * logger is process-wide; every test closes it in its teardown. */
#include "av_log.h"

#include "unit_files.h"

#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#define IDENT "unit-log"

/* ---- fixture and helpers ------------------------------------------------ */

typedef struct {
    char *dir;
    char log_path[PATH_MAX];   /* dir/availd.log */
    int saved_stderr;          /* >= 0 while stderr is captured */
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = unit_tmpdir_new("log"))) {
        free(f);
        return -1;
    }
    unit_path(f->log_path, sizeof f->log_path, f->dir, "availd.log");
    f->saved_stderr = -1;
    /* Under systemd the stderr format changes; these tests want the plain one. */
    unsetenv("JOURNAL_STREAM");
    *state = f;
    return 0;
}

static void stderr_restore(fixture_t *f);

static int
teardown(void **state)
{
    fixture_t *f = *state;
    stderr_restore(f);
    av_log_close();
    unit_tmpdir_remove(&f->dir);
    free(f);
    return 0;
}

/* Opens the logger with one file target at path. */
static int
open_file_log(const char *path, int level)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    av_log_target_t target = { .kind = AV_LOG_FILE, .path = copy };
    return av_log_open(IDENT, &target, 1, level);
}

/* Sends stderr to dir/name until stderr_restore, so what the logger writes
 * there can be read back. */
static void
stderr_capture(fixture_t *f, const char *name)
{
    char path[PATH_MAX];
    int fd = open(unit_path(path, sizeof path, f->dir, name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    f->saved_stderr = dup(STDERR_FILENO);
    assert_true(f->saved_stderr >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

static void
stderr_restore(fixture_t *f)
{
    if (f->saved_stderr < 0)
        return;
    fflush(stderr);
    dup2(f->saved_stderr, STDERR_FILENO);
    close(f->saved_stderr);
    f->saved_stderr = -1;
}

static char *
read_in_dir(fixture_t *f, const char *name)
{
    char path[PATH_MAX];
    char *text = unit_read_file(unit_path(path, sizeof path, f->dir, name));
    assert_non_null(text);
    return text;
}

/* The line the logger writes for msg at a level word, after the timestamp. */
static const char *
expected_line(char *buf, size_t size, const char *ident, const char *word, const char *msg)
{
    snprintf(buf, size, " %s[%d]: %s: %s\n", ident, (int)getpid(), word, msg);
    return buf;
}

static const char *const level_words[] = { "error", "warning", "notice", "info", "debug" };

/* ---- levels ------------------------------------------------------------- */

static void
test_each_level_logs_exactly_the_messages_at_or_below_it(void **state)
{
    fixture_t *f = *state;
    for (int level = AV_LOG_ERR; level <= AV_LOG_DEBUG; level++) {
        char name[32], path[PATH_MAX];
        snprintf(name, sizeof name, "level-%d.log", level);
        assert_int_equal(open_file_log(unit_path(path, sizeof path, f->dir, name), level), 0);
        assert_int_equal(av_log_level(), level);
        av_log_err("message %d", AV_LOG_ERR);
        av_log_warning("message %d", AV_LOG_WARNING);
        av_log_notice("message %d", AV_LOG_NOTICE);
        av_log_info("message %d", AV_LOG_INFO);
        av_log_debug("message %d", AV_LOG_DEBUG);
        av_log_close();

        char *text = read_in_dir(f, name);
        for (int m = AV_LOG_ERR; m <= AV_LOG_DEBUG; m++) {
            char msg[32], line[128];
            snprintf(msg, sizeof msg, "message %d", m);
            bool present = strstr(text, expected_line(line, sizeof line, IDENT, level_words[m], msg)) != NULL;
            if (present != (m <= level))
                fail_msg("log_level %d: \"%s\" %s\n--- file ---\n%s", level, msg,
                         present ? "written but should be filtered" : "missing", text);
        }
        assert_int_equal(unit_count(text, "\n"), level + 1);
        free(text);
    }
}

static void
test_file_line_holds_utc_timestamp_ident_pid_and_level(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(open_file_log(f->log_path, AV_LOG_INFO), 0);
    av_log_info("hello %s", "world");
    av_log_close();

    char *text = read_in_dir(f, "availd.log");
    int year, mon, day, hour, min, sec, ms, consumed = 0;
    assert_int_equal(sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &year, &mon, &day, &hour, &min, &sec, &ms,
                            &consumed),
                     7);
    assert_int_equal(consumed, 24); /* 2024-01-02T03:04:05.678Z */
    assert_in_range(year, 2020, 2200);
    assert_in_range(mon, 1, 12);
    assert_in_range(ms, 0, 999);
    char line[128];
    assert_string_equal(text + consumed, expected_line(line, sizeof line, IDENT, "info", "hello world"));
    free(text);
}

static void
test_set_level_clamps_to_err_and_debug(void **state)
{
    (void)state;
    av_log_set_level(-5);
    assert_int_equal(av_log_level(), AV_LOG_ERR);
    av_log_set_level(99);
    assert_int_equal(av_log_level(), AV_LOG_DEBUG);
    av_log_set_level(AV_LOG_INFO);
    assert_int_equal(av_log_level(), AV_LOG_INFO);
}

static void
test_set_level_filters_from_the_next_message(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(open_file_log(f->log_path, AV_LOG_ERR), 0);
    av_log_info("before raising");
    av_log_set_level(AV_LOG_INFO);
    av_log_info("after raising");
    av_log_set_level(AV_LOG_WARNING);
    av_log_info("after lowering");
    av_log_close();

    char *text = read_in_dir(f, "availd.log");
    assert_null(strstr(text, "before raising"));
    assert_non_null(strstr(text, "info: after raising\n"));
    assert_null(strstr(text, "after lowering"));
    free(text);
}

/* ---- targets ------------------------------------------------------------ */

static void
test_close_resets_to_stderr_at_notice(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(open_file_log(f->log_path, AV_LOG_DEBUG), 0);
    av_log_debug("while open");
    av_log_close();
    assert_int_equal(av_log_level(), AV_LOG_NOTICE);

    stderr_capture(f, "stderr.txt");
    av_log_notice("after close");
    av_log_info("info after close");
    stderr_restore(f);

    /* The file got nothing more... */
    char *text = read_in_dir(f, "availd.log");
    assert_int_equal(unit_count(text, "\n"), 1);
    assert_null(strstr(text, "after close"));
    free(text);
    /* ...stderr got the notice, under the built-in ident, and not the info. */
    char *err = read_in_dir(f, "stderr.txt");
    char line[128];
    assert_non_null(strstr(err, expected_line(line, sizeof line, "availd", "notice", "after close")));
    assert_null(strstr(err, "info after close"));
    assert_int_equal(unit_count(err, "\n"), 1);
    free(err);
}

static void
test_reopen_after_rename_writes_a_new_file_at_the_original_path(void **state)
{
    fixture_t *f = *state;
    char rotated[PATH_MAX];
    unit_path(rotated, sizeof rotated, f->dir, "availd.log.1");
    assert_int_equal(open_file_log(f->log_path, AV_LOG_NOTICE), 0);
    av_log_notice("before rotation");
    assert_int_equal(rename(f->log_path, rotated), 0);
    av_log_notice("between rename and reopen"); /* still the renamed file */
    av_log_reopen();
    av_log_notice("after reopen");
    av_log_close();

    char *old = read_in_dir(f, "availd.log.1");
    char *now = read_in_dir(f, "availd.log");
    assert_non_null(strstr(old, "notice: before rotation\n"));
    assert_non_null(strstr(old, "notice: between rename and reopen\n"));
    assert_null(strstr(old, "after reopen"));
    assert_non_null(strstr(now, "notice: after reopen\n"));
    assert_int_equal(unit_count(now, "\n"), 1);
    free(old);
    free(now);

    /* The new file is the daemon's own: not readable by others. */
    struct stat st;
    assert_int_equal(stat(f->log_path, &st), 0);
    assert_int_equal(st.st_mode & 0007, 0);
}

static void
test_open_reports_an_unopenable_file_and_keeps_the_other_targets(void **state)
{
    fixture_t *f = *state;
    char bad[PATH_MAX], good[PATH_MAX];
    unit_path(bad, sizeof bad, f->dir, "no-such-dir/availd.log");
    unit_path(good, sizeof good, f->dir, "good.log");
    av_log_target_t targets[] = { { AV_LOG_FILE, bad }, { AV_LOG_FILE, good } };

    stderr_capture(f, "stderr.txt");
    assert_int_equal(av_log_open(IDENT, targets, 2, AV_LOG_NOTICE), -1);
    av_log_notice("still logged");
    stderr_restore(f);

    char *text = read_in_dir(f, "good.log");
    assert_non_null(strstr(text, "notice: still logged\n"));
    free(text);
    char *err = read_in_dir(f, "stderr.txt");
    assert_non_null(strstr(err, "cannot open log file"));
    assert_non_null(strstr(err, "no-such-dir/availd.log"));
    /* The failed target was dropped, not kept pointing at stderr. */
    assert_null(strstr(err, "still logged"));
    free(err);
}

static void
test_every_file_target_gets_each_message(void **state)
{
    fixture_t *f = *state;
    char a[PATH_MAX], b[PATH_MAX];
    unit_path(a, sizeof a, f->dir, "a.log");
    unit_path(b, sizeof b, f->dir, "b.log");
    av_log_target_t targets[] = { { AV_LOG_FILE, a }, { AV_LOG_FILE, b } };
    assert_int_equal(av_log_open(IDENT, targets, 2, AV_LOG_WARNING), 0);
    av_log_warning("to both");
    av_log_close();
    char *ta = read_in_dir(f, "a.log"), *tb = read_in_dir(f, "b.log");
    assert_non_null(strstr(ta, "warning: to both\n"));
    assert_non_null(strstr(tb, "warning: to both\n"));
    free(ta);
    free(tb);
}

static void
test_oversized_message_is_cut_but_ends_its_line(void **state)
{
    fixture_t *f = *state;
    size_t n = 10000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    assert_int_equal(open_file_log(f->log_path, AV_LOG_NOTICE), 0);
    av_log_notice("%s", big);
    av_log_notice("next");
    av_log_close();
    free(big);

    char *text = read_in_dir(f, "availd.log");
    assert_int_equal(unit_count(text, "\n"), 2);
    size_t xs = strspn(strstr(text, "notice: ") + strlen("notice: "), "x");
    assert_true(xs > 1000 && xs < n); /* cut, not dropped */
    assert_non_null(strstr(text, "notice: next\n"));
    free(text);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_each_level_logs_exactly_the_messages_at_or_below_it),
        T(test_file_line_holds_utc_timestamp_ident_pid_and_level),
        T(test_set_level_clamps_to_err_and_debug),
        T(test_set_level_filters_from_the_next_message),
        T(test_close_resets_to_stderr_at_notice),
        T(test_reopen_after_rename_writes_a_new_file_at_the_original_path),
        T(test_open_reports_an_unopenable_file_and_keeps_the_other_targets),
        T(test_every_file_target_gets_each_message),
        T(test_oversized_message_is_cut_but_ends_its_line),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
