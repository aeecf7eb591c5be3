/* availd-http's parts without a server: client budgets (token buckets, the
 * API keys file, an IPv6 /64 as one client), names from a query string,
 * the JSON of an answer, and the http section of availd.yaml. */
#include "http.h"
#include "unit_files.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static av_http_cfg_t
cfg_with(uint32_t rate, uint32_t burst, const char *keys)
{
    av_http_cfg_t c = { .client_rate = rate, .client_burst = burst, .max_clients = 16, .api_keys = (char *)keys };
    return c;
}

static void
test_budget_refills_at_its_rate_and_says_how_long_to_wait(void **state)
{
    (void)state;
    char err[256];
    av_http_cfg_t cfg = cfg_with(10, 10, "");
    budgets_t *b = budgets_new(&cfg, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(budgets_take(b, "ip:1.2.3.4", 10, 1000000), 0);
    assert_int_equal(budgets_take(b, "ip:1.2.3.4", 5, 1000000), 1); /* 5 names at 10/s: within a second */
    assert_int_equal(budgets_take(b, "ip:5.6.7.8", 10, 1000000), 0); /* another client has its own */
    assert_int_equal(budgets_take(b, "ip:1.2.3.4", 5, 1500000), 0);  /* half a second: 5 back */
    assert_int_equal(budgets_take(b, "ip:1.2.3.4", 1000, 1500000), 1); /* more than the burst waits for a full bucket */
    assert_int_equal(budgets_count(b), 2);
    budgets_destroy(&b);
    assert_null(b);
}

static void
test_a_full_table_forgets_idle_clients_then_shares_one_bucket(void **state)
{
    (void)state;
    char err[256], client[32];
    av_http_cfg_t cfg = cfg_with(1, 1, "");
    budgets_t *b = budgets_new(&cfg, err, sizeof err);
    for (int i = 0; i < 16; i++) {
        snprintf(client, sizeof client, "ip:10.0.0.%d", i);
        assert_int_equal(budgets_take(b, client, 1, 0), 0);
    }
    /* Table full, nobody idle: newcomers share the overflow bucket. */
    assert_int_equal(budgets_take(b, "ip:10.0.1.1", 1, 0), 0);
    assert_int_equal(budgets_take(b, "ip:10.0.1.2", 1, 0), 1);
    assert_true(budgets_count(b) <= 17);
    /* A second later every bucket is full again: the idle are forgotten. */
    assert_int_equal(budgets_take(b, "ip:10.0.1.3", 1, 2000000), 0);
    assert_true(budgets_count(b) <= 2);
    budgets_destroy(&b);
}

static void
test_clients_by_address_and_by_key(void **state)
{
    (void)state;
    char err[256], client[64], path[512];
    char *dir = unit_tmpdir_new("http");
    unit_path(path, sizeof path, dir, "keys");
    assert_int_equal(unit_write_file(path, "# shops\nshop-one 50 100\nshop-two\n"), 0);
    av_http_cfg_t cfg = cfg_with(10, 20, path);
    budgets_t *b = budgets_new(&cfg, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(budgets_client(b, "shop-one", NULL, client, sizeof client), 0);
    assert_string_equal(client, "key:2");
    assert_int_equal(budgets_take(b, client, 100, 0), 0); /* its own burst, not the default 20 */
    assert_int_equal(budgets_client(b, "nope", NULL, client, sizeof client), -1);
    struct sockaddr_in6 a = { .sin6_family = AF_INET6 }, c = a;
    inet_pton(AF_INET6, "2001:db8:1:2:aaaa::1", &a.sin6_addr);
    inet_pton(AF_INET6, "2001:db8:1:2:bbbb::9", &c.sin6_addr);
    char one[64], two[64];
    budgets_client(b, NULL, (struct sockaddr *)&a, one, sizeof one);
    budgets_client(b, NULL, (struct sockaddr *)&c, two, sizeof two);
    assert_string_equal(one, two); /* one /64, one client */
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &a.sin6_addr);
    budgets_client(b, NULL, (struct sockaddr *)&a, one, sizeof one);
    assert_string_equal(one, "ip:192.0.2.7");
    budgets_destroy(&b);
    /* A bad line is refused with where it is. */
    assert_int_equal(unit_write_file(path, "ok-key\nbad-key 0\n"), 0);
    assert_null(budgets_new(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "keys:2:"));
    assert_int_equal(unit_write_file(path, "same\nsame\n"), 0);
    assert_null(budgets_new(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "listed twice"));
    unit_tmpdir_remove(&dir);
}

static void
test_a_reload_keeps_what_each_client_has_left(void **state)
{
    (void)state;
    char err[256], path[512], client[64];
    char *dir = unit_tmpdir_new("http");
    unit_path(path, sizeof path, dir, "keys");
    assert_int_equal(unit_write_file(path, "shop-one 10 10\nshop-two 10 10\n"), 0);
    av_http_cfg_t cfg = cfg_with(10, 10, path);
    budgets_t *prev = budgets_new(&cfg, err, sizeof err);
    assert_non_null(prev);
    assert_int_equal(budgets_take(prev, "ip:192.0.2.1", 10, 0), 0); /* its bucket empty */
    assert_int_equal(budgets_client(prev, "shop-two", NULL, client, sizeof client), 0);
    assert_string_equal(client, "key:2");
    assert_int_equal(budgets_take(prev, client, 10, 0), 0);
    /* The same settings again, the keys file reordered and one key gone. */
    assert_int_equal(unit_write_file(path, "# moved\n# down\nshop-two 10 10\n"), 0);
    budgets_t *next = budgets_new(&cfg, err, sizeof err);
    assert_non_null(next);
    budgets_carry_over(next, prev);
    budgets_destroy(&prev);
    assert_int_equal(budgets_take(next, "ip:192.0.2.1", 1, 0), 1);  /* still empty: no fresh burst */
    assert_int_equal(budgets_client(next, "shop-two", NULL, client, sizeof client), 0);
    assert_string_equal(client, "key:3");                            /* its new line */
    assert_int_equal(budgets_take(next, client, 1, 0), 1);
    assert_int_equal(budgets_take(next, "ip:192.0.2.1", 5, 500000), 0); /* refilled at its rate */
    assert_int_equal(budgets_count(next), 2);
    budgets_destroy(&next);
    /* A smaller burst after the reload caps what is left. */
    cfg = cfg_with(10, 100, "");
    prev = budgets_new(&cfg, err, sizeof err);
    assert_int_equal(budgets_take(prev, "ip:192.0.2.2", 1, 0), 0); /* 99 left */
    cfg = cfg_with(10, 5, "");
    next = budgets_new(&cfg, err, sizeof err);
    budgets_carry_over(next, prev);
    budgets_destroy(&prev);
    assert_int_equal(budgets_take(next, "ip:192.0.2.2", 5, 0), 0);
    assert_int_equal(budgets_take(next, "ip:192.0.2.2", 1, 0), 1);
    budgets_destroy(&next);
    unit_tmpdir_remove(&dir);
}

static void
free_names(char **names, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static void
test_names_from_a_query_string(void **state)
{
    (void)state;
    char **names, why[128];
    uint32_t n;
    assert_int_equal(api_split_names("a.com, b.net,bücher.de", 10, &names, &n, why, sizeof why), 0);
    assert_int_equal(n, 3);
    assert_string_equal(names[1], "b.net");
    assert_string_equal(names[2], "bücher.de");
    free_names(names, n);
    assert_int_equal(api_split_names("a.com,,b.net", 10, &names, &n, why, sizeof why), -1);
    assert_non_null(strstr(why, "empty name at position 2"));
    free_names(names, n);
    assert_int_equal(api_split_names("a,b,c", 2, &names, &n, why, sizeof why), -2);
    free_names(names, n);
    assert_int_equal(api_split_names("caf\xe9.com", 10, &names, &n, why, sizeof why), -1);
    assert_non_null(strstr(why, "not UTF-8"));
    free_names(names, n);
    assert_int_equal(api_split_names("", 10, &names, &n, why, sizeof why), -1);
    free_names(names, n);
}

static void
test_answer_json_has_domainr_and_availd_keys(void **state)
{
    (void)state;
    av_answer_t a = { .name = AV_STR("xn--bcher-kva.co.uk"), .status = AV_STATUS_AVAILABLE,
                      .registry = AV_STR("nominet"), .source = AV_SOURCE_WHOIS, .at_ms = 42 };
    json_t *o = api_answer_json("bücher.co.uk", &a);
    assert_string_equal(json_string_value(json_object_get(o, "domain")), "bücher.co.uk");
    assert_string_equal(json_string_value(json_object_get(o, "zone")), "co.uk");
    assert_string_equal(json_string_value(json_object_get(o, "status")), "undelegated inactive");
    assert_string_equal(json_string_value(json_object_get(o, "summary")), "inactive");
    assert_string_equal(json_string_value(json_object_get(o, "availability")), "available");
    assert_string_equal(json_string_value(json_object_get(o, "source")), "whois");
    assert_int_equal(json_integer_value(json_object_get(o, "at")), 42);
    assert_null(json_object_get(o, "reason"));
    json_decref(o);
    av_answer_t u = { .name = AV_STR(""), .status = AV_STATUS_INVALID, .reason = AV_STR("bad_character") };
    o = api_answer_json("a\xff!.com", &u); /* what was asked is echoed as valid UTF-8 */
    assert_non_null(json_object_get(o, "domain"));
    assert_string_equal(json_string_value(json_object_get(o, "summary")), "invalid");
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "bad_character");
    json_decref(o);
}

static void
test_config_http_section(void **state)
{
    (void)state;
    char err[AV_CONFIG_ERR_MAX], path[512];
    char *dir = unit_tmpdir_new("http");
    av_config_t *cfg;
    unit_path(path, sizeof path, dir, "availd.yaml");
    assert_int_equal(unit_write_file(path, "registries: {}\n"), 0);
    assert_int_equal(av_config_load(path, &cfg, err, sizeof err), 0);
    assert_false(cfg->http.enabled); /* no section: availd-http is not run */
    assert_int_equal(cfg->http.tlds.count, 5);
    av_config_free(&cfg);
    assert_int_equal(unit_write_file(path, "http:\n  listen: tcp://127.0.0.1:9999\n  tlds: [.de, co.uk]\n"
                                           "  www: site\n  log_level: 4\n"), 0);
    assert_int_equal(av_config_load(path, &cfg, err, sizeof err), 0);
    assert_true(cfg->http.enabled);
    assert_string_equal(cfg->http.tlds.items[0], "de");
    assert_string_equal(cfg->http.listen, "tcp://127.0.0.1:9999");
    assert_non_null(strstr(cfg->http.www, "/site"));
    assert_int_equal(av_config_process(cfg, "http")->log_level, 4);
    av_config_free(&cfg);
    assert_int_equal(unit_write_file(path, "http:\n  listen: ipc://x.sock\n"), 0);
    assert_int_equal(av_config_load(path, &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "availd.yaml:2:11: 'listen' of http must be tcp://"));
    assert_int_equal(unit_write_file(path, "http:\n  client_rate: 100\n  client_burst: 10\n"), 0);
    assert_int_equal(av_config_load(path, &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "availd.yaml:3:17:"));
    assert_int_equal(unit_write_file(path, "http:\n  max_names: 1001\n"), 0);
    assert_int_equal(av_config_load(path, &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "between 1 and 1000"));
    unit_tmpdir_remove(&dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_refills_at_its_rate_and_says_how_long_to_wait),
        cmocka_unit_test(test_a_full_table_forgets_idle_clients_then_shares_one_bucket),
        cmocka_unit_test(test_clients_by_address_and_by_key),
        cmocka_unit_test(test_a_reload_keeps_what_each_client_has_left),
        cmocka_unit_test(test_names_from_a_query_string),
        cmocka_unit_test(test_answer_json_has_domainr_and_availd_keys),
        cmocka_unit_test(test_config_http_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
