/* availctl metrics [--serve HOST:PORT]: availd in the Prometheus text
 * format (version 0.0.4): every daemon's up, uptime, counters and gauges,
 * and per registry the answers, unknown and rate-limited counts and a
 * latency histogram from the timing database, and the error events held.
 * Printed once, or served over HTTP for a scraper (one request at a time,
 * each bounded by a short timeout; bind it to loopback or a trusted net). */
#include "availctl.h"

#include "av_cache.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SCRAPE_TIMEOUT_MS 2000
#define SAMPLES_MAX 4096

typedef struct {
    char name[96];
    char labels[160];
    double value;
    bool counter;
} sample_t;

typedef struct {
    ctl_t *ctl;
    sample_t *samples;
    uint32_t n;
    FILE *out;
} metrics_t;

static void
add(metrics_t *m, const char *name, bool counter, double value, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
add(metrics_t *m, const char *name, bool counter, double value, const char *fmt, ...)
{
    if (m->n == SAMPLES_MAX)
        return;
    sample_t *s = &m->samples[m->n++];
    snprintf(s->name, sizeof s->name, "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->labels, sizeof s->labels, fmt, ap);
    va_end(ap);
    s->value = value;
    s->counter = counter;
}

/* Prometheus names: [a-zA-Z_:][a-zA-Z0-9_:]* */
static void
metric_name(char *out, size_t size, const char *prefix, const char *raw, size_t len, const char *suffix)
{
    size_t o = (size_t)snprintf(out, size, "%s", prefix);
    for (size_t i = 0; i < len && o + 1 < size; i++) {
        char c = raw[i];
        out[o++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ? c : '_';
    }
    out[o < size ? o : size - 1] = '\0';
    strncat(out, suffix, size - strlen(out) - 1);
}

static void
daemon_samples(void *arg, const char *ident)
{
    metrics_t *m = arg;
    ctl_reply_t reply;
    char name[96];
    if (ctl_call_simple(m->ctl, ident, "status", &reply) < 0) {
        add(m, "availd_up", false, 0, "daemon=\"%s\"", ident);
        return;
    }
    const msgpack_object *body = reply.body;
    add(m, "availd_up", false, 1, "daemon=\"%s\"", ident);
    add(m, "availd_uptime_seconds", false, (double)ctl_uint(body, "uptime_s"), "daemon=\"%s\"", ident);
    const char *groups[] = { "counters", "gauges" };
    for (int g = 0; g < 2; g++) {
        const msgpack_object *map = av_obj_get(body, groups[g]);
        for (uint32_t i = 0; map && map->type == MSGPACK_OBJECT_MAP && i < map->via.map.size; i++) {
            const msgpack_object_kv *kv = &map->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                continue;
            metric_name(name, sizeof name, "availd_", kv->key.via.str.ptr, kv->key.via.str.size,
                        g == 0 ? "_total" : "");
            add(m, name, g == 0, (double)kv->val.via.u64, "daemon=\"%s\"", ident);
        }
    }
    ctl_reply_release(&reply);
}

static void
registry_samples(metrics_t *m)
{
    ctl_reply_t reply;
    msgpack_sbuffer req;
    msgpack_packer pk;
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    av_pack_ctl_begin(&pk, "stats", 1);
    av_pack_kv_bool(&pk, "buckets", true);
    int rc = ctl_call(m->ctl, "cache", &req, &reply);
    msgpack_sbuffer_destroy(&req);
    if (rc == 0) {
        const msgpack_object *timing = av_obj_get(reply.body, "timing");
        add(m, "availd_cache_entries", false, (double)ctl_uint(reply.body, "entries"), "%s", "");
        for (uint32_t i = 0; timing && timing->type == MSGPACK_OBJECT_ARRAY && i < timing->via.array.size; i++) {
            const msgpack_object *t = &timing->via.array.ptr[i];
            const msgpack_object *total = av_obj_get(t, "total");
            const msgpack_object *buckets = av_obj_get(t, "buckets");
            char registry[AV_REGISTRY_MAX + 1];
            ctl_str(t, "registry", registry, sizeof registry);
            add(m, "availd_registry_answers_total", true, (double)ctl_uint(total, "count"), "registry=\"%s\"",
                registry);
            add(m, "availd_registry_unknown_total", true, (double)ctl_uint(total, "errors"), "registry=\"%s\"",
                registry);
            add(m, "availd_registry_rate_limited_total", true, (double)ctl_uint(total, "rate_limited"),
                "registry=\"%s\"", registry);
            /* Cumulative buckets; the sum is estimated from each bucket's
             * upper bound (the database keeps counts, not the sum). */
            uint64_t cumulative = 0;
            double sum = 0;
            for (uint32_t b = 0; buckets && buckets->type == MSGPACK_OBJECT_ARRAY && b < buckets->via.array.size;
                 b++) {
                const msgpack_object *pair = &buckets->via.array.ptr[b];
                if (pair->type != MSGPACK_OBJECT_ARRAY || pair->via.array.size != 2)
                    continue;
                uint64_t upper_us = pair->via.array.ptr[0].via.u64, count = pair->via.array.ptr[1].via.u64;
                cumulative += count;
                sum += (double)count * (double)upper_us / 1e6;
                add(m, "availd_registry_latency_seconds_bucket", false, (double)cumulative,
                    "registry=\"%s\",le=\"%.6f\"", registry, (double)upper_us / 1e6);
            }
            add(m, "availd_registry_latency_seconds_bucket", false, (double)cumulative, "registry=\"%s\",le=\"+Inf\"",
                registry);
            add(m, "availd_registry_latency_seconds_sum", false, sum, "registry=\"%s\"", registry);
            add(m, "availd_registry_latency_seconds_count", false, (double)cumulative, "registry=\"%s\"", registry);
        }
        ctl_reply_release(&reply);
    }
    if (ctl_call_simple(m->ctl, "errors", "counts", &reply) == 0) {
        const msgpack_object *counts = av_obj_get(reply.body, "counts");
        for (uint32_t i = 0; counts && counts->type == MSGPACK_OBJECT_ARRAY && i < counts->via.array.size; i++) {
            char registry[AV_REGISTRY_MAX + 1], code[AV_CODE_MAX + 1];
            const msgpack_object *c = &counts->via.array.ptr[i];
            ctl_str(c, "registry", registry, sizeof registry);
            ctl_str(c, "code", code, sizeof code);
            add(m, "availd_error_events", false, (double)ctl_uint(c, "count"), "registry=\"%s\",code=\"%s\"",
                registry, code);
        }
        ctl_reply_release(&reply);
    }
}

static int
by_name(const void *a, const void *b)
{
    return strcmp(((const sample_t *)a)->name, ((const sample_t *)b)->name);
}

static void
write_metrics(metrics_t *m, FILE *out)
{
    m->n = 0;
    ctl_each_daemon(m->ctl->cfg, daemon_samples, m);
    registry_samples(m);
    /* Each family once, with its TYPE line; a stable sort keeps buckets in order. */
    for (uint32_t i = 1; i < m->n; i++) {
        sample_t s = m->samples[i];
        uint32_t j = i;
        while (j > 0 && by_name(&m->samples[j - 1], &s) > 0) {
            m->samples[j] = m->samples[j - 1];
            j--;
        }
        m->samples[j] = s;
    }
    char family[96] = "", current[96];
    for (uint32_t i = 0; i < m->n; i++) {
        const sample_t *s = &m->samples[i];
        /* _bucket, _sum and _count of a histogram share its family */
        snprintf(current, sizeof current, "%s", s->name);
        char *seconds = strstr(current, "_seconds_");
        if (seconds)
            seconds[strlen("_seconds")] = '\0';
        if (strcmp(current, family) != 0) {
            fprintf(out, "# TYPE %s %s\n", current, seconds ? "histogram" : s->counter ? "counter" : "gauge");
            snprintf(family, sizeof family, "%s", current);
        }
        if (s->labels[0])
            fprintf(out, "%s{%s} %.17g\n", s->name, s->labels, s->value);
        else
            fprintf(out, "%s %.17g\n", s->name, s->value);
    }
}

static int
serve(metrics_t *m, const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host) {
        fprintf(stderr, "availctl: --serve HOST:PORT\n");
        return EXIT_USAGE;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
        fprintf(stderr, "availctl: cannot resolve %s\n", hostport);
        return EXIT_USAGE;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 16) < 0) {
        fprintf(stderr, "availctl: cannot listen on %s: %s\n", hostport, strerror(errno));
        freeaddrinfo(res);
        if (fd >= 0)
            close(fd);
        return EXIT_USAGE;
    }
    freeaddrinfo(res);
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "availctl: serving metrics on http://%s/metrics\n", hostport);
    while (!zsys_interrupted) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 500) <= 0)
            continue;
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        /* The request itself does not matter: every path is the metrics.
         * Read what the client sent (bounded) so it sees a clean close. */
        char request[2048];
        struct pollfd cp = { c, POLLIN, 0 };
        if (poll(&cp, 1, SCRAPE_TIMEOUT_MS) > 0) {
            ssize_t n = recv(c, request, sizeof request, MSG_DONTWAIT);
            (void)n;
        }
        char *body = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&body, &len);
        if (mem) {
            write_metrics(m, mem);
            fclose(mem);
            FILE *out = fdopen(dup(c), "w");
            if (out) {
                fprintf(out, "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %zu\r\n"
                             "Connection: close\r\n\r\n", len);
                fwrite(body, 1, len, out);
                fclose(out);
            }
            free(body);
        }
        close(c);
    }
    close(fd);
    return EXIT_OK;
}

int
cmd_metrics(ctl_t *ctl, int argc, char **argv)
{
    const char *listen = NULL;
    if (argc == 3 && strcmp(argv[1], "--serve") == 0)
        listen = argv[2];
    else if (argc != 1)
        return ctl_command_usage(argv[0]);
    if (!ctl_config(ctl))
        return EXIT_USAGE;
    metrics_t m = { .ctl = ctl, .samples = calloc(SAMPLES_MAX, sizeof(sample_t)) };
    if (!m.samples)
        return EXIT_USAGE;
    if (ctl->timeout_ms > 1000)
        ctl->timeout_ms = 1000; /* a scrape must not wait for a dead daemon long */
    int rc = EXIT_OK;
    if (listen)
        rc = serve(&m, listen);
    else
        write_metrics(&m, stdout);
    free(m.samples);
    return rc;
}
