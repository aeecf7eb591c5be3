/* Unit tests of reload (av_reload): a good file is adopted, but a setting
 * the daemon applies only at start keeps its running value and is listed
 * as needing a restart until the file agrees again; a refused file changes
 * nothing, the list included; a daemon without a reload hook adopts
 * nothing. */
#include "unit_daemon.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static const av_setting_t errors_start_only[] = {
    AV_SETTING("errors.path", errors.path, AV_SETTING_STR),
    AV_SETTING("errors.map_size_mb", errors.map_size_mb, AV_SETTING_U32),
    { NULL, 0, 0 },
};

static int
adopt(av_daemon_t *d, const av_config_t *next)
{
    (void)d;
    (void)next;
    return 0;
}

static int
adopt_but_keep_a_registry(av_daemon_t *d, const av_config_t *next)
{
    (void)next;
    av_daemon_needs_restart(d, "registries.%s.protocol", "example");
    return 0;
}

static int
refuse(av_daemon_t *d, const av_config_t *next)
{
    (void)d;
    (void)next;
    return -1;
}

static int
setup(void **state)
{
    unit_daemon_t *u = unit_daemon_new("errors", "errors:\n  path: first\n  retention_count: 10\n");
    if (!u)
        return -1;
    u->hooks.on_reload = adopt;
    u->hooks.restart_settings = errors_start_only;
    *state = u;
    return 0;
}

static int
teardown(void **state)
{
    unit_daemon_t *u = *state;
    unit_daemon_destroy(&u);
    av_log_close();
    return 0;
}

static int
reload_with(unit_daemon_t *u, const char *yaml)
{
    char err[AV_CONFIG_ERR_MAX];
    assert_int_equal(unit_daemon_write_config(u, yaml), 0);
    return av_daemon_reload(&u->d, err, sizeof err);
}

static void
assert_needs_restart(const unit_daemon_t *u, const char *const *keys, uint32_t n)
{
    if (u->d.n_needs_restart != n)
        fail_msg("want %u settings needing a restart, got %u (first: %s)", n, u->d.n_needs_restart,
                 u->d.n_needs_restart ? u->d.needs_restart[0] : "-");
    for (uint32_t i = 0; i < n; i++)
        assert_string_equal(u->d.needs_restart[i], keys[i]);
}

static void
test_a_start_only_setting_keeps_its_running_value_and_the_rest_is_adopted(void **state)
{
    unit_daemon_t *u = *state;
    char first[PATH_MAX];
    snprintf(first, sizeof first, "%s", u->d.cfg->errors.path);
    assert_int_equal(reload_with(u, "errors:\n  path: second\n  retention_count: 20\n"), 0);
    /* the adopted config carries what runs: every reader sees the truth */
    assert_string_equal(u->d.cfg->errors.path, first);
    assert_int_equal(u->d.cfg->errors.retention_count, 20);
    const char *want[] = { "errors.path" };
    assert_needs_restart(u, want, 1);
    assert_int_equal(unit_daemon_counter(u, "reloads_refused"), 0);
}

static void
test_numbers_and_the_skeletons_own_settings_are_compared_too(void **state)
{
    unit_daemon_t *u = *state;
    uint32_t map = u->d.cfg->errors.map_size_mb;
    assert_int_equal(reload_with(u, "errors:\n  path: first\n  map_size_mb: 7\n  user: nobody\n"
                                    "endpoints:\n  control: ipc://elsewhere-%s.sock\n"),
                     0);
    assert_int_equal(u->d.cfg->errors.map_size_mb, map);
    assert_null(u->d.cfg->errors.process.user);
    const char *want[] = { "endpoints.control", "errors.map_size_mb", "errors.user" };
    assert_needs_restart(u, want, 3);
}

static void
test_the_file_back_at_the_running_values_needs_no_restart(void **state)
{
    unit_daemon_t *u = *state;
    assert_int_equal(reload_with(u, "errors:\n  path: second\n"), 0);
    assert_int_equal(u->d.n_needs_restart, 1);
    assert_int_equal(reload_with(u, "errors:\n  path: first\n  retention_count: 30\n"), 0);
    assert_int_equal(u->d.n_needs_restart, 0);
    assert_int_equal(u->d.cfg->errors.retention_count, 30);
}

static void
test_a_refused_reload_changes_nothing_not_even_the_list(void **state)
{
    unit_daemon_t *u = *state;
    assert_int_equal(reload_with(u, "errors:\n  path: second\n"), 0);
    const av_config_t *running = u->d.cfg;
    /* a file that does not load */
    assert_int_equal(reload_with(u, "errors:\n  path: [\n"), -1);
    /* a file the daemon refuses */
    u->hooks.on_reload = refuse;
    assert_int_equal(reload_with(u, "errors:\n  path: first\n  map_size_mb: 9\n"), -1);
    assert_ptr_equal(u->d.cfg, running);
    const char *want[] = { "errors.path" };
    assert_needs_restart(u, want, 1);
    assert_int_equal(unit_daemon_counter(u, "reloads_refused"), 2);
}

static void
test_a_hook_names_what_it_keeps(void **state)
{
    unit_daemon_t *u = *state;
    u->hooks.on_reload = adopt_but_keep_a_registry;
    assert_int_equal(reload_with(u, "errors:\n  path: first\n"), 0);
    const char *want[] = { "registries.example.protocol" };
    assert_needs_restart(u, want, 1);
    /* named twice, listed once */
    av_daemon_needs_restart(&u->d, "registries.%s.protocol", "example");
    assert_int_equal(u->d.n_needs_restart, 1);
}

static void
test_a_daemon_without_a_reload_hook_adopts_nothing(void **state)
{
    unit_daemon_t *u = *state;
    u->hooks.on_reload = NULL;
    const av_config_t *running = u->d.cfg;
    assert_int_equal(reload_with(u, "errors:\n  path: first\n  retention_count: 99\n"), 0);
    assert_ptr_equal(u->d.cfg, running);
    assert_int_equal(u->d.cfg->errors.retention_count, 10);
    assert_int_equal(u->d.n_needs_restart, 1);
    assert_non_null(strstr(u->d.needs_restart[0], "every setting"));
}

static void
test_the_list_is_bounded(void **state)
{
    unit_daemon_t *u = *state;
    for (int i = 0; i < 3 * AV_RESTART_MAX; i++)
        av_daemon_needs_restart(&u->d, "key.%d", i);
    assert_int_equal(u->d.n_needs_restart, AV_RESTART_MAX);
    assert_string_equal(u->d.needs_restart[AV_RESTART_MAX - 1], "(more settings)");
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_a_start_only_setting_keeps_its_running_value_and_the_rest_is_adopted),
        T(test_numbers_and_the_skeletons_own_settings_are_compared_too),
        T(test_the_file_back_at_the_running_values_needs_no_restart),
        T(test_a_refused_reload_changes_nothing_not_even_the_list),
        T(test_a_hook_names_what_it_keeps),
        T(test_a_daemon_without_a_reload_hook_adopts_nothing),
        T(test_the_list_is_bounded),
    };
#undef T
    return cmocka_run_group_tests_name("reload", tests, NULL, NULL);
}
