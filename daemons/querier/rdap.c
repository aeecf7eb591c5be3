/* RDAP (RFC 7480, 9082, 9083): GET BASE/domain/NAME over HTTPS with libcurl's
 * multi interface on the querier's loop (sockets in its av_poller, curl's
 * timer an sd-event timer), connections reused and HTTP/2 multiplexed where
 * the server offers it, TLS verified. 200 is registered (or reserved, or a
 * redemption/pending-delete state, which stays registered), 404 available,
 * 429 and 503 rate limited with Retry-After honoured, anything else unknown. */
#include "querier.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct rdap {
    bool curl_ready;           /* curl_global_init succeeded: cleanup owed */
    CURLM *multi;
    sd_event_source *timer;
    char base[2048];           /* base URL, ending in "/" */
};

typedef struct {
    av_poll_handle_t poll;
    querier_t *q;
    curl_socket_t fd;
} rdap_socket_t;

static void check_done(querier_t *q);

/* ---- curl on our loop ----------------------------------------------------- */

static void
on_socket_ready(void *arg, uint32_t events)
{
    rdap_socket_t *rs = arg;
    querier_t *q = rs->q;
    int flags = (events & EPOLLIN ? CURL_CSELECT_IN : 0) | (events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    int running;
    curl_multi_socket_action(q->rdap->multi, rs->fd, flags, &running);
    check_done(q); /* rs may be gone now */
}

static int
on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    querier_t *q = userp;
    rdap_socket_t *rs = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (rs) {
            av_poller_del(q->poller, &rs->poll);
            free(rs);
            curl_multi_assign(q->rdap->multi, fd, NULL);
        }
        return 0;
    }
    uint32_t events = (what == CURL_POLL_IN || what == CURL_POLL_INOUT ? EPOLLIN : 0) |
                      (what == CURL_POLL_OUT || what == CURL_POLL_INOUT ? EPOLLOUT : 0);
    if (!rs) {
        if (!(rs = calloc(1, sizeof *rs)))
            return -1;
        rs->q = q;
        rs->fd = fd;
        if (av_poller_add(q->poller, &rs->poll, fd, events, on_socket_ready, rs) < 0) {
            free(rs);
            return -1;
        }
        curl_multi_assign(q->rdap->multi, fd, rs);
    } else {
        av_poller_mod(q->poller, &rs->poll, events);
    }
    return 0;
}

static int
on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    querier_t *q = userdata;
    int running;
    curl_multi_socket_action(q->rdap->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(q);
    return 0;
}

static int
on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    querier_t *q = userp;
    if (timeout_ms < 0)
        return sd_event_source_set_enabled(q->rdap->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
    /* 0 means "now"; the next loop turn is soon enough. */
    sd_event_source_set_time(q->rdap->timer, av_mono_us() + (uint64_t)timeout_ms * 1000 + 1);
    return sd_event_source_set_enabled(q->rdap->timer, SD_EVENT_ONESHOT) < 0 ? -1 : 0;
}

/* ---- one transfer --------------------------------------------------------- */

static size_t
on_body(char *data, size_t size, size_t n, void *userp)
{
    query_t *x = userp;
    size_t len = size * n, cap = x->q->registry->max_reply_bytes;
    if (x->reply_len + len > cap) {
        x->truncated = true; /* past the cap: stop the transfer; the status code still decides */
        return 0;
    }
    if (x->reply_len + len > x->reply_cap) {
        size_t grown = x->reply_cap ? x->reply_cap : 1024;
        while (grown < x->reply_len + len)
            grown *= 2;
        if (grown > cap)
            grown = cap;
        char *buf = realloc(x->reply, grown);
        if (!buf)
            return 0;
        x->reply = buf;
        x->reply_cap = grown;
    }
    memcpy(x->reply + x->reply_len, data, len);
    x->reply_len += len;
    return len;
}

/* Retry-After: seconds, or an HTTP date (RFC 9110 10.2.3). */
static size_t
on_header(char *data, size_t size, size_t n, void *userp)
{
    query_t *x = userp;
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
            x->retry_after_s = s > 86400 ? 86400 : (uint32_t)s;
        } else {
            struct tm tm;
            memset(&tm, 0, sizeof tm);
            if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
                time_t at = timegm(&tm), now = time(NULL);
                x->retry_after_s = at > now ? (uint32_t)(at - now > 86400 ? 86400 : at - now) : 1;
            }
        }
    }
    return len;
}

static int
rdap_start(querier_t *q, query_t *x)
{
    char url[2048 + AV_DOMAIN_MAX + 16];
    CURL *easy = curl_easy_init();
    if (!easy) {
        querier_fail(q, x, AV_REASON_REGISTRY_ERROR, "cannot start an HTTP transfer");
        return -1;
    }
    snprintf(url, sizeof url, "%sdomain/%s", q->rdap->base, x->name);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)q->registry->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "availd/" AVAILD_VERSION);
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (q->registry->ca_file)
        curl_easy_setopt(easy, CURLOPT_CAINFO, q->registry->ca_file);
    static struct curl_slist accept = { "Accept: application/rdap+json, application/json", NULL };
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, &accept);
    x->http = easy;
    if (curl_multi_add_handle(q->rdap->multi, easy) != CURLM_OK) {
        querier_fail(q, x, AV_REASON_REGISTRY_ERROR, "cannot queue the HTTP transfer");
        return -1;
    }
    return 0;
}

static void
rdap_abort(querier_t *q, query_t *x)
{
    if (!x->http)
        return;
    curl_multi_remove_handle(q->rdap->multi, x->http);
    curl_easy_cleanup(x->http);
    x->http = NULL;
}

/* The RFC 8056 statuses of a 200 reply: names in redemption or pending
 * delete stay registered; a registry's "reserved" status is reserved. */
static av_status_t
status_of(const query_t *x, const char **decided_by)
{
    json_error_t err;
    av_status_t status = AV_STATUS_REGISTERED;
    *decided_by = "rdap: 200";
    json_t *root = x->reply_len ? json_loadb(x->reply, x->reply_len, 0, &err) : NULL;
    json_t *list = root ? json_object_get(root, "status") : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        const char *s = json_string_value(v);
        if (!s)
            continue;
        if (strcasecmp(s, "reserved") == 0 || strcasecmp(s, "blocked") == 0) {
            status = AV_STATUS_RESERVED;
            *decided_by = "rdap: status reserved";
        } else if (strcasecmp(s, "redemption period") == 0 || strcasecmp(s, "pending delete") == 0 ||
                   strcasecmp(s, "pending restore") == 0) {
            *decided_by = "rdap: status in redemption or pending delete";
        }
    }
    json_decref(root);
    return status;
}

static void
complete(querier_t *q, query_t *x, CURLcode result)
{
    long code = 0;
    char why[CURL_ERROR_SIZE + 64];
    curl_easy_getinfo(x->http, CURLINFO_RESPONSE_CODE, &code);
    if (result != CURLE_OK && !(result == CURLE_WRITE_ERROR && x->truncated && code)) {
        if (result == CURLE_OPERATION_TIMEDOUT) {
            querier_fail(q, x, AV_REASON_TIMEOUT, "no complete RDAP reply within the registry's timeout");
            return;
        }
        snprintf(why, sizeof why, "RDAP %sdomain/%s: %s", q->rdap->base, x->name, curl_easy_strerror(result));
        querier_fail(q, x, AV_REASON_REGISTRY_ERROR, why);
        return;
    }
    const char *decided_by;
    switch (code) {
    case 200: {
        av_status_t status = status_of(x, &decided_by);
        querier_decide(q, x, status, NULL, decided_by, 0);
        return;
    }
    case 404:
        querier_decide(q, x, AV_STATUS_AVAILABLE, NULL, "rdap: 404", 0);
        return;
    case 429:
    case 503:
        querier_decide(q, x, AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED, code == 429 ? "rdap: 429" : "rdap: 503",
                       x->retry_after_s);
        return;
    default:
        snprintf(why, sizeof why, "RDAP %sdomain/%s: HTTP %ld", q->rdap->base, x->name, code);
        querier_fail(q, x, AV_REASON_REGISTRY_ERROR, why);
    }
}

static void
check_done(querier_t *q)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(q->rdap->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        query_t *x = NULL;
        CURLcode result = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x)
            complete(q, x, result);
    }
}

/* ---- setup -------------------------------------------------------------- */

void
rdap_set_base(querier_t *q, const char *base_url)
{
    size_t n = strlen(base_url);
    snprintf(q->rdap->base, sizeof q->rdap->base, "%s%s", base_url, n && base_url[n - 1] == '/' ? "" : "/");
}

int
rdap_open(querier_t *q)
{
    const av_registry_cfg_t *r = q->registry;
    if (!(q->rdap = calloc(1, sizeof *q->rdap)))
        return -1;
    /* Here rather than at start (libcurl is thread-safe since 7.84): a
     * whois or DAS querier never loads OpenSSL's configuration and keeps
     * several megabytes of its pages out of memory. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    q->rdap->curl_ready = true;
    rdap_set_base(q, r->base_url);
    if (!(q->rdap->multi = curl_multi_init()))
        return -1;
    curl_multi_setopt(q->rdap->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(q->rdap->multi, CURLMOPT_SOCKETDATA, q);
    curl_multi_setopt(q->rdap->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(q->rdap->multi, CURLMOPT_TIMERDATA, q);
    curl_multi_setopt(q->rdap->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* A few connections, many streams each (HTTP/2): a TLS connection costs
     * far more than a stream, in handshakes and in memory. A server that
     * speaks only HTTP/1.1 gets at most this many queries at a time. */
    curl_multi_setopt(q->rdap->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long)(r->connections < r->concurrency ? r->connections : r->concurrency));
    curl_multi_setopt(q->rdap->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)r->concurrency);
    if (sd_event_add_time(av_daemon_loop(q->d), &q->rdap->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, q) < 0)
        return -1;
    sd_event_source_set_enabled(q->rdap->timer, SD_EVENT_OFF);
    return 0;
}

void
rdap_close(querier_t *q)
{
    if (!q->rdap)
        return;
    if (q->rdap->multi)
        curl_multi_cleanup(q->rdap->multi);
    sd_event_source_disable_unref(q->rdap->timer);
    if (q->rdap->curl_ready)
        curl_global_cleanup();
    free(q->rdap);
    q->rdap = NULL;
}

const protocol_t rdap_protocol = {
    .name = "rdap",
    .source = AV_SOURCE_RDAP,
    .start = rdap_start,
    .abort = rdap_abort,
};
