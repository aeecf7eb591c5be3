/* Unit tests of av_config: availd.yaml files that must load (and what they
 * load into), one test per class of error with the exact "path:line:col:"
 * it must point at, and the CIDR, endpoint and control-endpoint helpers.
 * Each test writes its YAML into a private temp directory, inline. */
#include "av_config.h"
#include "av_proto.h" /* av_status_t indexes a registry's ttl_s */

#include "unit_files.h"

#include <arpa/inet.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cmocka.h>

/* ---- fixture and helpers ------------------------------------------------ */

typedef struct {
    char *dir;                   /* private temp directory */
    char path[PATH_MAX];         /* dir/availd.yaml, the file under test */
    char err[AV_CONFIG_ERR_MAX];
    av_config_t *cfg;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = unit_tmpdir_new("config"))) {
        free(f);
        return -1;
    }
    unit_path(f->path, sizeof f->path, f->dir, "availd.yaml");
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    av_config_free(&f->cfg);
    unit_tmpdir_remove(&f->dir);
    free(f);
    return 0;
}

/* Writes `yaml` as a file named `name` in the test's directory. */
static void
write_in_dir(fixture_t *f, const char *name, const char *yaml)
{
    char path[PATH_MAX];
    assert_int_equal(unit_write_file(unit_path(path, sizeof path, f->dir, name), yaml), 0);
}

/* Writes yaml as availd.yaml and loads it; the file must be accepted. */
static const av_config_t *
load_ok(fixture_t *f, const char *yaml)
{
    assert_int_equal(unit_write_file(f->path, yaml), 0);
    av_config_free(&f->cfg);
    if (av_config_load(f->path, &f->cfg, f->err, sizeof f->err) != 0)
        fail_msg("refused: %s\n--- input ---\n%s", f->err, yaml);
    assert_non_null(f->cfg);
    return f->cfg;
}

/* Writes yaml as availd.yaml and loads it; the file must be refused. The
 * error is left in f->err. */
static void
load_refused(fixture_t *f, const char *yaml)
{
    assert_int_equal(unit_write_file(f->path, yaml), 0);
    av_config_free(&f->cfg);
    if (av_config_load(f->path, &f->cfg, f->err, sizeof f->err) == 0)
        fail_msg("accepted, want an error\n--- input ---\n%s", yaml);
    assert_null(f->cfg);
}

/* The error must be "<file>:<line>:<col>: ..." and contain `what`. */
static void
assert_error_at(const char *err, const char *file, unsigned line, unsigned col, const char *what)
{
    char prefix[PATH_MAX + 64];
    snprintf(prefix, sizeof prefix, "%s:%u:%u: ", file, line, col);
    size_t n = strlen(prefix);
    if (strncmp(err, prefix, n) != 0 || !strstr(err + n, what))
        fail_msg("want \"%s...%s...\"\n got \"%s\"", prefix, what, err);
}

/* Refuses yaml at line:col of availd.yaml with `what` in the message. */
static void
assert_refused_at(fixture_t *f, const char *yaml, unsigned line, unsigned col, const char *what)
{
    load_refused(f, yaml);
    assert_error_at(f->err, f->path, line, col, what);
}

/* A minimal valid whois registry body, to which a test adds the one key it
 * is about. Four spaces of indent under `registries:` and the name. */
#define WHOIS_REGISTRY(name)          \
    "  " name ":\n"                   \
    "    tlds: com\n"                 \
    "    protocol: whois\n"           \
    "    host: whois.example.net\n"

/* ---- files that load ---------------------------------------------------- */

static void
test_empty_file_gives_every_default(void **state)
{
    fixture_t *f = *state;
    /* Both an empty file and one holding only comments have no document. */
    const char *inputs[] = { "", "# nothing but a comment\n" };
    for (size_t i = 0; i < 2; i++) {
        const av_config_t *c = load_ok(f, inputs[i]);
        assert_string_equal(c->path, f->path);
        assert_string_equal(c->runtime_dir, "/run/availd");
        assert_string_equal(c->state_dir, "/var/lib/availd");
        assert_string_equal(c->endpoints.intake_pull, "ipc:///run/availd/intake-pull.sock");
        assert_string_equal(c->endpoints.intake_router, "ipc:///run/availd/intake.sock");
        assert_string_equal(c->endpoints.intake_results, "ipc:///run/availd/intake-results.sock");
        assert_string_equal(c->endpoints.intake_gateway, "tcp://127.0.0.1:4300");
        assert_string_equal(c->endpoints.dispatcher, "ipc:///run/availd/dispatcher.sock");
        assert_string_equal(c->endpoints.dispatcher_workers, "ipc:///run/availd/dispatcher-workers.sock");
        assert_string_equal(c->endpoints.cache_puts, "ipc:///run/availd/cache.sock");
        assert_string_equal(c->endpoints.errors_events, "ipc:///run/availd/errors.sock");
        assert_string_equal(c->endpoints.errors_publish, "ipc:///run/availd/errors-pub.sock");
        assert_string_equal(c->endpoints.control, "ipc:///run/availd/control-%s.sock");

        const av_process_cfg_t *pr = av_config_process(c, "querier");
        assert_non_null(pr);
        assert_int_equal(pr->n_log, 1);
        assert_int_equal(pr->log[0].kind, AV_LOG_STDERR);
        assert_int_equal(pr->log_level, 2);
        assert_int_equal(pr->drain_ms, 5000);
        assert_false(pr->daemonize);
        assert_null(pr->user);
        assert_null(pr->pid_file);
        assert_int_equal(pr->cidr_allow.count, 0);
        assert_int_equal(pr->max_requests, 0);

        assert_int_equal(c->intake.deadline_ms, 10000);
        assert_int_equal(c->intake.max_inflight, 200000);
        assert_int_equal(c->intake.resend_ms, 5000);
        assert_string_equal(c->intake.journal, "/var/lib/availd/journal");
        assert_int_equal(c->dispatcher.heartbeat_ms, 1000);
        assert_int_equal(c->dispatcher.heartbeat_misses, 3);
        assert_int_equal(c->dispatcher.max_attempts, 3);
        assert_string_equal(c->cache.path, "/var/lib/availd/cache");
        assert_int_equal(c->cache.max_entries, 10000000);
        assert_string_equal(c->errors.path, "/var/lib/availd/errors");
        assert_int_equal(c->errors.retention_s, 30 * 86400);
        assert_int_equal(c->n_registries, 0);
    }
}

static void
test_shipped_config_loads(void **state)
{
    fixture_t *f = *state;
    const char *path = AVAILD_SOURCE_DIR "/config/availd.yaml";
    if (av_config_load(path, &f->cfg, f->err, sizeof f->err) != 0)
        fail_msg("shipped config refused: %s", f->err);
    const av_config_t *c = f->cfg;
    assert_string_equal(c->runtime_dir, "/run/availd");
    assert_string_equal(c->endpoints.intake_router, "ipc:///run/availd/intake.sock");
    assert_string_equal(c->endpoints.control, "ipc:///run/availd/control-%s.sock");
    assert_int_equal(c->process.log_level, 2);
    assert_int_equal(c->intake.deadline_ms, 10000);
    assert_int_equal(c->dispatcher.heartbeat_misses, 3);
    assert_int_equal(c->cache.map_size_mb, 4096);
    assert_int_equal(c->errors.retention_s, 2592000);
    /* The default registry table (registries.yaml, included). */
    assert_true(c->n_registries >= 60);
    const av_registry_cfg_t *com = av_config_registry(c, "verisign-com");
    assert_non_null(com);
    assert_int_equal(com->protocol, AV_PROTO_RDAP);
    assert_string_equal(com->base_url, "https://rdap.verisign.com/com/v1/");
    const av_registry_cfg_t *de = av_config_registry(c, "denic");
    assert_non_null(de);
    assert_int_equal(de->protocol, AV_PROTO_WHOIS);
    assert_string_equal(de->query, "-T dn,ace %s\r\n");
    const av_registry_cfg_t *eu = av_config_registry(c, "eurid");
    assert_non_null(eu);
    assert_int_equal(eu->protocol, AV_PROTO_DAS);
    assert_int_equal(eu->port, 4343);
}

static void
test_full_file_sets_every_section(void **state)
{
    fixture_t *f = *state;
    const av_config_t *c = load_ok(f,
        "runtime_dir: /srv/availd/run\n"
        "state_dir: /srv/availd/state\n"
        "endpoints:\n"
        "  intake_pull: ipc://pull.sock\n"
        "  intake_router: ipc://router.sock\n"
        "  intake_results: ipc://results.sock\n"
        "  intake_gateway: \"\"\n"
        "  dispatcher: {endpoint: tcp://10.0.0.1:5500, insecure: true}\n"
        "  dispatcher_workers: tcp://[::1]:5501\n"
        "  cache_puts: ipc:///var/run/cache.sock\n"
        "  errors_events: ipc://@availd-errors\n"
        "  errors_publish: ipc://errors-pub.sock\n"
        "  control: ipc://ctl-%s.sock\n"
        "process:\n"
        "  log: [syslog, /var/log/availd.log]\n"
        "  log_level: 3\n"
        "  daemon_name: availd-test\n"
        "  pid_file: availd.pid\n"
        "  daemonize: yes\n"
        "  user: availd\n"
        "  group: nogroup\n"
        "  cidr_allow: [127.0.0.0/8, \"::1/128\"]\n"
        "  cidr_deny: 10.0.0.0/8\n"
        "  max_requests: 100000\n"
        "  drain_ms: 2500\n"
        "intake:\n"
        "  deadline_ms: 8000\n"
        "  max_inflight: 5000\n"
        "  gateway_clients: 64\n"
        "  gateway_timeout_ms: 3000\n"
        "  journal: intake.journal\n"
        "  journal_map_mb: 64\n"
        "  resend_ms: 2000\n"
        "dispatcher:\n"
        "  heartbeat_ms: 500\n"
        "  heartbeat_misses: 4\n"
        "  max_inflight: 1000\n"
        "  max_inflight_per_registry: 100\n"
        "  max_attempts: 5\n"
        "  overdue_margin_ms: 750\n"
        "querier:\n"
        "  log_level: 1\n"
        "  drain_ms: 10\n"
        "cache:\n"
        "  path: /data/cache\n"
        "  map_size_mb: 128\n"
        "  max_entries: 5000\n"
        "  sweep_interval_s: 30\n"
        "  batch_max: 256\n"
        "errors:\n"
        "  path: errs\n"
        "  map_size_mb: 32\n"
        "  retention_count: 777\n"
        "  retention_s: 3600\n"
        "  batch_max: 64\n"
        "registries:\n"
        "  verisign:\n"                                   /* line 57 */
        "    tlds: [com, .NET]\n"
        "    protocol: whois\n"
        "    host: whois.verisign-grs.com\n"
        "    query: \"domain %s\\r\\n\"\n"
        "    pattern_syntax: pcre2\n"
        "    patterns:\n"
        "      available: [\"^No match for\"]\n"
        "      registered: [\"^\\\\s*Domain Name:\"]\n"
        "      reserved: reserved by the registry\n"
        "      rate_limited: [rate limit exceeded, too many requests]\n"
        "    rate_limit: { queries: 5, period_s: 2 }\n"
        "    concurrency: 4\n"
        "    queue: 50\n"
        "    timeout_ms: 3000\n"
        "    max_reply_bytes: 8192\n"
        "    backoff_s: 120\n"
        "    ttl: { available: 30, registered: 3600, reserved: 7200, unknown: 10 }\n"
        "    raw_bytes: 256\n"
        "  nic-fr:\n"
        "    tlds: fr\n"
        "    protocol: rdap\n"
        "    base_url: https://rdap.nic.fr/\n"
        "  denic:\n"
        "    tlds: de\n"
        "    protocol: das\n"
        "    host: whois.denic.de\n");

    assert_string_equal(c->runtime_dir, "/srv/availd/run");
    assert_string_equal(c->state_dir, "/srv/availd/state");
    assert_string_equal(c->endpoints.intake_pull, "ipc:///srv/availd/run/pull.sock");
    assert_string_equal(c->endpoints.intake_router, "ipc:///srv/availd/run/router.sock");
    assert_string_equal(c->endpoints.intake_results, "ipc:///srv/availd/run/results.sock");
    assert_string_equal(c->endpoints.intake_gateway, ""); /* "" turns the gateway off */
    assert_string_equal(c->endpoints.dispatcher, "tcp://10.0.0.1:5500");
    /* {endpoint:, insecure: true}: plain tcp beyond this host, on purpose */
    assert_true(av_endpoint_insecure(c, "tcp://10.0.0.1:5500"));
    assert_false(av_endpoint_insecure(c, "tcp://[::1]:5501"));
    assert_true(av_endpoint_beyond_host("tcp://10.0.0.1:5500"));
    assert_true(av_endpoint_beyond_host("tcp://0.0.0.0:5500"));
    assert_true(av_endpoint_beyond_host("tcp://eth0:5500"));
    assert_false(av_endpoint_beyond_host("tcp://[::1]:5501"));
    assert_false(av_endpoint_beyond_host("tcp://127.0.0.2:5501"));
    assert_false(av_endpoint_beyond_host("tcp://localhost:5501"));
    assert_false(av_endpoint_beyond_host("ipc://x.sock"));
    assert_string_equal(c->endpoints.dispatcher_workers, "tcp://[::1]:5501");
    assert_string_equal(c->endpoints.cache_puts, "ipc:///var/run/cache.sock");
    assert_string_equal(c->endpoints.errors_events, "ipc://@availd-errors");
    assert_string_equal(c->endpoints.errors_publish, "ipc:///srv/availd/run/errors-pub.sock");
    assert_string_equal(c->endpoints.control, "ipc:///srv/availd/run/ctl-%s.sock");

    const av_process_cfg_t *pr = &c->process;
    assert_int_equal(pr->n_log, 2);
    assert_int_equal(pr->log[0].kind, AV_LOG_SYSLOG);
    assert_int_equal(pr->log[1].kind, AV_LOG_FILE);
    assert_string_equal(pr->log[1].path, "/var/log/availd.log");
    assert_int_equal(pr->log_level, 3);
    assert_string_equal(pr->daemon_name, "availd-test");
    assert_true(pr->daemonize);
    assert_string_equal(pr->user, "availd");
    assert_string_equal(pr->group, "nogroup");
    assert_int_equal(pr->cidr_allow.count, 2);
    assert_int_equal(pr->cidr_allow.items[0].family, AF_INET);
    assert_int_equal(pr->cidr_allow.items[0].prefix, 8);
    assert_int_equal(pr->cidr_allow.items[1].family, AF_INET6);
    assert_int_equal(pr->cidr_allow.items[1].prefix, 128);
    assert_int_equal(pr->cidr_deny.count, 1);
    assert_int_equal(pr->max_requests, 100000);
    assert_int_equal(pr->drain_ms, 2500);
    /* A daemon's pid file is relative to runtime_dir. */
    assert_string_equal(c->intake.process.pid_file, "/srv/availd/run/availd.pid");

    assert_int_equal(c->intake.deadline_ms, 8000);
    assert_int_equal(c->intake.max_inflight, 5000);
    assert_int_equal(c->intake.gateway_clients, 64);
    assert_int_equal(c->intake.gateway_timeout_ms, 3000);
    assert_string_equal(c->intake.journal, "/srv/availd/state/intake.journal");
    assert_int_equal(c->intake.journal_map_mb, 64);
    assert_int_equal(c->intake.resend_ms, 2000);
    assert_int_equal(c->dispatcher.heartbeat_ms, 500);
    assert_int_equal(c->dispatcher.heartbeat_misses, 4);
    assert_int_equal(c->dispatcher.max_inflight, 1000);
    assert_int_equal(c->dispatcher.max_inflight_per_registry, 100);
    assert_int_equal(c->dispatcher.max_attempts, 5);
    assert_int_equal(c->dispatcher.overdue_margin_ms, 750);
    assert_int_equal(c->querier.process.log_level, 1);
    assert_int_equal(c->querier.process.drain_ms, 10);
    assert_string_equal(c->cache.path, "/data/cache"); /* absolute: kept */
    assert_int_equal(c->cache.map_size_mb, 128);
    assert_int_equal(c->cache.max_entries, 5000);
    assert_int_equal(c->cache.sweep_interval_s, 30);
    assert_int_equal(c->cache.batch_max, 256);
    assert_string_equal(c->errors.path, "/srv/availd/state/errs");
    assert_int_equal(c->errors.map_size_mb, 32);
    assert_int_equal(c->errors.retention_count, 777);
    assert_int_equal(c->errors.retention_s, 3600);
    assert_int_equal(c->errors.batch_max, 64);

    assert_int_equal(c->n_registries, 3);
    const av_registry_cfg_t *r = av_config_registry(c, "verisign");
    assert_non_null(r);
    assert_int_equal(r->line, 57);
    assert_int_equal(r->column, 3);
    assert_int_equal(r->tlds.count, 2);
    assert_string_equal(r->tlds.items[0], "com");
    assert_string_equal(r->tlds.items[1], "net"); /* leading dot and case dropped */
    assert_int_equal(r->protocol, AV_PROTO_WHOIS);
    assert_string_equal(r->host, "whois.verisign-grs.com");
    assert_int_equal(r->port, 43); /* whois default */
    assert_string_equal(r->query, "domain %s\r\n");
    assert_false(r->posix_patterns);
    assert_int_equal(r->patterns[AV_PAT_AVAILABLE].count, 1);
    assert_string_equal(r->patterns[AV_PAT_AVAILABLE].items[0], "^No match for");
    assert_string_equal(r->patterns[AV_PAT_REGISTERED].items[0], "^\\s*Domain Name:");
    assert_int_equal(r->patterns[AV_PAT_RESERVED].count, 1);
    assert_string_equal(r->patterns[AV_PAT_RESERVED].items[0], "reserved by the registry");
    assert_int_equal(r->patterns[AV_PAT_RATE_LIMITED].count, 2);
    assert_string_equal(r->patterns[AV_PAT_RATE_LIMITED].items[1], "too many requests");
    assert_int_equal(r->rate_queries, 5);
    assert_int_equal(r->rate_period_s, 2);
    assert_int_equal(r->rate_burst, 5); /* defaults to min(queries, 10) */
    assert_int_equal(r->concurrency, 4);
    assert_int_equal(r->queue, 50);
    assert_int_equal(r->timeout_ms, 3000);
    assert_int_equal(r->max_reply_bytes, 8192);
    assert_int_equal(r->backoff_s, 120);
    assert_int_equal(r->ttl_s[AV_STATUS_AVAILABLE], 30);
    assert_int_equal(r->ttl_s[AV_STATUS_REGISTERED], 3600);
    assert_int_equal(r->ttl_s[AV_STATUS_RESERVED], 7200);
    assert_int_equal(r->ttl_s[AV_STATUS_UNKNOWN], 10);
    assert_int_equal(r->raw_bytes, 256);

    r = av_config_registry(c, "nic-fr");
    assert_non_null(r);
    assert_int_equal(r->protocol, AV_PROTO_RDAP);
    assert_string_equal(r->base_url, "https://rdap.nic.fr/");
    assert_string_equal(r->query, "%s\r\n");
    assert_int_equal(r->concurrency, 16);
    assert_int_equal(r->queue, 1000);
    assert_int_equal(r->timeout_ms, 10000);
    assert_int_equal(r->rate_burst, 0); /* no rate limit, no burst */
    assert_int_equal(r->ttl_s[AV_STATUS_AVAILABLE], 60);
    assert_int_equal(r->ttl_s[AV_STATUS_REGISTERED], 86400);

    r = av_config_registry(c, "denic");
    assert_non_null(r);
    assert_int_equal(r->protocol, AV_PROTO_DAS);
    assert_int_equal(r->port, 4343);             /* das default */
    assert_string_equal(r->query, "%s\r\n"); /* das: the name, as DNS Belgium's; EURid's needs get 1.0 %l */

    assert_null(av_config_registry(c, "nope"));
}

static void
test_relative_ipc_endpoints_resolve_against_runtime_dir(void **state)
{
    fixture_t *f = *state;
    /* A relative runtime_dir is itself relative to the config file. */
    const av_config_t *c = load_ok(f,
        "runtime_dir: run\n"
        "state_dir: state\n"
        "endpoints:\n"
        "  intake_pull: ipc://pull.sock\n"           /* relative: moved */
        "  intake_router: ipc:///abs/router.sock\n"  /* absolute: kept */
        "  intake_results: ipc://@abstract\n"        /* abstract namespace: kept */
        "  dispatcher: tcp://127.0.0.1:5500\n"       /* tcp: kept */
        "querier:\n"
        "  control: ipc://q-%s.sock\n"
        "  pid_file: q.pid\n");
    char want[PATH_MAX + 64];

    snprintf(want, sizeof want, "%s/run", f->dir);
    assert_string_equal(c->runtime_dir, want);
    snprintf(want, sizeof want, "%s/state", f->dir);
    assert_string_equal(c->state_dir, want);
    snprintf(want, sizeof want, "ipc://%s/run/pull.sock", f->dir);
    assert_string_equal(c->endpoints.intake_pull, want);
    assert_string_equal(c->endpoints.intake_router, "ipc:///abs/router.sock");
    assert_string_equal(c->endpoints.intake_results, "ipc://@abstract");
    assert_string_equal(c->endpoints.dispatcher, "tcp://127.0.0.1:5500");
    snprintf(want, sizeof want, "ipc://%s/run/cache.sock", f->dir); /* a default */
    assert_string_equal(c->endpoints.cache_puts, want);
    snprintf(want, sizeof want, "ipc://%s/run/q-%%s.sock", f->dir);
    assert_string_equal(c->querier.process.control, want);
    snprintf(want, sizeof want, "%s/run/q.pid", f->dir);
    assert_string_equal(c->querier.process.pid_file, want);
    snprintf(want, sizeof want, "%s/state/journal", f->dir);
    assert_string_equal(c->intake.journal, want);
}

static void
test_daemon_process_inherits_top_level_and_overrides_key_by_key(void **state)
{
    fixture_t *f = *state;
    const av_config_t *c = load_ok(f,
        "process:\n"
        "  log: [/var/log/availd.log, syslog]\n"
        "  log_level: 3\n"
        "  drain_ms: 100\n"
        "  user: availd\n"
        "  cidr_allow: 10.0.0.0/8\n"
        "intake:\n"
        "  log_level: 4\n"
        "  cidr_allow: []\n"
        "dispatcher:\n"
        "  log: journald\n"
        "  user: dispatch\n");

    const av_process_cfg_t *in = av_config_process(c, "intake");
    assert_ptr_equal(in, &c->intake.process);
    assert_int_equal(in->log_level, 4);            /* its own */
    assert_int_equal(in->cidr_allow.count, 0);     /* its own, even empty */
    assert_int_equal(in->drain_ms, 100);           /* inherited */
    assert_string_equal(in->user, "availd");       /* inherited */
    assert_int_equal(in->n_log, 2);                /* inherited */
    assert_int_equal(in->log[0].kind, AV_LOG_FILE);
    assert_string_equal(in->log[0].path, "/var/log/availd.log");
    assert_int_equal(in->log[1].kind, AV_LOG_SYSLOG);

    const av_process_cfg_t *di = av_config_process(c, "dispatcher");
    assert_int_equal(di->n_log, 1);                /* its own */
    assert_int_equal(di->log[0].kind, AV_LOG_JOURNALD);
    assert_null(di->log[0].path);
    assert_string_equal(di->user, "dispatch");     /* its own */
    assert_int_equal(di->log_level, 3);            /* inherited */
    assert_int_equal(di->cidr_allow.count, 1);     /* inherited */

    /* No block at all: everything the top level set, defaults for the rest. */
    const av_process_cfg_t *ca = av_config_process(c, "cache");
    assert_int_equal(ca->log_level, 3);
    assert_int_equal(ca->drain_ms, 100);
    assert_int_equal(ca->cidr_allow.count, 1);
    assert_int_equal(ca->cidr_allow.items[0].prefix, 8);
    assert_false(ca->daemonize);
    assert_null(ca->group);

    assert_non_null(av_config_process(c, "querier"));
    assert_non_null(av_config_process(c, "errors"));
    assert_null(av_config_process(c, "frontend"));
}

static void
test_include_merges_files_relative_to_the_including_file(void **state)
{
    fixture_t *f = *state;
    char sub[PATH_MAX];
    assert_int_equal(mkdir(unit_path(sub, sizeof sub, f->dir, "conf.d"), 0700), 0);
    /* conf.d/registries.yaml includes "more.yaml": found next to it. */
    write_in_dir(f, "conf.d/registries.yaml",
        "include: more.yaml\n"
        "registries:\n"
        WHOIS_REGISTRY("verisign"));
    write_in_dir(f, "conf.d/more.yaml",
        "registries:\n"
        "  pir:\n"
        "    tlds: org\n"
        "    protocol: whois\n"
        "    host: whois.pir.org\n");
    write_in_dir(f, "dispatcher.yaml", "dispatcher:\n  max_attempts: 7\n");

    const av_config_t *c = load_ok(f,
        "include: [conf.d/registries.yaml, dispatcher.yaml]\n"
        "intake:\n"
        "  deadline_ms: 1234\n");
    assert_int_equal(c->intake.deadline_ms, 1234);
    assert_int_equal(c->dispatcher.max_attempts, 7);
    assert_int_equal(c->n_registries, 2);
    assert_non_null(av_config_registry(c, "verisign"));
    assert_string_equal(av_config_registry(c, "pir")->tlds.items[0], "org");
}

static void
test_include_error_names_the_included_file_and_its_line(void **state)
{
    fixture_t *f = *state;
    write_in_dir(f, "registries.yaml",
        "registries:\n"
        "  verisign:\n"
        "    tlds: com\n"
        "    protocol: gopher\n");
    load_refused(f,
        "intake:\n"
        "  deadline_ms: 1000\n"
        "include: registries.yaml\n");
    char included[PATH_MAX];
    unit_path(included, sizeof included, f->dir, "registries.yaml");
    assert_error_at(f->err, included, 4, 15, "'protocol' must be whois, das or rdap, not gopher");
}

static void
test_include_of_a_missing_file_points_at_the_include(void **state)
{
    fixture_t *f = *state;
    load_refused(f, "include: nothere.yaml\n");
    char missing[PATH_MAX], what[PATH_MAX + 64];
    snprintf(what, sizeof what, "cannot include %s: No such file or directory",
             unit_path(missing, sizeof missing, f->dir, "nothere.yaml"));
    assert_error_at(f->err, f->path, 1, 10, what);
}

static void
test_include_loop_is_refused_not_followed_forever(void **state)
{
    fixture_t *f = *state;
    /* availd.yaml includes itself; the depth bound stops it. */
    assert_refused_at(f, "include: availd.yaml\n", 1, 10, "includes nested deeper than 4");
}

/* ---- one test per class of error ---------------------------------------- */

static void
test_error_unknown_key(void **state)
{
    fixture_t *f = *state;
    assert_refused_at(f,
        "intake:\n"
        "  deadline_ms: 5000\n"
        "  dedline_ms: 3\n",
        3, 3, "unknown key 'dedline_ms' in intake");
    assert_refused_at(f,
        "# a comment first\n"
        "registres: {}\n",
        2, 1, "unknown key 'registres' in the top level");
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    hots: typo.example\n",
        6, 5, "unknown key 'hots' in registry");
}

static void
test_error_wrong_type(void **state)
{
    fixture_t *f = *state;
    assert_refused_at(f,
        "process:\n"
        "  drain_ms: [1, 2]\n",
        2, 13, "'drain_ms' must be an unsigned integer, not a list");
    assert_refused_at(f,
        "process:\n"
        "  log_level: loud\n",
        2, 14, "'log_level' must be an unsigned integer, not 'loud'");
    assert_refused_at(f,
        "process:\n"
        "  daemonize: maybe\n",
        2, 14, "'daemonize' must be true or false, not maybe");
    assert_refused_at(f,
        "intake: 5\n",
        1, 9, "'intake' must be a map, not a scalar");
    assert_refused_at(f,
        "endpoints: [ipc://a.sock]\n",
        1, 12, "'endpoints' must be a map, not a list");
}

static void
test_error_value_out_of_range(void **state)
{
    fixture_t *f = *state;
    assert_refused_at(f,
        "process:\n"
        "  log_level: 7\n",
        2, 14, "'log_level' must be between 0 and 4, not 7");
    assert_refused_at(f,
        "dispatcher:\n"
        "  heartbeat_misses: 1\n",
        2, 21, "'heartbeat_misses' must be between 2 and 100, not 1");
    /* Beyond uint64_t: strtoull's overflow is caught, not wrapped. */
    assert_refused_at(f,
        "process:\n"
        "  max_requests: 99999999999999999999999\n",
        2, 17, "'max_requests' must be between 0 and 18446744073709551615");
}

static void
test_error_missing_required_value(void **state)
{
    fixture_t *f = *state;
    /* The error points at the registry's body, the map missing the key. */
    assert_refused_at(f,
        "registries:\n"
        "  verisign:\n"
        "    tlds: com\n"
        "    host: whois.verisign-grs.com\n",
        3, 5, "missing required key 'protocol' in registry");
    assert_refused_at(f,
        "registries:\n"
        "  verisign:\n"
        "    protocol: whois\n"
        "    host: whois.verisign-grs.com\n",
        3, 5, "missing required key 'tlds' in registry");
    /* Keys only some protocols require. */
    assert_refused_at(f,
        "registries:\n"
        "  verisign:\n"
        "    tlds: com\n"
        "    protocol: whois\n",
        3, 5, "missing required key 'host' in registry 'verisign' (protocol whois)");
    assert_refused_at(f,
        "registries:\n"
        "  nic-fr:\n"
        "    tlds: fr\n"
        "    protocol: rdap\n"
        "    base_url: ftp://rdap.nic.fr/\n",
        5, 15, "base_url of 'nic-fr' must be http:// or https://");
    /* `tlds:` with nothing is an empty list: no TLD served. */
    assert_refused_at(f,
        "registries:\n"
        "  verisign:\n"
        "    tlds:\n"
        "    protocol: whois\n"
        "    host: h\n",
        3, 10, "registry 'verisign' serves no TLD");
}

static void
test_error_bad_endpoint(void **state)
{
    fixture_t *f = *state;
    assert_refused_at(f,
        "endpoints:\n"
        "  intake_pull: foo://x\n",
        2, 16, "bad endpoint 'foo://x' for 'intake_pull': want ipc://PATH or tcp://HOST:PORT");
    assert_refused_at(f,
        "endpoints:\n"
        "  dispatcher: tcp://host\n",
        2, 15, "bad endpoint 'tcp://host' for 'dispatcher': want tcp://HOST:PORT");
    assert_refused_at(f,
        "endpoints:\n"
        "  dispatcher: tcp://host:70000\n",
        2, 15, "bad endpoint 'tcp://host:70000' for 'dispatcher': port must be 1-65535");
    /* "" disables only the optional gateway, not a required endpoint. */
    assert_refused_at(f,
        "endpoints:\n"
        "  cache_puts: \"\"\n",
        2, 15, "bad endpoint '' for 'cache_puts'");
    assert_refused_at(f,
        "querier:\n"
        "  control: udp://127.0.0.1:9\n",
        2, 12, "bad endpoint 'udp://127.0.0.1:9' for 'control'");
}

static void
test_error_bad_cidr(void **state)
{
    fixture_t *f = *state;
    /* The error points at the bad entry, not at the list. */
    assert_refused_at(f,
        "process:\n"
        "  cidr_allow: [10.0.0.0/8, 10.0.0.0/33]\n",
        2, 28, "bad CIDR '10.0.0.0/33'");
    assert_refused_at(f,
        "process:\n"
        "  cidr_deny: banana\n",
        2, 14, "bad CIDR 'banana' (want ADDRESS/BITS");
    assert_refused_at(f,
        "intake:\n"
        "  cidr_allow:\n"
        "    - \"::1/128\"\n"
        "    - \"::/129\"\n",
        4, 7, "bad CIDR '::/129'");
}

static void
test_error_bad_log_target(void **state)
{
    fixture_t *f = *state;
    assert_refused_at(f,
        "process:\n"
        "  log: stdout\n",
        2, 8, "bad log target 'stdout' (stderr, syslog, journald or an absolute file path)");
    /* A relative path would depend on the daemon's working directory. */
    assert_refused_at(f,
        "errors:\n"
        "  log: [stderr, logs/errors.log]\n",
        2, 17, "bad log target 'logs/errors.log'");
    /* No target at all would make the daemon silent. */
    assert_refused_at(f,
        "process:\n"
        "  log: \"\"\n",
        2, 8, "'log' needs at least one target");
}

static void
test_error_bad_yaml_syntax(void **state)
{
    fixture_t *f = *state;
    /* libyaml reports where it gave up: the second ':' on line 2. */
    assert_refused_at(f,
        "intake:\n"
        "  deadline_ms: 5: 6\n",
        2, 17, "mapping values are not allowed in this context");
    /* A tab cannot indent YAML. */
    assert_refused_at(f,
        "intake:\n"
        "\tdeadline_ms: 5\n",
        2, 1, "found character that cannot start any token");
    /* A second document would otherwise be ignored without a word. */
    assert_refused_at(f,
        "intake:\n"
        "  deadline_ms: 5\n"
        "---\n"
        "intake:\n"
        "  deadline_ms: 6\n",
        4, 1, "a second YAML document");
}

static void
test_error_duplicate_tld(void **state)
{
    fixture_t *f = *state;
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "  other:\n"
        "    tlds: [org, .COM]\n"
        "    protocol: whois\n"
        "    host: whois.other.example\n",
        7, 17, "TLD 'com' of registry 'other' is already served by registry 'verisign'");
    assert_refused_at(f,
        "registries:\n"
        "  verisign:\n"
        "    tlds: [com, net, com]\n"
        "    protocol: whois\n"
        "    host: h\n",
        3, 22, "TLD 'com' listed twice in registry 'verisign'");
    assert_refused_at(f,
        "registries:\n"
        "  verisign:\n"
        "    tlds: [c_m]\n"
        "    protocol: whois\n"
        "    host: h\n",
        3, 12, "bad TLD 'c_m' in registry 'verisign'");
}

static void
test_error_bad_query_template(void **state)
{
    fixture_t *f = *state;
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    query: \"domain\\r\\n\"\n",
        6, 12, "query template of 'verisign' must hold exactly one %s or %l");
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    query: \"%s %s\\r\\n\"\n",
        6, 12, "query template of 'verisign' must hold exactly one %s or %l");
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    query: \"%d %s\\r\\n\"\n",
        6, 12, "query template of 'verisign' may hold only %s, %l and %%");
    /* A lone '%' at the end would make a formatter read past the string. */
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    query: \"%s%\"\n",
        6, 12, "may hold only %s, %l and %%");
    /* The contrast: %% is a literal percent and is allowed. */
    const av_config_t *c = load_ok(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    query: \"100%% %s\\r\\n\"\n");
    assert_string_equal(c->registries[0].query, "100%% %s\r\n");
}

static void
test_error_bad_pattern(void **state)
{
    fixture_t *f = *state;
    /* The error points at the bad entry of the list. */
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    patterns:\n"
        "      available: [\"^No match\", \"(unclosed\"]\n",
        7, 32, "bad available pattern of 'verisign': missing closing parenthesis");
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    pattern_syntax: posix\n"
        "    patterns:\n"
        "      registered: (unclosed\n",
        8, 19, "bad registered pattern of 'verisign': ");
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    pattern_syntax: posix\n"
        "    patterns:\n"
        "      registered: ((a{1,100}){1,100}){1,100}\n",
        8, 19, "bad registered pattern of 'verisign': more than 4096 positions");
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("verisign")
        "    pattern_syntax: perl\n",
        6, 21, "'pattern_syntax' must be pcre2 or posix, not perl");
}

static void
test_error_bad_registry_name_or_twice_defined(void **state)
{
    fixture_t *f = *state;
    assert_refused_at(f,
        "registries:\n"
        WHOIS_REGISTRY("VeriSign"),
        2, 3, "bad registry name 'VeriSign'");
    write_in_dir(f, "more.yaml", "registries:\n" WHOIS_REGISTRY("verisign"));
    /* Defined in an included file and again here: the second one is refused. */
    load_refused(f,
        "include: more.yaml\n"
        "registries:\n"
        "  verisign:\n"
        "    tlds: net\n"
        "    protocol: whois\n"
        "    host: h\n");
    assert_error_at(f->err, f->path, 3, 3, "registry 'verisign' is defined twice");
}

static void
test_error_control_template_needs_one_percent_s(void **state)
{
    fixture_t *f = *state;
    /* The error points at the value, as every other. */
    const char *inputs[] = {
        "endpoints:\n  control: ipc://control.sock\n",
        "endpoints:\n  control: ipc://control-%s-%s.sock\n",
        "endpoints:\n  control: ipc://control-%d.sock\n",
    };
    for (size_t i = 0; i < 3; i++) {
        load_refused(f, inputs[i]);
        assert_error_at(f->err, f->path, 2, 12, "'control' must hold exactly one %s");
    }
}

static void
test_rdap_registry_without_base_url_takes_it_from_the_bootstrap(void **state)
{
    fixture_t *f = *state;
    write_in_dir(f, "rdap-bootstrap.json",
                 "{\"version\": \"1.0\", \"services\": ["
                 "[[\"com\", \"net\"], [\"http://rdap.example/com/\", \"https://rdap.example/com/\"]],"
                 "[[\"uk\"], [\"https://rdap.example/uk/\"]]]}");
    const av_config_t *c = load_ok(f,
        "registries:\n"
        "  verisign:\n"
        "    tlds: [com, net]\n"
        "    protocol: rdap\n"
        "  nominet:\n"
        "    tlds: [co.uk]\n"
        "    protocol: rdap\n");
    /* https preferred; co.uk by its longest listed suffix, uk */
    assert_string_equal(av_config_registry(c, "verisign")->base_url, "https://rdap.example/com/");
    assert_string_equal(av_config_registry(c, "nominet")->base_url, "https://rdap.example/uk/");
    /* a TLD the bootstrap does not list: refused, at the registry */
    assert_refused_at(f,
        "registries:\n"
        "  other:\n"
        "    tlds: [zz]\n"
        "    protocol: rdap\n",
        2, 3, "registry 'other' (protocol rdap) has no base_url, and");
}

/* The files implicit registries are made from are input too: a TLD that is
 * not lower-case LDH in the RDAP bootstrap or the whois server list is a
 * clear error naming the file, never a route (fuzz_config found "p`ge"
 * taken as a TLD). */
static void
test_implicit_registries_refuse_a_tld_that_is_not_one(void **state)
{
    fixture_t *f = *state;
    const char *config = "implicit_registries: true\n"
                         "rdap_bootstrap: rdap-bootstrap.json\n"
                         "whois_servers: whois-servers.txt\n";
    write_in_dir(f, "whois-servers.txt", "# suffix server\nde whois.denic.example\nzz -\n");
    write_in_dir(f, "rdap-bootstrap.json",
                 "{\"services\": [[[\"COM\", \"net\"], [\"https://rdap.example/com/\"]]]}");
    const av_config_t *c = load_ok(f, config);
    bool com = false; /* COM read as com */
    for (uint32_t i = 0; i < c->n_registries; i++)
        for (uint32_t t = 0; t < c->registries[i].tlds.count; t++)
            com |= strcmp(c->registries[i].tlds.items[t], "com") == 0 && c->registries[i].protocol == AV_PROTO_RDAP;
    assert_true(com);

    static const char *const bad_bootstrap[] = {
        "{\"services\": [[[\"p`ge\"], [\"https://rdap.example/x/\"]]]}",
        "{\"services\": [[[\"a..b\"], [\"https://rdap.example/x/\"]]]}",
        "{\"services\": [[[7], [\"https://rdap.example/x/\"]]]}",
    };
    for (size_t i = 0; i < sizeof bad_bootstrap / sizeof *bad_bootstrap; i++) {
        write_in_dir(f, "rdap-bootstrap.json", bad_bootstrap[i]);
        load_refused(f, config);
        assert_non_null(strstr(f->err, "rdap-bootstrap.json: services[0]"));
    }
    write_in_dir(f, "rdap-bootstrap.json", "{\"services\": []}");
    static const char *const bad_whois[] = { "de whois.denic.example\nD\xc3\xa9 whois.x.example\n",
                                             "de whois.denic.example\n.com whois.x.example\n",
                                             "de whois.denic.example\nA_B -\n" };
    for (size_t i = 0; i < sizeof bad_whois / sizeof *bad_whois; i++) {
        write_in_dir(f, "whois-servers.txt", bad_whois[i]);
        load_refused(f, config);
        assert_non_null(strstr(f->err, "whois-servers.txt:2:1: \""));
        assert_non_null(strstr(f->err, "is not a suffix"));
    }
}

static void
test_error_missing_file(void **state)
{
    fixture_t *f = *state;
    char path[PATH_MAX], want[PATH_MAX + 64];
    unit_path(path, sizeof path, f->dir, "absent.yaml");
    assert_int_equal(av_config_load(path, &f->cfg, f->err, sizeof f->err), -1);
    assert_null(f->cfg);
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    assert_string_equal(f->err, want);
}

static void
test_error_is_truncated_to_the_buffer_not_overflowing_it(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(unit_write_file(f->path, "process:\n  log_level: 7\n"), 0);
    char small[16];
    memset(small, 'X', sizeof small);
    assert_int_equal(av_config_load(f->path, &f->cfg, small, 8), -1);
    assert_int_equal(strlen(small), 7);
    assert_memory_equal(small, f->path, 7);
    assert_int_equal(small[8], 'X'); /* nothing written past errlen */
}

/* ---- CIDRs -------------------------------------------------------------- */

static struct sockaddr_storage
ip(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1)
        in->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1)
        in6->sin6_family = AF_INET6;
    else
        fail_msg("bad test address %s", text);
    return ss;
}

static bool
cidr_matches(const char *cidr_text, const char *addr_text)
{
    av_cidr_t cidr;
    if (!av_cidr_parse(cidr_text, &cidr))
        fail_msg("bad test CIDR %s", cidr_text);
    struct sockaddr_storage ss = ip(addr_text);
    return av_cidr_match(&cidr, (const struct sockaddr *)&ss);
}

static void
test_cidr_parse_reads_address_family_and_prefix(void **state)
{
    (void)state;
    av_cidr_t c;
    assert_true(av_cidr_parse("192.168.0.0/16", &c));
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 16);
    assert_memory_equal(c.addr, ((uint8_t[]){ 192, 168, 0, 0 }), 4);

    assert_true(av_cidr_parse("10.1.2.3", &c)); /* no /BITS: one host */
    assert_int_equal(c.prefix, 32);

    assert_true(av_cidr_parse("2001:db8::/32", &c));
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 32);
    assert_memory_equal(c.addr, ((uint8_t[]){ 0x20, 0x01, 0x0d, 0xb8 }), 4);

    assert_true(av_cidr_parse("::1", &c));
    assert_int_equal(c.prefix, 128);
    assert_true(av_cidr_parse("0.0.0.0/0", &c));
    assert_int_equal(c.prefix, 0);
}

static void
test_cidr_parse_rejects_malformed_text(void **state)
{
    (void)state;
    const char *bad[] = {
        "10.0.0.0/33", "::/129", "banana", "", "/8", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x",
        "10.0.0.0/+8", "10.0.0/8", "256.0.0.0/8", "10.0.0.0/99999999999999999999",
        "1111:2222:3333:4444:5555:6666:7777:8888:9999/64", /* longer than any address */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        av_cidr_t c;
        if (av_cidr_parse(bad[i], &c))
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

static void
test_cidr_match_ipv4_and_ipv6(void **state)
{
    (void)state;
    assert_true(cidr_matches("10.0.0.0/8", "10.255.1.2"));
    assert_false(cidr_matches("10.0.0.0/8", "11.0.0.1"));
    /* A prefix that does not end on a byte boundary. */
    assert_true(cidr_matches("192.168.0.0/23", "192.168.1.255"));
    assert_false(cidr_matches("192.168.0.0/23", "192.168.2.0"));
    assert_true(cidr_matches("203.0.113.7/32", "203.0.113.7"));
    assert_false(cidr_matches("203.0.113.7/32", "203.0.113.8"));

    assert_true(cidr_matches("2001:db8::/32", "2001:db8:ffff::1"));
    assert_false(cidr_matches("2001:db8::/32", "2001:db9::1"));
    assert_true(cidr_matches("::1/128", "::1"));
    assert_false(cidr_matches("::1/128", "::2"));

    /* One family never matches the other's CIDR... */
    assert_false(cidr_matches("::/0", "10.0.0.1"));
    assert_false(cidr_matches("10.0.0.0/8", "2001:db8::1"));
}

static void
test_cidr_match_ipv4_mapped_ipv6_as_ipv4(void **state)
{
    (void)state;
    /* ...except an IPv4 client on a dual-stack socket, seen as ::ffff:a.b.c.d. */
    assert_true(cidr_matches("10.0.0.0/8", "::ffff:10.1.2.3"));
    assert_false(cidr_matches("10.0.0.0/8", "::ffff:11.1.2.3"));
    assert_true(cidr_matches("127.0.0.1", "::ffff:127.0.0.1"));
    /* The IPv4-compatible form (::a.b.c.d) is not a mapped address. */
    assert_false(cidr_matches("10.0.0.0/8", "::10.1.2.3"));
}

static void
test_cidr_prefix_zero_matches_every_address_of_its_family(void **state)
{
    (void)state;
    assert_true(cidr_matches("0.0.0.0/0", "1.2.3.4"));
    assert_true(cidr_matches("0.0.0.0/0", "255.255.255.255"));
    assert_true(cidr_matches("0.0.0.0/0", "::ffff:8.8.8.8"));
    assert_true(cidr_matches("::/0", "2001:db8::1"));
    assert_true(cidr_matches("::/0", "::"));
    /* A prefix of 0 ignores the address bits written before it. */
    assert_true(cidr_matches("10.0.0.0/0", "192.0.2.1"));
}

static void
test_cidr_allowed_deny_beats_allow_and_empty_allow_allows(void **state)
{
    (void)state;
    av_cidr_list_t allow = { .count = 0 }, deny = { .count = 0 };
    struct sockaddr_storage a = ip("10.1.2.3"), b = ip("192.0.2.1"), m = ip("::ffff:10.9.9.9");
    const struct sockaddr *sa = (const struct sockaddr *)&a, *sb = (const struct sockaddr *)&b,
                          *sm = (const struct sockaddr *)&m;

    /* Both empty: everyone. */
    assert_true(av_cidr_allowed(&allow, &deny, sa));

    /* Only a deny list: everyone but the denied. */
    assert_true(av_cidr_parse("10.0.0.0/8", &deny.items[deny.count++]));
    assert_false(av_cidr_allowed(&allow, &deny, sa));
    assert_false(av_cidr_allowed(&allow, &deny, sm));
    assert_true(av_cidr_allowed(&allow, &deny, sb));

    /* Allow also matches 10.1.2.3, but deny wins. */
    assert_true(av_cidr_parse("0.0.0.0/0", &allow.items[allow.count++]));
    assert_false(av_cidr_allowed(&allow, &deny, sa));
    assert_true(av_cidr_allowed(&allow, &deny, sb));

    /* A non-empty allow list admits only what it matches. */
    deny.count = 0;
    allow.count = 0;
    assert_true(av_cidr_parse("192.0.2.0/24", &allow.items[allow.count++]));
    assert_true(av_cidr_allowed(&allow, &deny, sb));
    assert_false(av_cidr_allowed(&allow, &deny, sa));
}

static void
test_cidr_never_matches_a_unix_socket_peer(void **state)
{
    (void)state;
    av_cidr_t any;
    assert_true(av_cidr_parse("0.0.0.0/0", &any));
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    assert_false(av_cidr_match(&any, (const struct sockaddr *)&un));
}

/* ---- endpoints ---------------------------------------------------------- */

static void
test_endpoint_valid_accepts_ipc_and_tcp(void **state)
{
    (void)state;
    const char *good[] = {
        "ipc:///run/availd/intake.sock", "ipc://relative.sock", "ipc://@abstract",
        "tcp://127.0.0.1:4300", "tcp://whois.example.net:43", "tcp://[::1]:5500", "tcp://*:1",
        "tcp://host:65535",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char why[128] = "";
        if (!av_endpoint_valid(good[i], why, sizeof why))
            fail_msg("refused \"%s\": %s", good[i], why);
    }
}

static void
test_endpoint_valid_refuses_with_a_reason(void **state)
{
    (void)state;
    char long_ipc[140];
    snprintf(long_ipc, sizeof long_ipc, "ipc:///%0108d", 0); /* 109-byte path */
    const struct { const char *ep, *why; } bad[] = {
        { "foo://x", "want ipc://PATH or tcp://HOST:PORT" },
        { "", "want ipc://PATH or tcp://HOST:PORT" },
        { "ipc://", "empty ipc path" },
        { long_ipc, "ipc path longer than 107 bytes" },
        { "tcp://host", "want tcp://HOST:PORT" },
        { "tcp://:80", "want tcp://HOST:PORT" },
        { "tcp://host:", "port must be 1-65535" },
        { "tcp://host:0", "port must be 1-65535" },
        { "tcp://host:70000", "port must be 1-65535" },
        { "tcp://host:http", "port must be 1-65535" },
        { "tcp://host:-1", "port must be 1-65535" },
        { "tcp://[::1:80", "unclosed '[' in IPv6 address" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[128] = "";
        if (av_endpoint_valid(bad[i].ep, why, sizeof why))
            fail_msg("accepted \"%s\"", bad[i].ep);
        if (strcmp(why, bad[i].why) != 0)
            fail_msg("\"%s\": want \"%s\", got \"%s\"", bad[i].ep, bad[i].why, why);
    }
}

static void
test_control_endpoint_fills_the_template_with_the_instance(void **state)
{
    fixture_t *f = *state;
    const av_config_t *c = load_ok(f,
        "runtime_dir: /run/av\n"
        "querier:\n"
        "  control: ipc://q-%s.ctl\n"
        "cache:\n"
        "  control: tcp://127.0.0.1:7001\n");
    char out[256];

    /* The endpoints.control template, with the instance name as is. */
    assert_int_equal(av_control_endpoint(c, "errors", out, sizeof out), 0);
    assert_string_equal(out, "ipc:///run/av/control-errors.sock");
    assert_int_equal(av_control_endpoint(c, "intake-2", out, sizeof out), 0);
    assert_string_equal(out, "ipc:///run/av/control-intake-2.sock");
    /* "querier-verisign" is a querier: the querier block's template. */
    assert_int_equal(av_control_endpoint(c, "querier-verisign", out, sizeof out), 0);
    assert_string_equal(out, "ipc:///run/av/q-querier-verisign.ctl");
    /* A template without %s is used as is. */
    assert_int_equal(av_control_endpoint(c, "cache", out, sizeof out), 0);
    assert_string_equal(out, "tcp://127.0.0.1:7001");
    /* An unknown daemon still gets the global template. */
    assert_int_equal(av_control_endpoint(c, "frontend", out, sizeof out), 0);
    assert_string_equal(out, "ipc:///run/av/control-frontend.sock");
    /* Too small a buffer is an error, not a truncated endpoint. */
    char tiny[16];
    assert_int_equal(av_control_endpoint(c, "errors", tiny, sizeof tiny), -1);
}

/* av_config_load_partial: what is wrong is skipped and said; the rest,
 * the endpoints above all, is read. */
static void
test_partial_load_skips_wrong_values_and_keeps_the_endpoints(void **state)
{
    fixture_t *f = *state;
    write_in_dir(f, "availd.yaml",
                 "runtime_dir: /tmp/partial-run\n"
                 "bogus: 1\n"
                 "process:\n  log_level: 99\n"
                 "endpoints:\n  dispatcher: ipc://d.sock\n");
    av_config_t *cfg = NULL;
    char err[AV_CONFIG_ERR_MAX];
    assert_int_equal(av_config_load(f->path, &cfg, err, sizeof err), -1);
    assert_null(cfg);
    assert_int_equal(av_config_load_partial(f->path, &cfg, err, sizeof err), 0);
    assert_non_null(cfg);
    assert_string_equal(cfg->runtime_dir, "/tmp/partial-run");
    assert_string_equal(cfg->endpoints.dispatcher, "ipc:///tmp/partial-run/d.sock");
    assert_non_null(cfg->skipped);
    assert_non_null(strstr(cfg->skipped, "bogus"));
    av_config_free(&cfg);
    /* not YAML at all: nothing to read */
    write_in_dir(f, "availd.yaml", "runtime_dir: [\n");
    assert_int_equal(av_config_load_partial(f->path, &cfg, err, sizeof err), -1);
    assert_null(cfg);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_empty_file_gives_every_default),
        T(test_partial_load_skips_wrong_values_and_keeps_the_endpoints),
        T(test_shipped_config_loads),
        T(test_full_file_sets_every_section),
        T(test_relative_ipc_endpoints_resolve_against_runtime_dir),
        T(test_daemon_process_inherits_top_level_and_overrides_key_by_key),
        T(test_include_merges_files_relative_to_the_including_file),
        T(test_include_error_names_the_included_file_and_its_line),
        T(test_include_of_a_missing_file_points_at_the_include),
        T(test_include_loop_is_refused_not_followed_forever),
        T(test_error_unknown_key),
        T(test_error_wrong_type),
        T(test_error_value_out_of_range),
        T(test_error_missing_required_value),
        T(test_error_bad_endpoint),
        T(test_error_bad_cidr),
        T(test_error_bad_log_target),
        T(test_error_bad_yaml_syntax),
        T(test_error_duplicate_tld),
        T(test_error_bad_query_template),
        T(test_error_bad_pattern),
        T(test_error_bad_registry_name_or_twice_defined),
        T(test_error_control_template_needs_one_percent_s),
        T(test_error_missing_file),
        T(test_rdap_registry_without_base_url_takes_it_from_the_bootstrap),
        T(test_implicit_registries_refuse_a_tld_that_is_not_one),
        T(test_error_is_truncated_to_the_buffer_not_overflowing_it),
        cmocka_unit_test(test_cidr_parse_reads_address_family_and_prefix),
        cmocka_unit_test(test_cidr_parse_rejects_malformed_text),
        cmocka_unit_test(test_cidr_match_ipv4_and_ipv6),
        cmocka_unit_test(test_cidr_match_ipv4_mapped_ipv6_as_ipv4),
        cmocka_unit_test(test_cidr_prefix_zero_matches_every_address_of_its_family),
        cmocka_unit_test(test_cidr_allowed_deny_beats_allow_and_empty_allow_allows),
        cmocka_unit_test(test_cidr_never_matches_a_unix_socket_peer),
        cmocka_unit_test(test_endpoint_valid_accepts_ipc_and_tcp),
        cmocka_unit_test(test_endpoint_valid_refuses_with_a_reason),
        T(test_control_endpoint_fills_the_template_with_the_instance),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
