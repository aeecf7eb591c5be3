/* availd-http's state, shared by its files: the HTTP server on the daemon's
 * loop (http.c), the API's requests and their answers (api.c), intake as
 * the way to the registries (upstream.c), clients' budgets (budget.c), the
 * cache read directly (lookup.c) and the search page's files (www.c). */
#ifndef HTTP_H
#define HTTP_H

#include "av_cache.h"
#include "av_daemon.h"
#include "av_names.h"

#include <jansson.h>
#include <microhttpd.h>
#include <sys/queue.h>

typedef struct http http_t;
typedef struct api_req api_req_t;
typedef struct budgets budgets_t;
typedef struct www www_t;
typedef struct upstream upstream_t;

/* What an HTTP request asks, by its path. */
typedef enum {
    ROUTE_NONE = 0,
    ROUTE_STATUS,     /* GET /v1/status?domain=a.com,b.net */
    ROUTE_CHECK,      /* POST /v1/check {"names": [...]} */
    ROUTE_STREAM,     /* GET /v1/stream?domain=...: Server-Sent Events */
    ROUTE_HEALTHZ,    /* GET /healthz: intake reachable */
    ROUTE_METRICS,    /* GET /metrics: Prometheus text */
    ROUTE_CONFIG,     /* GET /v1/config: the search page's TLDs */
    ROUTE_WWW,        /* the search page's files */
} route_t;

/* One HTTP request of the API, from its headers to its response. Names
 * answered from the cache are final at once; the rest wait for intake. */
struct api_req {
    TAILQ_ENTRY(api_req) waiting_entry; /* while answers are outstanding */
    http_t *h;
    struct MHD_Connection *conn;
    route_t route;
    bool waiting;            /* in h->waiting */
    bool suspended;          /* its connection is parked until answers come */
    bool responded;
    bool fresh;
    uint32_t deadline_ms;
    uint64_t deadline_us;
    char client[64];         /* the budget it is counted against */
    char *origin;            /* an allowed Origin to echo (CORS), or NULL */
    /* the body of a POST, up to http.max_body_bytes */
    char *body;
    size_t body_len;
    bool body_too_big;       /* past the bound: the rest is read and dropped */
    size_t body_dropped;     /* bytes dropped so far, at most http_drop_max() */
    /* the names as asked, and each one's answer once final */
    uint32_t n_names;
    char **names;
    json_t **answers;
    uint32_t answered;
    bool from_intake;        /* at least one answer came from intake */
    /* intake checks still out: their ids are keys of h->pending */
    uint32_t n_pending;
    char **pending_ids;
    /* a stream's events not yet read by MHD */
    char *out;
    size_t out_len, out_pos, out_cap;
    bool stream_done;        /* `done` queued: end after what is buffered */
    bool healthz;            /* ping on its way */
};

TAILQ_HEAD(api_req_list, api_req);

struct http {
    av_daemon_t *d;
    struct MHD_Daemon *mhd;
    int listen_fd;
    sd_event_source *mhd_io;
    sd_event_source *mhd_timer;
    sd_event_source *scan_timer;
    sd_event_source *kick;       /* runs MHD after a connection was resumed */
    upstream_t *up;
    budgets_t *budgets;
    www_t *www;
    av_names_t *names;           /* normalising and routing, as the dispatcher */
    av_cache_t *cache;           /* read-only; NULL while absent */
    uint64_t cache_retry_us;
    struct api_req_list waiting;
    uint32_t connections;
    uint32_t streams;
    uint64_t names_pending;      /* names waiting for intake */
    bool stopping;
    bool quiesced;               /* MHD let go of the listening socket */
    /* counters */
    uint64_t *requests;
    uint64_t *names_asked;
    uint64_t *cache_hits;
    uint64_t *intake_names;
    uint64_t *responses_4xx;
    uint64_t *responses_5xx;
    uint64_t *rate_limited;
    uint64_t *overloaded;
    uint64_t *deadlines;
    uint64_t *streams_opened;
    uint64_t *connections_refused;
};

/* http.c: the hooks */
int http_init(av_daemon_t *d);
int http_reload(av_daemon_t *d, const av_config_t *next);
int http_stop(av_daemon_t *d);
void http_fini(av_daemon_t *d);
extern const av_setting_t http_restart_settings[];

/* http.c */
/* Queues a JSON body (taken) with status; adds CORS and Retry-After
 * (retry_after_s > 0). Returns MHD's result. */
enum MHD_Result http_respond_json(api_req_t *r, unsigned status, json_t *body, uint32_t retry_after_s);
/* An error body {"error": {"code": status, "message": why}}. */
enum MHD_Result http_respond_error(api_req_t *r, unsigned status, const char *message, uint32_t retry_after_s);
/* The request's answers are in (or its deadline passed): wake its
 * connection so MHD calls the handler again, which responds. */
void http_wake(api_req_t *r);
const av_http_cfg_t *http_cfg(const http_t *h);
/* How much of a too-large body is read and dropped before its 413. */
size_t http_drop_max(const http_t *h);

/* api.c */
/* The handler of an API route, called by MHD until it responds. */
enum MHD_Result api_handle(api_req_t *r, const char *upload, size_t *upload_size);
/* One name's answer from intake (idx into r->names); */
void api_answer(api_req_t *r, uint32_t idx, const av_answer_t *answer);
/* The JSON of an answer, in the Domainr status shape plus availd's keys. */
json_t *api_answer_json(const char *asked, const av_answer_t *answer);
/* Past the deadline: every name without an answer is unknown (deadline). */
void api_expire(api_req_t *r);
/* The connection is gone: forget its checks at intake, free it. */
void api_req_free(api_req_t *r);
/* Splits "a.com,b.net" (URL-decoded by MHD) into names; <0 with why. */
int api_split_names(const char *list, uint32_t max, char ***names, uint32_t *n, char *why, size_t whylen);
/* A stream's next bytes for MHD's content reader. */
ssize_t api_stream_read(void *cls, uint64_t pos, char *buf, size_t max);

/* upstream.c: intake's request-reply endpoint */
upstream_t *upstream_open(http_t *h);
void upstream_close(upstream_t **self_p);
/* Sends names[0..n) of r (by their indices) as one check; the answers
 * come to api_answer. Returns 0, or -1 when intake cannot take it now. */
int upstream_check(upstream_t *self, api_req_t *r, const uint32_t *idx, uint32_t n);
/* Forgets the checks of r still out (their answers will be dropped). */
void upstream_forget(upstream_t *self, api_req_t *r);
/* Sends a ping; a pong within the deadline wakes r (r->healthz false). */
int upstream_ping(upstream_t *self, api_req_t *r);
/* When intake last answered anything (monotonic us), 0 never. */
uint64_t upstream_last_heard_us(const upstream_t *self);

/* budget.c: names a second per client, by address or API key */
budgets_t *budgets_new(const av_http_cfg_t *cfg, char *err, size_t errlen);
void budgets_destroy(budgets_t **self_p);
/* On reload: what prev's clients have left, into next. */
void budgets_carry_over(budgets_t *next, const budgets_t *prev);
/* The client a request is counted against: "key:NAME" for a known key,
 * "ip:ADDR" (an IPv6 /64) otherwise; -1 for an unknown key. */
int budgets_client(const budgets_t *self, const char *api_key, const struct sockaddr *addr, char *out,
                   size_t size);
/* Takes n names from client's budget at now_us: 0, or the seconds to
 * wait before it has them (429 Retry-After). */
uint32_t budgets_take(budgets_t *self, const char *client, uint32_t n, uint64_t now_us);
uint32_t budgets_count(const budgets_t *self);

/* lookup.c: fresh cached answers without a round trip to intake */
/* 1 and *out filled when name (as asked) has a fresh cached answer; 0
 * otherwise (a miss, an invalid name, no cache): ask intake. */
int lookup_cached(http_t *h, const char *asked, av_answer_t *out, char name[AV_DOMAIN_MAX + 1],
                  av_cached_t *cached);

/* www.c: the search page's files, read at start and on reload */
www_t *www_load(const char *dir, char *err, size_t errlen);
void www_free(www_t **self_p);
/* The file for a path ("/" is index.html), or NULL. */
const char *www_get(const www_t *self, const char *path, size_t *len, const char **content_type);

#endif
