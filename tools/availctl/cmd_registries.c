/* availctl registries [--json]: per registry, what ops ask first: how many
 * of its queriers are up, its rate limit, what is in flight and waiting,
 * whether it is backing off, recent latency and error rate (the timing
 * database, last five minutes) and the error events held about it. */
#include "availctl.h"

#include "av_bootstrap.h"

#include <errno.h>
#include <unistd.h>

#include <stdio.h>
#include <string.h>

typedef struct {
    const av_registry_cfg_t *cfg;
    uint32_t up;
    uint64_t inflight, waiting, backoff_ms;
    bool timing;
    uint64_t count, errors, rate_limited, p50_us, p99_us;
    uint64_t events;
} registry_row_t;

typedef struct {
    ctl_t *ctl;
    registry_row_t *rows;
    uint32_t n;
} walk_t;

static registry_row_t *
row_of(walk_t *w, const char *registry, size_t len)
{
    for (uint32_t i = 0; i < w->n; i++)
        if (strlen(w->rows[i].cfg->name) == len && memcmp(w->rows[i].cfg->name, registry, len) == 0)
            return &w->rows[i];
    return NULL;
}

static void
querier_status(void *arg, const char *registry, const char *instance)
{
    walk_t *w = arg;
    char ident[AV_REGISTRY_MAX + 32];
    ctl_reply_t reply;
    registry_row_t *row = row_of(w, registry, strlen(registry));
    snprintf(ident, sizeof ident, "querier-%s", instance);
    if (row && ctl_call_simple(w->ctl, ident, "status", &reply) == 0) {
        const msgpack_object *g = av_obj_get(reply.body, "gauges");
        row->up++;
        row->inflight += ctl_uint(g, "inflight");
        row->waiting += ctl_uint(g, "waiting");
        uint64_t b = ctl_uint(g, "backoff_ms");
        if (b > row->backoff_ms)
            row->backoff_ms = b;
        ctl_reply_release(&reply);
    }
}

static void
read_timing(walk_t *w)
{
    ctl_reply_t reply;
    if (ctl_call_simple(w->ctl, "cache", "stats", &reply) == 0) {
        const msgpack_object *t = av_obj_get(reply.body, "timing");
        for (uint32_t i = 0; t && t->type == MSGPACK_OBJECT_ARRAY && i < t->via.array.size; i++) {
            av_str_t name;
            const msgpack_object *e = &t->via.array.ptr[i];
            const msgpack_object *recent = av_obj_get(e, "recent");
            registry_row_t *row = av_obj_get_str(e, "registry", &name) ? row_of(w, name.ptr, name.len) : NULL;
            if (!row || !recent)
                continue;
            row->timing = true;
            row->count = ctl_uint(recent, "count");
            row->errors = ctl_uint(recent, "errors");
            row->rate_limited = ctl_uint(recent, "rate_limited");
            row->p50_us = ctl_uint(recent, "p50_us");
            row->p99_us = ctl_uint(recent, "p99_us");
        }
    } else {
        fprintf(stderr, "availctl: availd-cache: %s (no latency figures)\n", reply.err);
    }
    ctl_reply_release(&reply);
}

static void
read_events(walk_t *w)
{
    ctl_reply_t reply;
    if (ctl_call_simple(w->ctl, "errors", "counts", &reply) == 0) {
        const msgpack_object *c = av_obj_get(reply.body, "counts");
        for (uint32_t i = 0; c && c->type == MSGPACK_OBJECT_ARRAY && i < c->via.array.size; i++) {
            av_str_t name;
            const msgpack_object *e = &c->via.array.ptr[i];
            registry_row_t *row = av_obj_get_str(e, "registry", &name) ? row_of(w, name.ptr, name.len) : NULL;
            if (row)
                row->events += ctl_uint(e, "count");
        }
    } else {
        fprintf(stderr, "availctl: availd-errors: %s (no event counts)\n", reply.err);
    }
    ctl_reply_release(&reply);
}

static void
print_row(ctl_t *ctl, const registry_row_t *r)
{
    const av_registry_cfg_t *c = r->cfg;
    double error_rate = r->count ? (double)r->errors / (double)r->count : 0;
    if (ctl->json) {
        json_t *j = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "registry", c->name, "protocol",
                              c->protocol == AV_PROTO_WHOIS ? "whois" : c->protocol == AV_PROTO_DAS ? "das" : "rdap",
                              "queriers_up", (json_int_t)r->up, "queriers", (json_int_t)c->queriers, "concurrency",
                              (json_int_t)c->concurrency, "inflight", (json_int_t)r->inflight, "waiting",
                              (json_int_t)r->waiting, "backoff_ms", (json_int_t)r->backoff_ms, "error_events",
                              (json_int_t)r->events);
        json_object_set_new(j, "rate_limit_per_s",
                            c->rate_queries ? json_real((double)c->rate_queries / c->rate_period_s) : json_null());
        if (r->timing)
            json_object_set_new(j, "recent", json_pack("{s:i, s:i, s:i, s:f, s:f, s:f}", "answers",
                                                       (json_int_t)r->count, "unknown", (json_int_t)r->errors,
                                                       "rate_limited", (json_int_t)r->rate_limited, "error_rate",
                                                       error_rate, "p50_ms", r->p50_us / 1000.0, "p99_ms",
                                                       r->p99_us / 1000.0));
        ctl_print_json(j);
        return;
    }
    char rate[32], backoff[32], p50[16], p99[16], err[16];
    if (c->rate_queries)
        snprintf(rate, sizeof rate, "%u/%us", c->rate_queries, c->rate_period_s);
    else
        snprintf(rate, sizeof rate, "-");
    snprintf(backoff, sizeof backoff, r->backoff_ms ? "%llus" : "-", (unsigned long long)(r->backoff_ms + 999) / 1000);
    snprintf(p50, sizeof p50, r->timing && r->count ? "%.1fms" : "-", r->p50_us / 1000.0);
    snprintf(p99, sizeof p99, r->timing && r->count ? "%.1fms" : "-", r->p99_us / 1000.0);
    snprintf(err, sizeof err, r->timing && r->count ? "%.1f%%" : "-", 100 * error_rate);
    printf("%-16s %4u/%-3u %-10s %8llu %8llu %-8s %8llu %9s %9s %7s %7llu\n", c->name, r->up, c->queriers, rate,
           (unsigned long long)r->inflight, (unsigned long long)r->waiting, backoff, (unsigned long long)r->count,
           p50, p99, err, (unsigned long long)r->events);
}

/* availctl registries update-bootstrap FILE: a newer IANA dns.json in place
 * of the configured one (rdap_bootstrap), checked first, then swapped in
 * with a rename so a daemon reading it never sees half a file. It takes
 * effect at the next reload. */
static int
update_bootstrap(ctl_t *ctl, const char *file)
{
    char err[512], tmp[4200];
    size_t services = 0;
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg)
        return EXIT_USAGE;
    if (av_bootstrap_check(file, &services, err, sizeof err) < 0) {
        fprintf(stderr, "availctl: %s\n", err);
        return EXIT_NEGATIVE;
    }
    snprintf(tmp, sizeof tmp, "%s.new", cfg->rdap_bootstrap);
    FILE *in = fopen(file, "rb"), *out = fopen(tmp, "wb");
    char buf[65536];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    if (rc < 0 || rename(tmp, cfg->rdap_bootstrap) < 0) {
        fprintf(stderr, "availctl: cannot write %s: %s\n", cfg->rdap_bootstrap, strerror(errno));
        unlink(tmp);
        return EXIT_USAGE;
    }
    printf("%s: %zu services; run `availctl reload` to use it\n", cfg->rdap_bootstrap, services);
    return EXIT_OK;
}

int
cmd_registries(ctl_t *ctl, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "update-bootstrap") == 0) {
        if (argc != 3)
            return ctl_command_usage(argv[0]);
        return update_bootstrap(ctl, argv[2]);
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            ctl->json = true;
        else
            return ctl_command_usage(argv[0]);
    }
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg)
        return EXIT_USAGE;
    walk_t w = { ctl, calloc(cfg->n_registries ? cfg->n_registries : 1, sizeof(registry_row_t)), cfg->n_registries };
    if (!w.rows)
        return EXIT_USAGE;
    for (uint32_t i = 0; i < cfg->n_registries; i++)
        w.rows[i].cfg = &cfg->registries[i];
    ctl_each_querier(cfg, querier_status, &w);
    read_timing(&w);
    read_events(&w);
    int down = 0;
    if (!ctl->json)
        printf("%-16s %8s %-10s %8s %8s %-8s %8s %9s %9s %7s %7s\n", "REGISTRY", "QUERIERS", "RATE", "INFLIGHT",
               "WAITING", "BACKOFF", "ANSWERS", "P50", "P99", "UNKNOWN", "EVENTS");
    for (uint32_t i = 0; i < w.n; i++) {
        print_row(ctl, &w.rows[i]);
        down += w.rows[i].up == 0;
    }
    if (!ctl->json)
        printf("(answers, latency and unknown share: the last five minutes)\n");
    free(w.rows);
    return down ? EXIT_NEGATIVE : EXIT_OK;
}
