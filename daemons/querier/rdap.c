/* RDAP (RFC 7480, 9082, 9083): GET BASE/domain/NAME over HTTPS with libcurl's
 * multi interface on the querier's loop (sockets in its av_poller, curl's
 * timer an sd-event timer), connections reused and HTTP/2 multiplexed where
 * the server offers it, TLS verified. What the HTTP status and the record's
 * statuses mean is the verdict's business (verdict.c). */
#include "querier.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The transfers of one registry. */
typedef struct {
    registry_t *registry;
    bool curl_ready;           /* curl_global_init succeeded: cleanup owed */
    CURLM *multi;
    sd_event_source *timer;
    char base[2048];           /* base URL, ending in "/" */
} rdap_t;

/* One transfer. */
typedef struct {
    CURL *easy;
    uint32_t retry_after_s;    /* from a 429/503 reply */
} transfer_t;

typedef struct {
    av_poll_handle_t poll;
    rdap_t *rdap;
    curl_socket_t fd;
} rdap_socket_t;

static void check_done(rdap_t *rdap);

/* ---- curl on our loop ----------------------------------------------------- */

static void
on_socket_ready(void *arg, uint32_t events)
{
    rdap_socket_t *rs = arg;
    rdap_t *rdap = rs->rdap;
    int flags = (events & EPOLLIN ? CURL_CSELECT_IN : 0) | (events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    int running;
    curl_multi_socket_action(rdap->multi, rs->fd, flags, &running);
    check_done(rdap); /* rs may be gone now */
}

static int
on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    rdap_t *rdap = userp;
    av_poller_t *poller = rdap->registry->q->poller;
    rdap_socket_t *rs = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (rs) {
            av_poller_del(poller, &rs->poll);
            free(rs);
            curl_multi_assign(rdap->multi, fd, NULL);
        }
        return 0;
    }
    uint32_t events = (what == CURL_POLL_IN || what == CURL_POLL_INOUT ? EPOLLIN : 0) |
                      (what == CURL_POLL_OUT || what == CURL_POLL_INOUT ? EPOLLOUT : 0);
    if (!rs) {
        if (!(rs = calloc(1, sizeof *rs)))
            return -1;
        rs->rdap = rdap;
        rs->fd = fd;
        if (av_poller_add(poller, &rs->poll, fd, events, on_socket_ready, rs) < 0) {
            free(rs);
            return -1;
        }
        curl_multi_assign(rdap->multi, fd, rs);
    } else {
        av_poller_mod(poller, &rs->poll, events);
    }
    return 0;
}

static int
on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    rdap_t *rdap = userdata;
    int running;
    curl_multi_socket_action(rdap->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(rdap);
    return 0;
}

static int
on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    rdap_t *rdap = userp;
    if (timeout_ms < 0)
        return sd_event_source_set_enabled(rdap->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
    /* 0 means "now"; the next loop turn is soon enough. */
    sd_event_source_set_time(rdap->timer, av_mono_us() + (uint64_t)timeout_ms * 1000 + 1);
    return sd_event_source_set_enabled(rdap->timer, SD_EVENT_ONESHOT) < 0 ? -1 : 0;
}

/* ---- one transfer --------------------------------------------------------- */

static size_t
on_body(char *data, size_t size, size_t n, void *userp)
{
    query_t *x = userp;
    size_t len = size * n;
    if (x->reply_len + len > x->registry->cfg->max_reply_bytes) {
        x->truncated = true; /* past the cap: stop the transfer; the status code still decides */
        return 0;
    }
    return query_reply_append(x, data, len) ? len : 0;
}

/* Retry-After: seconds, or an HTTP date (RFC 9110 10.2.3). */
static size_t
on_header(char *data, size_t size, size_t n, void *userp)
{
    transfer_t *t = userp;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof name && strncasecmp(data, name, sizeof name - 1) == 0) {
        char value[64];
        size_t vlen = len - (sizeof name - 1);
        if (vlen >= sizeof value)
            vlen = sizeof value - 1;
        memcpy(value, data + sizeof name - 1, vlen);
        value[vlen] = '\0';
        char *v = value + strspn(value, " \t");
        v[strcspn(v, "\r\n")] = '\0';
        if (*v && strspn(v, "0123456789") == strlen(v)) {
            long s = atol(v);
            t->retry_after_s = s > 86400 ? 86400 : (uint32_t)s;
        } else {
            struct tm tm;
            memset(&tm, 0, sizeof tm);
            if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
                time_t at = timegm(&tm), now = time(NULL);
                t->retry_after_s = at > now ? (uint32_t)(at - now > 86400 ? 86400 : at - now) : 1;
            }
        }
    }
    return len;
}

static void
rdap_start(registry_t *r, void *self, query_t *x)
{
    rdap_t *rdap = self;
    transfer_t *t = query_state(x);
    char url[2048 + AV_DOMAIN_MAX + 16];
    CURL *easy = curl_easy_init();
    if (!easy) {
        registry_fail(r, x, AV_REASON_QUERIER_ERROR, "cannot start an HTTP transfer");
        return;
    }
    snprintf(url, sizeof url, "%sdomain/%s", rdap->base, x->name);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    const char *source = av_daemon_config(r->q->d)->querier.source_address;
    if (source && *source) /* querier.source_address, for budget: per_address */
        curl_easy_setopt(easy, CURLOPT_INTERFACE, source);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)r->cfg->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "availd/" AVAILD_VERSION);
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (r->cfg->ca_file)
        curl_easy_setopt(easy, CURLOPT_CAINFO, r->cfg->ca_file);
    static struct curl_slist accept = { "Accept: application/rdap+json, application/json", NULL };
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, &accept);
    t->easy = easy;
    if (curl_multi_add_handle(rdap->multi, easy) != CURLM_OK)
        registry_fail(r, x, AV_REASON_QUERIER_ERROR, "cannot queue the HTTP transfer");
}

static void
rdap_abort(registry_t *r, void *self, query_t *x)
{
    (void)r;
    rdap_t *rdap = self;
    transfer_t *t = query_state(x);
    if (!t->easy)
        return;
    curl_multi_remove_handle(rdap->multi, t->easy);
    curl_easy_cleanup(t->easy);
    t->easy = NULL;
}

/* What a transfer's failure says to a frontend (its unknown's reason). */
static const char *
failure_reason(CURLcode result)
{
    switch (result) {
    case CURLE_COULDNT_RESOLVE_HOST:
        return AV_REASON_DNS_FAILURE;
    case CURLE_COULDNT_CONNECT:
        return AV_REASON_CONNECT_FAILED;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
        return AV_REASON_TLS_ERROR;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return AV_REASON_CONNECTION_LOST;
    case CURLE_OUT_OF_MEMORY:
        return AV_REASON_QUERIER_ERROR;
    default:
        return AV_REASON_REGISTRY_ERROR;
    }
}

static void
complete(rdap_t *rdap, query_t *x, CURLcode result)
{
    registry_t *r = rdap->registry;
    transfer_t *t = query_state(x);
    long code = 0;
    char why[CURL_ERROR_SIZE + 64];
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
    if (result != CURLE_OK && !(result == CURLE_WRITE_ERROR && x->truncated && code)) {
        if (result == CURLE_OPERATION_TIMEDOUT) {
            registry_fail(r, x, AV_REASON_TIMEOUT, "no complete RDAP reply within the registry's timeout");
            return;
        }
        snprintf(why, sizeof why, "RDAP %sdomain/%s: %s", rdap->base, x->name, curl_easy_strerror(result));
        registry_fail(r, x, failure_reason(result), why);
        return;
    }
    evidence_t e = {
        .kind = EVIDENCE_HTTP, .body = x->reply, .len = x->reply_len, .http_status = code,
        .retry_after_s = t->retry_after_s,
    };
    registry_evidence(r, x, &e);
}

static void
check_done(rdap_t *rdap)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(rdap->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        query_t *x = NULL;
        CURLcode result = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x)
            complete(rdap, x, result);
    }
}

/* ---- setup -------------------------------------------------------------- */

/* The base URL, and a few connections with many streams each (HTTP/2): a
 * TLS connection costs far more than a stream, in handshakes and in memory.
 * A server that speaks only HTTP/1.1 gets at most `connections` queries at
 * a time. */
static int
rdap_configure(registry_t *r, void *self, const av_registry_cfg_t *next)
{
    (void)r;
    rdap_t *rdap = self;
    size_t n = strlen(next->base_url);
    snprintf(rdap->base, sizeof rdap->base, "%s%s", next->base_url, n && next->base_url[n - 1] == '/' ? "" : "/");
    curl_multi_setopt(rdap->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long)(next->connections < next->concurrency ? next->connections : next->concurrency));
    curl_multi_setopt(rdap->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)next->concurrency);
    return 0;
}

static void rdap_close(registry_t *r, void **self_p);

static void *
rdap_open(registry_t *r, const av_registry_cfg_t *cfg)
{
    rdap_t *rdap = calloc(1, sizeof *rdap);
    if (!rdap)
        return NULL;
    rdap->registry = r;
    /* Here rather than at start (libcurl is thread-safe since 7.84): a
     * whois or DAS querier never loads OpenSSL's configuration and keeps
     * several megabytes of its pages out of memory. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto fail;
    rdap->curl_ready = true;
    if (!(rdap->multi = curl_multi_init()))
        goto fail;
    curl_multi_setopt(rdap->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(rdap->multi, CURLMOPT_SOCKETDATA, rdap);
    curl_multi_setopt(rdap->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(rdap->multi, CURLMOPT_TIMERDATA, rdap);
    curl_multi_setopt(rdap->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    rdap_configure(r, rdap, cfg);
    if (sd_event_add_time(av_daemon_loop(r->q->d), &rdap->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, rdap) < 0)
        goto fail;
    sd_event_source_set_enabled(rdap->timer, SD_EVENT_OFF);
    return rdap;
fail:
    av_log_err("registry '%s': cannot set up RDAP transfers", cfg->name);
    rdap_close(r, (void **)&rdap);
    return NULL;
}

static void
rdap_close(registry_t *r, void **self_p)
{
    (void)r;
    rdap_t *rdap = *self_p;
    if (!rdap)
        return;
    *self_p = NULL;
    if (rdap->multi)
        curl_multi_cleanup(rdap->multi);
    sd_event_source_disable_unref(rdap->timer);
    if (rdap->curl_ready)
        curl_global_cleanup();
    free(rdap);
}

const protocol_t rdap_protocol = {
    .name = "rdap",
    .source = AV_SOURCE_RDAP,
    .query_state_size = sizeof(transfer_t),
    .open = rdap_open,
    .configure = rdap_configure,
    .start = rdap_start,
    .abort = rdap_abort,
    .close = rdap_close,
};
