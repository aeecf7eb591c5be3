/* availctl metrics [--serve HOST:PORT]: availd in the Prometheus text
 * format (version 0.0.4): every daemon's up, uptime, counters and gauges,
 * per registry the answers, unknown and rate-limited counts and a latency
 * histogram from the timing database, the cache's entries and the error
 * events held. Every family has its HELP and TYPE; nothing is cut (the
 * sample list grows as needed); the histogram has one fixed set of buckets.
 * Printed once, or served over HTTP on /metrics (404 elsewhere) to several
 * scrapers at once, a thread each; under systemd, socket activation
 * (availd-metrics.socket) hands the listening socket in. */
#include "availctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define SCRAPE_TIMEOUT_MS 5000   /* a scraper sends its request within this */
#define REQUEST_MAX_BYTES 8192   /* the request line and headers of a scrape */
#define SCRAPERS_MAX 16          /* scrapes served at once; past it 503 */
#define DAEMON_TIMEOUT_MS 1000   /* a scrape does not wait for a dead daemon long */

/* The histogram's buckets, in seconds, always all of them, so that a
 * series' le values never come and go. A timing bucket of the cache (four
 * per power of two of microseconds) counts under the first le at or above
 * its upper bound. */
static const double latency_le_s[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,      2.5,   5,    10,    30,    60 };
#define LATENCY_BUCKETS (sizeof latency_le_s / sizeof latency_le_s[0])

typedef enum { COUNTER, GAUGE, HISTOGRAM } family_type_t;

typedef struct {
    char *labels; /* "" or k="v",... (escaped) */
    char *suffix; /* "" or _bucket, _sum, _count of a histogram */
    double value;
} sample_t;

typedef struct {
    char name[128];
    char *help;
    family_type_t type;
    sample_t *samples;
    size_t n, cap;
} family_t;

typedef struct {
    ctl_t *ctl;
    family_t *families;
    size_t n, cap;
    bool oom;
} metrics_t;

static const char *const type_names[] = { "counter", "gauge", "histogram" };

static family_t *
family(metrics_t *m, const char *name, family_type_t type, const char *help)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->families[i].name, name) == 0)
            return &m->families[i];
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        family_t *f = realloc(m->families, cap * sizeof *f);
        if (!f) {
            m->oom = true;
            return NULL;
        }
        m->families = f;
        m->cap = cap;
    }
    family_t *f = &m->families[m->n++];
    *f = (family_t){ .type = type, .help = strdup(help) };
    snprintf(f->name, sizeof f->name, "%s", name);
    if (!f->help)
        m->oom = true;
    return f;
}

static void
add(family_t *f, metrics_t *m, const char *suffix, double value, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
add(family_t *f, metrics_t *m, const char *suffix, double value, const char *fmt, ...)
{
    if (!f)
        return;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        sample_t *s = realloc(f->samples, cap * sizeof *s);
        if (!s) {
            m->oom = true;
            return;
        }
        f->samples = s;
        f->cap = cap;
    }
    sample_t *s = &f->samples[f->n];
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&s->labels, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        m->oom = true;
        return;
    }
    s->suffix = strdup(suffix);
    if (!s->suffix) {
        free(s->labels);
        m->oom = true;
        return;
    }
    s->value = value;
    f->n++;
}

static void
metrics_clear(metrics_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        family_t *f = &m->families[i];
        for (size_t j = 0; j < f->n; j++) {
            free(f->samples[j].labels);
            free(f->samples[j].suffix);
        }
        free(f->samples);
        free(f->help);
    }
    free(m->families);
    m->families = NULL;
    m->n = m->cap = 0;
    m->oom = false;
}

/* A label value as the text format wants it: \\, \" and \n escaped;
 * bytes that are not printable ASCII (registry data) become '?'. */
static void
label_value(char *out, size_t size, const char *in)
{
    size_t o = 0;
    for (; *in && o + 3 < size; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '\\' || c == '"') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
        }
    }
    out[o] = '\0';
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
    char name[128], help[256], daemon[128];
    label_value(daemon, sizeof daemon, ident);
    family_t *up = family(m, "availd_up", GAUGE, "1 when the daemon answers on its control endpoint, else 0");
    if (ctl_call_simple(m->ctl, ident, "status", &reply) < 0) {
        add(up, m, "", 0, "daemon=\"%s\"", daemon);
        return;
    }
    const msgpack_object *body = reply.body;
    add(up, m, "", 1, "daemon=\"%s\"", daemon);
    add(family(m, "availd_uptime_seconds", GAUGE, "Seconds since the daemon started"), m, "",
        (double)ctl_uint(body, "uptime_s"), "daemon=\"%s\"", daemon);
    const char *groups[] = { "counters", "gauges" };
    for (int g = 0; g < 2; g++) {
        const msgpack_object *map = av_obj_get(body, groups[g]);
        for (uint32_t i = 0; map && map->type == MSGPACK_OBJECT_MAP && i < map->via.map.size; i++) {
            const msgpack_object_kv *kv = &map->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                continue;
            metric_name(name, sizeof name, "availd_", kv->key.via.str.ptr, kv->key.via.str.size,
                        g == 0 ? "_total" : "");
            snprintf(help, sizeof help, "The %s %.*s of availctl status, per daemon", g == 0 ? "counter" : "gauge",
                     (int)kv->key.via.str.size, kv->key.via.str.ptr);
            add(family(m, name, g == 0 ? COUNTER : GAUGE, help), m, "", (double)kv->val.via.u64,
                "daemon=\"%s\"", daemon);
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
    /* The families exist even while the cache is down, empty. */
    family_t *answers = family(m, "availd_registry_answers_total", COUNTER,
                               "Registry answers recorded in the timing database, per registry");
    family_t *unknown = family(m, "availd_registry_unknown_total", COUNTER,
                               "Registry answers that were unknown, per registry");
    family_t *limited = family(m, "availd_registry_rate_limited_total", COUNTER,
                               "Registry answers that said the registry rate-limits us, per registry");
    family_t *latency = family(m, "availd_registry_latency_seconds", HISTOGRAM,
                               "Registry answer latency over the lifetime; _sum is estimated from bucket bounds");
    family_t *entries = family(m, "availd_cache_entries", GAUGE, "Answers held in the cache");
    if (rc == 0) {
        const msgpack_object *timing = av_obj_get(reply.body, "timing");
        add(entries, m, "", (double)ctl_uint(reply.body, "entries"), "%s", "");
        for (uint32_t i = 0; timing && timing->type == MSGPACK_OBJECT_ARRAY && i < timing->via.array.size; i++) {
            const msgpack_object *t = &timing->via.array.ptr[i];
            const msgpack_object *total = av_obj_get(t, "total");
            const msgpack_object *buckets = av_obj_get(t, "buckets");
            char raw[AV_REGISTRY_MAX + 1], registry[3 * AV_REGISTRY_MAX + 1];
            ctl_str(t, "registry", raw, sizeof raw);
            label_value(registry, sizeof registry, raw);
            add(answers, m, "", (double)ctl_uint(total, "count"), "registry=\"%s\"", registry);
            add(unknown, m, "", (double)ctl_uint(total, "errors"), "registry=\"%s\"", registry);
            add(limited, m, "", (double)ctl_uint(total, "rate_limited"), "registry=\"%s\"", registry);
            uint64_t at_most[LATENCY_BUCKETS] = { 0 }, count = 0;
            double sum = 0;
            for (uint32_t b = 0; buckets && buckets->type == MSGPACK_OBJECT_ARRAY && b < buckets->via.array.size;
                 b++) {
                const msgpack_object *pair = &buckets->via.array.ptr[b];
                if (pair->type != MSGPACK_OBJECT_ARRAY || pair->via.array.size != 2 ||
                    pair->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                    pair->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                    continue;
                uint64_t upper_us = pair->via.array.ptr[0].via.u64, n = pair->via.array.ptr[1].via.u64;
                count += n;
                sum += (double)n * (double)upper_us / 1e6;
                for (size_t l = 0; l < LATENCY_BUCKETS; l++)
                    if ((double)upper_us <= latency_le_s[l] * 1e6)
                        at_most[l] += n;
            }
            for (size_t l = 0; l < LATENCY_BUCKETS; l++)
                add(latency, m, "_bucket", (double)at_most[l], "registry=\"%s\",le=\"%g\"", registry,
                    latency_le_s[l]);
            add(latency, m, "_bucket", (double)count, "registry=\"%s\",le=\"+Inf\"", registry);
            add(latency, m, "_sum", sum, "registry=\"%s\"", registry);
            add(latency, m, "_count", (double)count, "registry=\"%s\"", registry);
        }
        ctl_reply_release(&reply);
    }
    family_t *events = family(m, "availd_error_events", GAUGE,
                              "Error events availd-errors holds, per registry and code");
    if (ctl_call_simple(m->ctl, "errors", "counts", &reply) == 0) {
        const msgpack_object *counts = av_obj_get(reply.body, "counts");
        for (uint32_t i = 0; counts && counts->type == MSGPACK_OBJECT_ARRAY && i < counts->via.array.size; i++) {
            char raw[AV_CODE_MAX + AV_REGISTRY_MAX + 2];
            char registry[3 * AV_REGISTRY_MAX + 1], code[3 * AV_CODE_MAX + 1];
            const msgpack_object *c = &counts->via.array.ptr[i];
            ctl_str(c, "registry", raw, sizeof raw);
            label_value(registry, sizeof registry, raw);
            ctl_str(c, "code", raw, sizeof raw);
            label_value(code, sizeof code, raw);
            add(events, m, "", (double)ctl_uint(c, "count"), "registry=\"%s\",code=\"%s\"", registry, code);
        }
        ctl_reply_release(&reply);
    }
}

static int
by_family_name(const void *a, const void *b)
{
    return strcmp(((const family_t *)a)->name, ((const family_t *)b)->name);
}

static void
print_value(FILE *out, double v)
{
    if (v == (double)(int64_t)v && v < 9e15 && v > -9e15)
        fprintf(out, "%lld\n", (long long)v);
    else
        fprintf(out, "%.17g\n", v);
}

/* Collects everything and writes it; returns -1 (nothing written) when
 * memory ran out, rather than a scrape with families missing. */
static int
write_metrics(ctl_t *ctl, FILE *out)
{
    metrics_t m = { .ctl = ctl };
    ctl_each_daemon(ctl->cfg, daemon_samples, &m);
    registry_samples(&m);
    if (m.oom) {
        metrics_clear(&m);
        fprintf(stderr, "availctl: out of memory collecting metrics\n");
        return -1;
    }
    qsort(m.families, m.n, sizeof *m.families, by_family_name);
    for (size_t i = 0; i < m.n; i++) {
        const family_t *f = &m.families[i];
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, type_names[f->type]);
        for (size_t j = 0; j < f->n; j++) {
            const sample_t *s = &f->samples[j];
            if (s->labels[0])
                fprintf(out, "%s%s{%s} ", f->name, s->suffix, s->labels);
            else
                fprintf(out, "%s%s ", f->name, s->suffix);
            print_value(out, s->value);
        }
    }
    metrics_clear(&m);
    return 0;
}

/* ---- serving ------------------------------------------------------------ */

static atomic_int scrapers;
static volatile sig_atomic_t stopping;

static void
on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

typedef struct {
    ctl_t *ctl;
    int fd;
} scrape_t;

static void
respond(int fd, const char *status, const char *type, const char *body, size_t len, bool head)
{
    FILE *out = fdopen(dup(fd), "w");
    if (!out)
        return;
    fprintf(out, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status, type,
            len);
    if (!head)
        fwrite(body, 1, len, out);
    fclose(out);
}

/* Reads the request head, bounded in size and time. Returns its length,
 * or -1 when the client sent no complete head in time. */
static ssize_t
read_request(int fd, char *buf, size_t size)
{
    size_t have = 0;
    int64_t deadline = zclock_mono() + SCRAPE_TIMEOUT_MS;
    while (have + 1 < size) {
        int left = (int)(deadline - zclock_mono());
        struct pollfd p = { fd, POLLIN, 0 };
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return -1;
        ssize_t n = recv(fd, buf + have, size - 1 - have, 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
            return (ssize_t)have;
    }
    return -1;
}

static void *
scrape(void *arg)
{
    scrape_t *s = arg;
    char req[REQUEST_MAX_BYTES];
    if (read_request(s->fd, req, sizeof req) < 0) {
        static const char msg[] = "bad request\n";
        respond(s->fd, "400 Bad Request", "text/plain", msg, sizeof msg - 1, false);
        goto out;
    }
    bool head = strncmp(req, "HEAD ", 5) == 0;
    const char *path = head ? req + 5 : strncmp(req, "GET ", 4) == 0 ? req + 4 : NULL;
    if (!path) {
        static const char msg[] = "only GET and HEAD\n";
        respond(s->fd, "405 Method Not Allowed", "text/plain", msg, sizeof msg - 1, false);
        goto out;
    }
    size_t plen = strcspn(path, " ?\r\n");
    if (plen != strlen("/metrics") || strncmp(path, "/metrics", plen) != 0) {
        static const char msg[] = "not found: availd's metrics are on /metrics\n";
        respond(s->fd, "404 Not Found", "text/plain", msg, sizeof msg - 1, head);
        goto out;
    }
    char *body = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&body, &len);
    int rc = mem ? write_metrics(s->ctl, mem) : -1;
    if (mem)
        fclose(mem);
    if (rc == 0)
        respond(s->fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len, head);
    else
        respond(s->fd, "500 Internal Server Error", "text/plain", "out of memory\n", 14, false);
    free(body);
out:
    /* A clean close: what the client sent beyond the head (a body, a
     * pipelined request) is read and dropped, so that it sees the answer
     * and not a reset. Bounded: a second at most. */
    shutdown(s->fd, SHUT_WR);
    for (int i = 0; i < 10; i++) {
        struct pollfd p = { s->fd, POLLIN, 0 };
        if (poll(&p, 1, 100) > 0 && recv(s->fd, req, sizeof req, 0) <= 0)
            break;
    }
    close(s->fd);
    free(s);
    atomic_fetch_sub(&scrapers, 1);
    return NULL;
}

static int
listen_on(const char *hostport)
{
    if (!hostport) {
        /* Socket activation: the one listening socket systemd passes. */
        if (sd_listen_fds(1) != 1 || sd_is_socket(SD_LISTEN_FDS_START, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
            fprintf(stderr, "availctl: --serve needs HOST:PORT, or one listening socket from systemd\n");
            return -1;
        }
        return SD_LISTEN_FDS_START;
    }
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host) {
        fprintf(stderr, "availctl: --serve HOST:PORT\n");
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    if (host[0] == '[' && strlen(host) > 1 && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    if (getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res) != 0) {
        fprintf(stderr, "availctl: cannot resolve %s\n", hostport);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        fprintf(stderr, "availctl: cannot listen on %s: %s\n", hostport, strerror(errno));
        freeaddrinfo(res);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int
serve(ctl_t *ctl, const char *hostport)
{
    int fd = listen_on(hostport);
    if (fd < 0)
        return EXIT_USAGE;
    zsys_init(); /* once, before the scrapers' threads make their sockets */
    struct sigaction sa = { .sa_handler = on_stop };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "availctl: serving metrics on http://%s/metrics\n", hostport ? hostport : "(systemd socket)");
    sd_notify(0, "READY=1");
    while (!stopping && !zsys_interrupted) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 500) <= 0)
            continue;
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        if (atomic_fetch_add(&scrapers, 1) >= SCRAPERS_MAX) {
            atomic_fetch_sub(&scrapers, 1);
            static const char msg[] = "too many scrapes at once\n";
            respond(c, "503 Service Unavailable", "text/plain", msg, sizeof msg - 1, false);
            close(c);
            continue;
        }
        scrape_t *s = malloc(sizeof *s);
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (!s || (*s = (scrape_t){ ctl, c }, pthread_create(&tid, &attr, scrape, s) != 0)) {
            free(s);
            close(c);
            atomic_fetch_sub(&scrapers, 1);
        }
        pthread_attr_destroy(&attr);
    }
    sd_notify(0, "STOPPING=1");
    close(fd);
    /* Let the scrapes in progress finish (each is bounded) before the
     * config they read is freed. */
    for (int i = 0; i < 100 && atomic_load(&scrapers) > 0; i++)
        usleep(50 * 1000);
    return EXIT_OK;
}

int
cmd_metrics(ctl_t *ctl, int argc, char **argv)
{
    const char *listen = NULL;
    bool serving = false;
    if (argc == 3 && strcmp(argv[1], "--serve") == 0)
        listen = argv[2], serving = true;
    else if (argc == 2 && strcmp(argv[1], "--serve") == 0)
        serving = true; /* socket activation */
    else if (argc != 1)
        return ctl_command_usage(argv[0]);
    ctl->endpoints_only = true;
    if (!ctl_config(ctl))
        return EXIT_USAGE;
    if (ctl->timeout_ms > DAEMON_TIMEOUT_MS)
        ctl->timeout_ms = DAEMON_TIMEOUT_MS;
    if (serving)
        return serve(ctl, listen);
    return write_metrics(ctl, stdout) == 0 ? EXIT_OK : EXIT_USAGE;
}
