/* The HTTP server on the daemon's loop: libmicrohttpd in its external epoll
 * mode (no thread of its own), its epoll descriptor watched by sd-event and
 * its timeouts as an sd-event timer; requests routed by path; connections
 * that wait for intake are suspended, not polled. */
#include "http.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SCAN_INTERVAL_MS 50
/* Bytes MHD may hold per connection (allocated when it opens): the request
 * line and headers (a status query of some 400 names of 25 bytes fits;
 * POST /v1/check takes up to 1,000 of any length), and the buffer a
 * response is written from. RSS at 1,000 open streams: 69.8 MB with
 * 96 KiB, 38.9 MB with 32 KiB (MHD's default). */
#define CONNECTION_MEMORY_BYTES (16 * 1024)
#define LISTEN_BACKLOG 4096
#define DROP_MIN_BYTES ((size_t)16 << 20)

const av_http_cfg_t *
http_cfg(const http_t *h)
{
    return &av_daemon_config(h->d)->http;
}

/* A body past http.max_body_bytes is read and dropped up to this many bytes
 * so that its 413 reaches the client (see on_request); 16 MiB is a 10 MB
 * upload with room, and a loopback client sends it in milliseconds. */
size_t
http_drop_max(const http_t *h)
{
    size_t twice = 2 * (size_t)http_cfg(h)->max_body_bytes;
    return twice > DROP_MIN_BYTES ? twice : DROP_MIN_BYTES;
}

/* ---- MHD on the loop ------------------------------------------------------ */

static void
arm_timer(http_t *h)
{
    MHD_UNSIGNED_LONG_LONG timeout_ms;
    if (MHD_get_timeout(h->mhd, &timeout_ms) != MHD_YES) {
        sd_event_source_set_enabled(h->mhd_timer, SD_EVENT_OFF);
        return;
    }
    uint64_t now;
    sd_event_now(av_daemon_loop(h->d), CLOCK_MONOTONIC, &now);
    sd_event_source_set_time(h->mhd_timer, now + timeout_ms * 1000);
    sd_event_source_set_enabled(h->mhd_timer, SD_EVENT_ONESHOT);
}

static void
run_mhd(http_t *h)
{
    if (!h->mhd)
        return;
    MHD_run(h->mhd);
    arm_timer(h);
}

static int
on_mhd_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    (void)s;
    (void)fd;
    (void)revents;
    run_mhd(userdata);
    return 0;
}

static int
on_mhd_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    run_mhd(userdata);
    return 0;
}

static int
on_kick(sd_event_source *s, void *userdata)
{
    (void)s;
    run_mhd(userdata);
    return 0;
}

void
http_wake(api_req_t *r)
{
    if (r->suspended && r->conn) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
        sd_event_source_set_enabled(r->h->kick, SD_EVENT_ONESHOT);
    }
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    buf[strcspn(buf, "\n")] = '\0';
    av_log_debug("libmicrohttpd: %s", buf);
}

/* ---- responses -------------------------------------------------------------- */

static void
add_cors(api_req_t *r, struct MHD_Response *resp)
{
    if (!r->origin)
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->origin);
    MHD_add_response_header(resp, "Vary", "Origin");
}

static enum MHD_Result
queue(api_req_t *r, unsigned status, struct MHD_Response *resp)
{
    add_cors(r, resp);
    if (status >= 500)
        (*r->h->responses_5xx)++;
    else if (status >= 400)
        (*r->h->responses_4xx)++;
    r->responded = true;
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result
http_respond_json(api_req_t *r, unsigned status, json_t *body, uint32_t retry_after_s)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return MHD_NO;
    size_t len = strlen(text);
    text[len++] = '\n'; /* json_dumps leaves room: the NUL becomes the newline */
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (retry_after_s) {
        char s[16];
        snprintf(s, sizeof s, "%u", retry_after_s);
        MHD_add_response_header(resp, "Retry-After", s);
    }
    return queue(r, status, resp);
}

enum MHD_Result
http_respond_error(api_req_t *r, unsigned status, const char *message, uint32_t retry_after_s)
{
    json_t *body = json_pack("{s:{s:I,s:s}}", "error", "code", (json_int_t)status, "message", message);
    return http_respond_json(r, status, body, retry_after_s);
}

static enum MHD_Result
respond_text(api_req_t *r, unsigned status, const char *type, const char *text, size_t len, bool copy)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)text, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", type);
    /* The page runs no script but its own: no framing, no inline code. */
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    return queue(r, status, resp);
}

/* ---- routes outside the API --------------------------------------------- */

static void
metric(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        char *grown = realloc(*buf, *cap * 2);
        if (!grown)
            return;
        *buf = grown;
        *cap *= 2;
    }
}

/* Prometheus text as `availctl metrics` writes it for every daemon. */
static enum MHD_Result
respond_metrics(api_req_t *r)
{
    http_t *h = r->h;
    static const char *const counters[] = { "requests",      "names_asked",   "cache_hits",
                                            "intake_names",  "responses_4xx", "responses_5xx",
                                            "rate_limited",  "overloaded",    "deadlines",
                                            "streams_opened", "connections_refused" };
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return MHD_NO;
    buf[0] = '\0';
    metric(&buf, &len, &cap, "# TYPE availd_up gauge\navaild_up{daemon=\"http\"} 1\n");
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        metric(&buf, &len, &cap, "# TYPE availd_%s_total counter\navaild_%s_total{daemon=\"http\"} %llu\n",
               counters[i], counters[i], (unsigned long long)*av_daemon_counter(h->d, counters[i]));
    struct {
        const char *name;
        uint64_t value;
    } gauges[] = {
        { "connections", h->connections },
        { "streams", h->streams },
        { "names_pending", h->names_pending },
        { "clients", budgets_count(h->budgets) },
    };
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
        metric(&buf, &len, &cap, "# TYPE availd_%s gauge\navaild_%s{daemon=\"http\"} %llu\n", gauges[i].name,
               gauges[i].name, (unsigned long long)gauges[i].value);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    return queue(r, MHD_HTTP_OK, resp);
}

static enum MHD_Result
respond_config(api_req_t *r)
{
    const av_http_cfg_t *cfg = http_cfg(r->h);
    json_t *tlds = json_array();
    for (uint32_t i = 0; i < cfg->tlds.count; i++)
        json_array_append_new(tlds, json_string(cfg->tlds.items[i]));
    return http_respond_json(r, MHD_HTTP_OK, json_pack("{s:o,s:I}", "tlds", tlds, "max_names",
                                                       (json_int_t)cfg->max_names), 0);
}

static enum MHD_Result
respond_www(api_req_t *r, const char *url)
{
    size_t len;
    const char *type;
    const char *body = r->h->www ? www_get(r->h->www, url, &len, &type) : NULL;
    if (!body)
        return http_respond_error(r, MHD_HTTP_NOT_FOUND, "no such page", 0);
    return respond_text(r, MHD_HTTP_OK, type, body, len, true);
}

static enum MHD_Result
respond_healthz(api_req_t *r)
{
    if (!r->healthz && r->deadline_us == 0) {
        /* First call: ask intake, and wait for its pong (or the deadline). */
        r->deadline_us = av_mono_us() + 1000 * 1000;
        if (upstream_ping(r->h->up, r) < 0)
            return http_respond_json(r, MHD_HTTP_SERVICE_UNAVAILABLE,
                                     json_pack("{s:s,s:s}", "status", "unavailable", "intake", "unreachable"), 0);
        r->healthz = true;
        TAILQ_INSERT_TAIL(&r->h->waiting, r, waiting_entry);
        r->waiting = true;
        r->suspended = true;
        MHD_suspend_connection(r->conn);
        return MHD_YES;
    }
    if (r->healthz) /* the deadline passed without a pong */
        return http_respond_json(r, MHD_HTTP_SERVICE_UNAVAILABLE,
                                 json_pack("{s:s,s:s}", "status", "unavailable", "intake", "no answer"), 0);
    return http_respond_json(r, MHD_HTTP_OK, json_pack("{s:s,s:s}", "status", "ok", "intake", "ok"), 0);
}

/* ---- routing ---------------------------------------------------------------- */

static route_t
route_of(const char *method, const char *url, bool *method_ok)
{
    static const struct {
        const char *path;
        const char *method;
        route_t route;
    } routes[] = {
        { "/v1/status", "GET", ROUTE_STATUS },   { "/v1/check", "POST", ROUTE_CHECK },
        { "/v1/stream", "GET", ROUTE_STREAM },   { "/healthz", "GET", ROUTE_HEALTHZ },
        { "/metrics", "GET", ROUTE_METRICS },    { "/v1/config", "GET", ROUTE_CONFIG },
    };
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) != 0)
            continue;
        *method_ok = strcmp(routes[i].method, "GET") == 0 ? get : strcmp(method, routes[i].method) == 0;
        return routes[i].route;
    }
    *method_ok = get;
    return ROUTE_WWW;
}

/* The Origin when config allows it (echoed in Access-Control-Allow-Origin). */
static char *
allowed_origin(const http_t *h, struct MHD_Connection *conn)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    const av_http_cfg_t *cfg = http_cfg(h);
    if (!origin)
        return NULL;
    for (uint32_t i = 0; i < cfg->cors_origins.count; i++)
        if (strcmp(cfg->cors_origins.items[i], "*") == 0 || strcmp(cfg->cors_origins.items[i], origin) == 0)
            return strdup(strcmp(cfg->cors_origins.items[i], "*") == 0 ? "*" : origin);
    return NULL;
}

static enum MHD_Result
preflight(api_req_t *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    if (r->origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Content-Type, X-API-Key, Authorization");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
    return queue(r, MHD_HTTP_NO_CONTENT, resp);
}

/* The API key of a request: X-API-Key, or Authorization: Bearer KEY. */
static const char *
api_key(struct MHD_Connection *conn)
{
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-API-Key");
    if (key)
        return key;
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
        return auth + 7;
    return NULL;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
           const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    http_t *h = cls;
    api_req_t *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        *con_cls = r;
        r->h = h;
        r->conn = conn;
        (*h->requests)++;
        bool method_ok;
        r->route = route_of(method, url, &method_ok);
        r->origin = allowed_origin(h, conn);
        if (strcmp(method, "OPTIONS") == 0)
            return preflight(r);
        if (!method_ok)
            return http_respond_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed here", 0);
        if (h->stopping)
            return http_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "stopping", 1);
        if (r->route == ROUTE_STATUS || r->route == ROUTE_CHECK || r->route == ROUTE_STREAM) {
            const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
            if (budgets_client(h->budgets, api_key(conn), ci ? ci->client_addr : NULL, r->client,
                               sizeof r->client) < 0)
                return http_respond_error(r, MHD_HTTP_UNAUTHORIZED, "unknown API key", 0);
        }
        /* A body too large by its Content-Length: refused before it is sent
         * when the client waits for "100 Continue" (curl does for large
         * bodies) or when it is more than we would read; otherwise read and
         * dropped, then refused, because a reply to a client still sending
         * is lost to the TCP reset that the unread rest causes at the close. */
        const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (r->route == ROUTE_CHECK && length) {
            unsigned long long announced = strtoull(length, NULL, 10);
            if (announced > http_cfg(h)->max_body_bytes) {
                const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                if ((expect && strcasecmp(expect, "100-continue") == 0) || announced > http_drop_max(h))
                    return http_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large", 0);
                r->body_too_big = true;
            }
        }
        /* The answer comes in the next call, once the whole request is in:
         * one queued before that makes libmicrohttpd close the connection
         * (it cannot tell what of the request is left), no keep-alive. */
        return MHD_YES;
    }
    if (r->responded) {
        *upload_size = 0; /* the rest of a refused body: read and dropped */
        return MHD_YES;
    }
    if (r->route == ROUTE_CHECK)
        return api_handle(r, upload, upload_size);
    if (*upload_size) {
        *upload_size = 0; /* a body where none belongs: ignored */
        return MHD_YES;
    }
    switch (r->route) {
    case ROUTE_WWW: return respond_www(r, url);
    case ROUTE_METRICS: return respond_metrics(r);
    case ROUTE_CONFIG: return respond_config(r);
    case ROUTE_HEALTHZ: return respond_healthz(r);
    default: return api_handle(r, NULL, upload_size);
    }
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    api_req_t *r = *con_cls;
    if (r)
        api_req_free(r);
    *con_cls = NULL;
}

static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context, enum MHD_ConnectionNotificationCode code)
{
    (void)conn;
    (void)socket_context;
    http_t *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        h->connections++;
    else if (h->connections)
        h->connections--;
}

static enum MHD_Result
on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    http_t *h = cls;
    const av_process_cfg_t *p = av_daemon_process(h->d);
    if (av_cidr_allowed(&p->cidr_allow, &p->cidr_deny, addr))
        return MHD_YES;
    (*h->connections_refused)++;
    return MHD_NO;
}

/* ---- the listening socket ------------------------------------------------- */


/* ---- lifecycle --------------------------------------------------------------- */

static uint64_t
gauge_connections(av_daemon_t *d)
{
    return ((http_t *)av_daemon_state(d))->connections;
}

static uint64_t
gauge_streams(av_daemon_t *d)
{
    return ((http_t *)av_daemon_state(d))->streams;
}

static uint64_t
gauge_pending(av_daemon_t *d)
{
    return ((http_t *)av_daemon_state(d))->names_pending;
}

static uint64_t
gauge_clients(av_daemon_t *d)
{
    return budgets_count(((http_t *)av_daemon_state(d))->budgets);
}

/* Requests past their deadline get what is known; a draining daemon
 * stops once nothing waits. */
static void
scan(av_daemon_t *d, void *arg)
{
    (void)d;
    http_t *h = arg;
    uint64_t now_us = av_mono_us();
    api_req_t *r, *next;
    for (r = TAILQ_FIRST(&h->waiting); r; r = next) {
        next = TAILQ_NEXT(r, waiting_entry);
        if (now_us >= r->deadline_us)
            api_expire(r);
    }
    if (h->stopping && TAILQ_EMPTY(&h->waiting) && h->streams == 0)
        av_daemon_drained(h->d);
}

static int
start_mhd(http_t *h)
{
    const av_http_cfg_t *cfg = http_cfg(h);
    char why[256];
    h->listen_fd = av_inherited_socket(cfg->listen);
    if (h->listen_fd >= 0) {
        av_log_info("%s: using the listening socket passed by the service manager", cfg->listen);
    } else if ((h->listen_fd = av_tcp_listen(cfg->listen, LISTEN_BACKLOG, why, sizeof why)) < 0) {
        av_log_err("cannot listen on %s: %s", cfg->listen, why);
        return -1;
    }
    h->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, on_accept, h, on_request, h,
        MHD_OPTION_LISTEN_SOCKET, h->listen_fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_BYTES,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        /* Strict parsing: a request without Host, a header without a
         * colon, stray whitespace are 400, not guessed at. */
        MHD_OPTION_STRICT_FOR_CLIENT, (int)1, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)LISTEN_BACKLOG, MHD_OPTION_END);
    if (!h->mhd) {
        av_log_err("cannot start the HTTP server on %s", cfg->listen);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    sd_event *loop = av_daemon_loop(h->d);
    if (!info || sd_event_add_io(loop, &h->mhd_io, info->epoll_fd, EPOLLIN, on_mhd_io, h) < 0 ||
        sd_event_add_time(loop, &h->mhd_timer, CLOCK_MONOTONIC, 0, 1000, on_mhd_timer, h) < 0 ||
        sd_event_add_defer(loop, &h->kick, on_kick, h) < 0) {
        av_log_err("cannot watch the HTTP server on the loop");
        return -1;
    }
    sd_event_source_set_enabled(h->kick, SD_EVENT_OFF);
    arm_timer(h);
    av_log_info("listening on %s", cfg->listen);
    return 0;
}

int
http_init(av_daemon_t *d)
{
    const av_config_t *cfg = av_daemon_config(d);
    char err[AV_CONFIG_ERR_MAX];
    http_t *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    av_daemon_set_state(d, h);
    h->d = d;
    h->listen_fd = -1;
    TAILQ_INIT(&h->waiting);
    h->requests = av_daemon_counter(d, "requests");
    h->names_asked = av_daemon_counter(d, "names_asked");
    h->cache_hits = av_daemon_counter(d, "cache_hits");
    h->intake_names = av_daemon_counter(d, "intake_names");
    h->responses_4xx = av_daemon_counter(d, "responses_4xx");
    h->responses_5xx = av_daemon_counter(d, "responses_5xx");
    h->rate_limited = av_daemon_counter(d, "rate_limited");
    h->overloaded = av_daemon_counter(d, "overloaded");
    h->deadlines = av_daemon_counter(d, "deadlines");
    h->streams_opened = av_daemon_counter(d, "streams_opened");
    h->connections_refused = av_daemon_counter(d, "connections_refused");
    av_daemon_gauge(d, "connections", gauge_connections);
    av_daemon_gauge(d, "streams", gauge_streams);
    av_daemon_gauge(d, "names_pending", gauge_pending);
    av_daemon_gauge(d, "clients", gauge_clients);
    if (!cfg->http.enabled)
        av_log_notice("the configuration has no http section: serving its defaults (%s)", cfg->http.listen);
    if (!(h->names = av_names_new(cfg))) {
        av_log_err("cannot build the routing table");
        return -1;
    }
    if (!(h->budgets = budgets_new(&cfg->http, err, sizeof err))) {
        av_log_err("%s", err);
        return -1;
    }
    if (!(h->www = www_load(cfg->http.www, err, sizeof err)))
        av_log_warning("no search page: %s", err); /* the API works without it */
    if (!(h->up = upstream_open(h)))
        return -1;
    if (start_mhd(h) < 0)
        return -1;
    if (!(h->scan_timer = av_daemon_every(d, SCAN_INTERVAL_MS, scan, h)))
        return -1;
    av_daemon_status_text(d, "listening on %s", cfg->http.listen);
    return 0;
}

const av_setting_t http_restart_settings[] = {
    AV_SETTING("http.listen", http.listen, AV_SETTING_STR),
    AV_SETTING("http.max_connections", http.max_connections, AV_SETTING_U32),
    AV_SETTING("http.max_connections_per_ip", http.max_connections_per_ip, AV_SETTING_U32),
    AV_SETTING("http.idle_timeout_s", http.idle_timeout_s, AV_SETTING_U32),
    AV_SETTING("endpoints.intake_router", endpoints.intake_router, AV_SETTING_STR),
    AV_SETTING("cache.path", cache.path, AV_SETTING_STR),
    { NULL, 0, 0 },
};

/* SIGHUP: the new budgets, keys, CORS origins, TLDs, page files and routes
 * at once (all built before anything is swapped); the listening address
 * and MHD's connection limits need a restart. */
int
http_reload(av_daemon_t *d, const av_config_t *next)
{
    http_t *h = av_daemon_state(d);
    char err[AV_CONFIG_ERR_MAX];
    budgets_t *budgets = budgets_new(&next->http, err, sizeof err);
    if (!budgets) {
        av_log_err("reload refused: %s", err);
        return -1;
    }
    av_names_t *names = av_names_new(next);
    if (!names) {
        budgets_destroy(&budgets);
        av_log_err("reload refused: cannot build the routing table");
        return -1;
    }
    www_t *www = www_load(next->http.www, err, sizeof err);
    if (!www)
        av_log_warning("no search page: %s", err);
    budgets_carry_over(budgets, h->budgets);
    budgets_destroy(&h->budgets);
    h->budgets = budgets;
    av_names_destroy(&h->names);
    h->names = names;
    www_free(&h->www);
    h->www = www;
    return 0;
}

int
http_stop(av_daemon_t *d)
{
    http_t *h = av_daemon_state(d);
    h->stopping = true;
    /* No new connections; what is open finishes (within drain_ms). */
    if (h->mhd && MHD_quiesce_daemon(h->mhd) != MHD_INVALID_SOCKET)
        h->quiesced = true; /* the listening socket is ours to close again */
    return TAILQ_EMPTY(&h->waiting) && h->streams == 0 ? 1 : 0;
}

void
http_fini(av_daemon_t *d)
{
    http_t *h = av_daemon_state(d);
    if (!h)
        return;
    sd_event_source_disable_unref(h->scan_timer);
    /* MHD must not be stopped with suspended connections: wake them all
     * (their answers are unknown, deadline: we are stopping). */
    api_req_t *r;
    while ((r = TAILQ_FIRST(&h->waiting)))
        api_expire(r);
    if (h->mhd) {
        MHD_run(h->mhd);
        MHD_stop_daemon(h->mhd); /* closes the listening socket, unless quiesced */
        if (!h->quiesced)
            h->listen_fd = -1;
    }
    sd_event_source_disable_unref(h->mhd_io);
    sd_event_source_disable_unref(h->mhd_timer);
    sd_event_source_disable_unref(h->kick);
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    upstream_close(&h->up);
    budgets_destroy(&h->budgets);
    www_free(&h->www);
    av_names_destroy(&h->names);
    av_cache_close(&h->cache);
    free(h);
    av_daemon_set_state(d, NULL);
}
