/* availctl registries [--json]: per registry, what ops ask first: how many
 * of its queriers are up, its rate limit, what is in flight and waiting,
 * whether it is backing off, recent latency and error rate (the timing
 * database, last five minutes) and the error events held about it.
 * availctl registries TLD...: where a TLD goes, how, from which source and
 * within which limits; --coverage: how the root zone is routed. */
#include "availctl.h"

#include "av_bootstrap.h"
#include "av_names.h"

#include <errno.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const av_registry_cfg_t *cfg;
    const av_group_cfg_t *group;
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

/* The load of each registry a querier serves (a querier of a group serves
 * many; one of an older version answers only `status`). */
static void
querier_status(void *arg, const char *group, const char *instance)
{
    walk_t *w = arg;
    char ident[AV_REGISTRY_MAX + 32];
    ctl_reply_t reply;
    snprintf(ident, sizeof ident, "querier-%s", instance);
    if (ctl_call_simple(w->ctl, ident, "registries", &reply) == 0) {
        const msgpack_object *list = av_obj_get(reply.body, "registries");
        for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++) {
            av_str_t name;
            const msgpack_object *e = &list->via.array.ptr[i];
            registry_row_t *row = av_obj_get_str(e, "registry", &name) ? row_of(w, name.ptr, name.len) : NULL;
            if (!row)
                continue;
            row->up++;
            row->inflight += ctl_uint(e, "inflight");
            row->waiting += ctl_uint(e, "waiting");
            uint64_t b = ctl_uint(e, "backoff_ms");
            if (b > row->backoff_ms)
                row->backoff_ms = b;
        }
    } else if (strncmp(reply.err, "unknown command", 15) == 0) {
        ctl_reply_release(&reply);
        registry_row_t *row = row_of(w, group, strlen(group));
        if (row && ctl_call_simple(w->ctl, ident, "status", &reply) == 0) {
            const msgpack_object *g = av_obj_get(reply.body, "gauges");
            row->up++;
            row->inflight += ctl_uint(g, "inflight");
            row->waiting += ctl_uint(g, "waiting");
            uint64_t b = ctl_uint(g, "backoff_ms");
            if (b > row->backoff_ms)
                row->backoff_ms = b;
        }
    }
    ctl_reply_release(&reply);
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
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "registry", c->name,
                              "protocol", av_registry_proto_name(c->protocol), "origin",
                              av_registry_origin_name(c->origin), "group", r->group->name, "queriers_up",
                              (json_int_t)r->up, "queriers", (json_int_t)r->group->instances, "concurrency",
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
    printf("%-16s %4u/%-3u %-10s %8llu %8llu %-8s %8llu %9s %9s %7s %7llu\n", c->name, r->up, r->group->instances, rate,
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

/* The registry that lists suffix, or NULL. */
static const av_registry_cfg_t *
registry_of_suffix(const av_config_t *cfg, const char *suffix)
{
    for (uint32_t i = 0; i < cfg->n_registries; i++)
        for (uint32_t k = 0; k < cfg->registries[i].tlds.count; k++)
            if (strcmp(cfg->registries[i].tlds.items[k], suffix) == 0)
                return &cfg->registries[i];
    return NULL;
}

/* availctl registries TLD...: where a TLD (or any public suffix, or a
 * domain name: its registry) goes, how, and within which limits. */
static int
show_routes(ctl_t *ctl, const av_config_t *cfg, int argc, char **argv)
{
    av_names_t *names = av_names_new(cfg);
    int unsupported = 0;
    for (int i = 0; i < argc; i++) {
        char suffix[AV_DOMAIN_MAX + 1], name[AV_DOMAIN_MAX + 1], probe[AV_DOMAIN_MAX + 16];
        const char *why = NULL;
        snprintf(suffix, sizeof suffix, "%s", argv[i] + (argv[i][0] == '.'));
        for (char *c = suffix; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        const av_registry_cfg_t *r = registry_of_suffix(cfg, suffix);
        if (!r && names) {
            /* not a suffix of the table: a name, routed as the dispatcher does */
            snprintf(probe, sizeof probe, "%s", argv[i]);
            if (av_names_route(names, probe, strlen(probe), name, &r, &why) != AV_ROUTE_OK)
                r = NULL;
            if (!r && av_name_normalize(suffix, strlen(suffix), name, &why) < 0 && !strchr(suffix, '.'))
                why = NULL; /* a TLD alone is not a name: unsupported, said below */
        }
        if (!r) {
            unsupported++;
            if (ctl->json)
                ctl_print_json(json_pack("{s:s, s:s, s:s}", "query", argv[i], "route", "unsupported", "reason",
                                         why ? why : AV_REASON_UNSUPPORTED));
            else
                printf("%-20s unsupported: %s\n", argv[i],
                       why && strcmp(why, AV_REASON_UNSUPPORTED) != 0 ? why
                                                                     : "no registry, RDAP service or whois server");
            continue;
        }
        const av_group_cfg_t *g = &cfg->groups[r->group];
        const char *where = r->protocol == AV_PROTO_RDAP ? r->base_url : r->host;
        if (ctl->json) {
            json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:s, s:b}", "query", argv[i],
                                  "registry", r->name, "protocol", av_registry_proto_name(r->protocol), "origin",
                                  av_registry_origin_name(r->origin), "server", where ? where : "", "group",
                                  g->name, "concurrency", (json_int_t)r->concurrency, "timeout_ms",
                                  (json_int_t)r->timeout_ms, "backoff_s", (json_int_t)r->backoff_s, "reading",
                                  r->reading == AV_READING_GENERIC ? "generic" : "patterns", "dns_precheck",
                                  r->dns_precheck);
            json_object_set_new(j, "rate_limit_per_s",
                                r->rate_queries ? json_real((double)r->rate_queries / r->rate_period_s)
                                                : json_null());
            ctl_print_json(j);
            continue;
        }
        char rate[32] = "none";
        if (r->rate_queries)
            snprintf(rate, sizeof rate, "%u/%us burst %u", r->rate_queries, r->rate_period_s, r->rate_burst);
        printf("%-20s %s (%s %s), %s, querier %s; concurrency %u, rate %s, timeout %u ms, backoff %u s%s%s\n",
               argv[i], r->name, av_registry_proto_name(r->protocol), where ? where : "?",
               av_registry_origin_name(r->origin), g->name, r->concurrency, rate, r->timeout_ms, r->backoff_s,
               r->reading == AV_READING_GENERIC ? ", generic reading" : "", r->dns_precheck ? ", DNS pre-check" : "");
    }
    av_names_destroy(&names);
    return unsupported ? EXIT_NEGATIVE : EXIT_OK;
}

/* availctl registries --coverage: how the TLDs the configuration knows of
 * (those its registries serve, and those with no service at all) are
 * routed. */
static int
show_coverage(ctl_t *ctl, const av_config_t *cfg)
{
    uint64_t tlds[3] = { 0 }, suffixes[3] = { 0 }, registries[3] = { 0 };
    for (uint32_t i = 0; i < cfg->n_registries; i++) {
        const av_registry_cfg_t *r = &cfg->registries[i];
        registries[r->origin]++;
        for (uint32_t k = 0; k < r->tlds.count; k++) {
            if (strchr(r->tlds.items[k], '.'))
                suffixes[r->origin]++;
            else
                tlds[r->origin]++;
        }
    }
    uint64_t routed = tlds[0] + tlds[1] + tlds[2];
    if (ctl->json) {
        ctl_print_json(json_pack("{s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I}, s:I}", "tlds",
                                 "explicit", (json_int_t)tlds[0], "bootstrap", (json_int_t)tlds[1], "iana-whois",
                                 (json_int_t)tlds[2], "unsupported", (json_int_t)cfg->unrouted.count, "suffixes",
                                 "explicit", (json_int_t)suffixes[0], "bootstrap", (json_int_t)suffixes[1],
                                 "iana-whois", (json_int_t)suffixes[2], "registries", "explicit",
                                 (json_int_t)registries[0], "bootstrap", (json_int_t)registries[1], "iana-whois",
                                 (json_int_t)registries[2], "querier_groups", (json_int_t)cfg->n_groups));
        return EXIT_OK;
    }
    printf("TLDs: %llu routed of %llu: %llu explicit, %llu RDAP (bootstrap), %llu whois (iana-whois); %u unsupported\n",
           (unsigned long long)routed, (unsigned long long)(routed + cfg->unrouted.count),
           (unsigned long long)tlds[0], (unsigned long long)tlds[1], (unsigned long long)tlds[2],
           cfg->unrouted.count);
    printf("longer public suffixes: %llu explicit, %llu bootstrap, %llu iana-whois\n", (unsigned long long)suffixes[0],
           (unsigned long long)suffixes[1], (unsigned long long)suffixes[2]);
    printf("registries: %llu explicit, %llu implicit RDAP, %llu implicit whois; %u querier groups\n",
           (unsigned long long)registries[0], (unsigned long long)registries[1], (unsigned long long)registries[2],
           cfg->n_groups);
    if (cfg->unrouted.count) {
        printf("unsupported (no public service known):");
        for (uint32_t i = 0; i < cfg->unrouted.count; i++)
            printf(" %s", cfg->unrouted.items[i]);
        printf("\n");
    }
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
    bool coverage = false;
    int n_queries = 0;
    char **queries = calloc((size_t)argc, sizeof *queries);
    if (!queries)
        return EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            ctl->json = true;
        else if (strcmp(argv[i], "--coverage") == 0)
            coverage = true;
        else if (argv[i][0] != '-')
            queries[n_queries++] = argv[i];
        else {
            free(queries);
            return ctl_command_usage(argv[0]);
        }
    }
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg || coverage || n_queries) {
        int rc = !cfg ? EXIT_USAGE : coverage ? show_coverage(ctl, cfg) : show_routes(ctl, cfg, n_queries, queries);
        free(queries);
        return rc;
    }
    free(queries);
    walk_t w = { ctl, calloc(cfg->n_registries ? cfg->n_registries : 1, sizeof(registry_row_t)), cfg->n_registries };
    if (!w.rows)
        return EXIT_USAGE;
    for (uint32_t i = 0; i < cfg->n_registries; i++) {
        w.rows[i].cfg = &cfg->registries[i];
        w.rows[i].group = &cfg->groups[cfg->registries[i].group];
    }
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
