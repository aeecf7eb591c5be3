/* Unit tests of the config loader's key table (av_config_keys), which
 * availd.yaml(5) is made from: every key the loader accepts has a
 * description in man/availd.yaml.keys (the failure names the key and the
 * file to add it to), no description is left for a key the loader no longer
 * accepts, and the defaults and ranges are the loader's own. */
#include "av_config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define KEYS_FILE AVAILD_SOURCE_DIR "/man/availd.yaml.keys"
#define MAX_KEYS 2048

typedef struct {
    char *described[MAX_KEYS];
    bool used[MAX_KEYS];
    size_t n_described;
    size_t missing;
    av_config_key_t seen[MAX_KEYS];  /* copies, for the default checks */
    char *strings[MAX_KEYS * 4];
    size_t n_seen, n_strings;
} keys_t;

static void
read_keys_file(keys_t *k)
{
    FILE *f = fopen(KEYS_FILE, "r");
    assert_non_null(f);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0] || line[0] == '#' || line[0] == ' ' || line[0] == '\t')
            continue;
        assert_true(k->n_described < MAX_KEYS);
        k->described[k->n_described++] = strdup(line);
    }
    fclose(f);
}

static const char *
keep(keys_t *k, const char *s)
{
    return k->strings[k->n_strings++] = strdup(s);
}

static void
on_key(const av_config_key_t *key, void *arg)
{
    keys_t *k = arg;
    bool found = false;
    for (size_t i = 0; i < k->n_described; i++)
        if (strcmp(k->described[i], key->path) == 0)
            found = k->used[i] = true;
    if (!found) {
        print_error("config key '%s' (%s) has no description: add a line '%s' (at the start of the line) "
                    "and its description (indented lines below it) to %s\n",
                    key->path, key->type, key->path, KEYS_FILE);
        k->missing++;
    }
    if (k->n_seen < MAX_KEYS)
        k->seen[k->n_seen++] = (av_config_key_t){ keep(k, key->path), keep(k, key->type),
                                                  keep(k, key->default_text), keep(k, key->range_text),
                                                  key->required, key->section };
}

static void
keys_free(keys_t *k)
{
    for (size_t i = 0; i < k->n_described; i++)
        free(k->described[i]);
    for (size_t i = 0; i < k->n_strings; i++)
        free(k->strings[i]);
}

static const av_config_key_t *
find(const keys_t *k, const char *path)
{
    for (size_t i = 0; i < k->n_seen; i++)
        if (strcmp(k->seen[i].path, path) == 0)
            return &k->seen[i];
    print_error("the loader's key table has no '%s'\n", path);
    return NULL;
}

static void
every_accepted_key_is_described(void **state)
{
    (void)state;
    keys_t *k = calloc(1, sizeof *k);
    read_keys_file(k);
    int n = av_config_keys(on_key, k);
    assert_true(n > 150); /* the tables are walked, sections and all */
    assert_int_equal(k->missing, 0);
    keys_free(k);
    free(k);
}

static void
no_description_of_a_key_the_loader_does_not_accept(void **state)
{
    (void)state;
    keys_t *k = calloc(1, sizeof *k);
    read_keys_file(k);
    assert_true(av_config_keys(on_key, k) > 0);
    size_t stale = 0;
    for (size_t i = 0; i < k->n_described; i++)
        if (!k->used[i]) {
            print_error("%s describes '%s', which the loader does not accept: remove it or fix its path\n",
                        KEYS_FILE, k->described[i]);
            stale++;
        }
    assert_int_equal(stale, 0);
    keys_free(k);
    free(k);
}

static void
defaults_and_ranges_are_the_loaders(void **state)
{
    (void)state;
    keys_t *k = calloc(1, sizeof *k);
    read_keys_file(k);
    assert_true(av_config_keys(on_key, k) > 0);
    const av_config_key_t *key = find(k, "intake.deadline_ms");
    assert_non_null(key);
    assert_string_equal(key->type, "integer");
    assert_string_equal(key->default_text, "10000");
    assert_string_equal(key->range_text, "1..3600000");
    assert_non_null(key = find(k, "registries.NAME.concurrency"));
    assert_string_equal(key->default_text, "16");
    assert_non_null(key = find(k, "registries.NAME.protocol"));
    assert_true(key->required);
    assert_non_null(key = find(k, "runtime_dir"));
    assert_string_equal(key->default_text, "/run/availd");
    assert_non_null(key = find(k, "intake.journal"));
    assert_string_equal(key->default_text, "/var/lib/availd/journal");
    assert_non_null(key = find(k, "endpoints.intake_gateway"));
    assert_string_equal(key->default_text, "tcp://127.0.0.1:4300");
    assert_non_null(strstr(key->range_text, "\"\" turns it off"));
    assert_non_null(key = find(k, "process.log"));
    assert_string_equal(key->default_text, "stderr");
    assert_non_null(key = find(k, "queriers.NAME.instances"));
    assert_string_equal(key->default_text, "1");
    assert_non_null(key = find(k, "implicit.rdap.timeout_ms"));
    assert_non_null(key = find(k, "registries.NAME.ttl"));
    assert_true(key->section);
    keys_free(k);
    free(k);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_accepted_key_is_described),
        cmocka_unit_test(no_description_of_a_key_the_loader_does_not_accept),
        cmocka_unit_test(defaults_and_ranges_are_the_loaders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
