/* The querier's job for one registry: take checks from the dispatcher,
 * send them under the registry's rate limit and concurrency cap, classify
 * the replies with the registry's patterns, back off on a rate-limit reply,
 * and answer every check exactly once. */
#include "querier.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TIMEOUT_SCAN_MS 50
#define RAW_EXCERPT_MAX 4096

/* ---- lists ---------------------------------------------------------------- */

static void
list_push(query_list_t *l, query_t *x)
{
    x->next = NULL;
    x->prev = l->tail;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
    l->count++;
}

static void
list_remove(query_list_t *l, query_t *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        l->tail = x->prev;
    x->prev = x->next = NULL;
    l->count--;
}

static void
query_free(query_t *x)
{
    free(x->request);
    free(x->reply);
    free(x);
}

static uint32_t
credit(const querier_t *q)
{
    uint32_t load = q->waiting.count + q->inflight.count + q->dns_pending.count;
    return load >= q->capacity ? 0 : q->capacity - load;
}

/* ---- answers -------------------------------------------------------------- */

static void
send_answer(querier_t *q, const query_t *x, av_status_t status, const char *reason, const char *pattern)
{
    char raw[RAW_EXCERPT_MAX + 1];
    uint64_t now_us = av_mono_us();
    av_answer_t a = {
        .id = AV_STR(""),
        .name = av_str(x->name),
        .status = status,
        .reason = av_str(reason),
        .registry = av_str(q->registry->name),
        /* Answered without asking (backoff, overload, deadline): no source,
         * and so no timing sample. */
        .source = x->source ? x->source : x->started_us ? q->protocol->source : AV_SOURCE_NONE,
        .at_ms = av_now_ms(),
        .latency_us = x->started_us ? now_us - x->started_us : 0,
        .matched = av_str(pattern),
        .rid = x->rid,
    };
    /* The raw excerpt travels with unknown answers (for audit) and when
     * asked for; registries answer in any encoding, the wire wants UTF-8. */
    uint32_t raw_max = q->registry->raw_bytes;
    if (x->reply_len && raw_max && (status == AV_STATUS_UNKNOWN || x->want_raw)) {
        size_t n = x->reply_len < raw_max ? x->reply_len : raw_max;
        a.raw.len = (uint32_t)av_utf8_sanitize(raw, sizeof raw, x->reply, n);
        a.raw.ptr = raw;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    if (av_encode_answer(&sbuf, &a) == 0 && av_zsock_send_nowait(q->dispatcher, sbuf.data, sbuf.size) == 0)
        (*q->answers[status])++;
    else
        av_report(q->d, AV_LOG_ERR, q->registry->name, "answer_dropped",
                  "could not send the answer for %s to the dispatcher (queue full)", x->name);
    msgpack_sbuffer_destroy(&sbuf);
    /* max_requests counts answers, not checks taken: a querier still
     * looking up its registry's address would otherwise hand back all it
     * took, and its successor the same, without answering any. The stop
     * it may begin hands back what waits; what is in flight finishes. */
    av_daemon_count_work(q->d, 1);
}

static void pump(querier_t *q);
static void pump_once(querier_t *q);
static bool address_settled(querier_t *q, uint64_t now);
static void hand_back(querier_t *q, query_list_t *list);

static void
enter_backoff(querier_t *q, uint32_t seconds, const char *why)
{
    uint64_t now = av_mono_us();
    bool already = q->backoff_until_us > now;
    uint64_t until = now + (uint64_t)seconds * 1000000;
    if (until > q->backoff_until_us)
        q->backoff_until_us = until;
    if (!already) {
        (*q->backoffs)++;
        av_report(q->d, AV_LOG_WARNING, q->registry->name, "rate_limited", "%s: backing off for %u s", why,
                  seconds);
    }
    /* Waiting checks would wait out the whole backoff: answer them now. */
    while (q->waiting.head) {
        query_t *x = q->waiting.head;
        list_remove(&q->waiting, x);
        (*q->rate_limited)++;
        send_answer(q, x, AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED, "backoff");
        query_free(x);
    }
}

void
querier_decide(querier_t *q, query_t *x, av_status_t status, const char *reason, const char *decided_by,
               uint32_t backoff_s)
{
    list_remove(&q->inflight, x);
    q->protocol->abort(q, x);
    if (reason && strcmp(reason, AV_REASON_RATE_LIMITED) == 0) {
        (*q->rate_limited)++;
        send_answer(q, x, status, reason, decided_by);
        enter_backoff(q, backoff_s ? backoff_s : q->registry->backoff_s,
                      "the registry says we exceed its rate limit");
    } else {
        if (reason && strcmp(reason, AV_REASON_UNPARSEABLE) == 0)
            av_report(q->d, AV_LOG_NOTICE, q->registry->name, "unparseable",
                      "no pattern matched the reply for %s (%zu bytes)", x->name, x->reply_len);
        send_answer(q, x, status, reason, decided_by);
    }
    query_free(x);
    pump(q);
}

void
querier_finish(querier_t *q, query_t *x)
{
    av_verdict_t v;
    av_classify(q->classifier, x->reply, x->reply_len, &v);
    querier_decide(q, x, v.status, v.reason, v.pattern, 0);
}

void
querier_fail(querier_t *q, query_t *x, const char *reason, const char *detail)
{
    list_remove(&q->inflight, x);
    q->protocol->abort(q, x);
    if (strcmp(reason, AV_REASON_TIMEOUT) == 0)
        (*q->timeouts)++;
    else
        (*q->registry_errors)++;
    av_report(q->d, AV_LOG_WARNING, q->registry->name, reason, "%s: %s", x->name, detail);
    send_answer(q, x, AV_STATUS_UNKNOWN, reason, NULL);
    query_free(x);
    pump(q);
}

/* ---- sending under the limits ------------------------------------------- */

static bool
take_token(querier_t *q, uint64_t now, uint64_t *wait_us)
{
    const av_registry_cfg_t *r = q->registry;
    if (r->rate_queries == 0)
        return true;
    double per_us = (double)r->rate_queries / ((double)r->rate_period_s * 1e6);
    q->tokens += (double)(now - q->tokens_at_us) * per_us;
    if (q->tokens > r->rate_burst)
        q->tokens = r->rate_burst;
    q->tokens_at_us = now;
    if (q->tokens >= 1) {
        q->tokens -= 1;
        return true;
    }
    *wait_us = (uint64_t)((1 - q->tokens) / per_us) + 1;
    return false;
}

static void
arm_pump(querier_t *q, uint64_t at_us)
{
    sd_event_source_set_time(q->pump_timer, at_us);
    sd_event_source_set_enabled(q->pump_timer, SD_EVENT_ONESHOT);
}

/* Sends waiting checks while the limits allow. Finishing a query calls
 * pump again; the `pumping` flag turns that into another turn of this loop
 * instead of a recursion as deep as the queue. */
static void
pump(querier_t *q)
{
    if (q->pumping)
        return;
    if (av_daemon_stopping(q->d)) {
        if (q->inflight.count == 0)
            av_daemon_drained(q->d);
        return;
    }
    q->pumping = true;
    pump_once(q);
    q->pumping = false;
}

static void
pump_once(querier_t *q)
{
    uint64_t now = av_mono_us();
    if (q->backoff_until_us > now) {
        if (q->waiting.head)
            arm_pump(q, q->backoff_until_us);
        return;
    }
    if (q->waiting.head && !address_settled(q, now))
        return;
    while (q->waiting.head && q->inflight.count < q->registry->concurrency) {
        uint64_t wait_us = 0;
        if (!take_token(q, now, &wait_us)) {
            (*q->rate_limit_waits)++;
            arm_pump(q, now + wait_us);
            return;
        }
        query_t *x = q->waiting.head;
        list_remove(&q->waiting, x);
        x->started_us = now;
        x->deadline_us = now + (uint64_t)q->registry->timeout_ms * 1000;
        list_push(&q->inflight, x);
        if (!q->addr_ready)
            querier_fail(q, x, AV_REASON_REGISTRY_ERROR, q->addr_error);
        else
            q->protocol->start(q, x); /* on failure it fails the query */
        now = av_mono_us();
    }
}

static int
on_pump(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    pump(userdata);
    return 0;
}

/* In-flight queries are in deadline order (one timeout per registry) and
 * waiting ones nearly so (see querier_take): a scan stops at the first one
 * still in time. */
static void
on_timeout_scan(av_daemon_t *d, void *arg)
{
    (void)d;
    querier_t *q = arg;
    uint64_t now = av_mono_us();
    while (q->inflight.head && q->inflight.head->deadline_us <= now)
        querier_fail(q, q->inflight.head, AV_REASON_TIMEOUT, "no complete reply within the registry's timeout");
    while (q->waiting.head && q->waiting.head->deadline_us <= now) {
        query_t *x = q->waiting.head;
        list_remove(&q->waiting, x);
        send_answer(q, x, AV_STATUS_UNKNOWN, AV_REASON_DEADLINE, NULL);
        query_free(x);
    }
}

void
querier_take(querier_t *q, const av_check_t *check)
{
    const char *reason = NULL;
    query_t *x = calloc(1, sizeof *x);
    if (!x) {
        av_log_err("out of memory for a check");
        return;
    }
    x->q = q;
    x->fd = -1;
    x->poll.fd = -1;
    x->rid = check->rid;
    x->want_raw = check->raw;
    x->arrived_us = av_mono_us();
    /* A check may wait (for a slot or a token) as long as its asker does;
     * the waiting list is scanned from its head, so a check behind one
     * with a later deadline is answered a little late, never early. */
    x->deadline_us = x->arrived_us + (uint64_t)(check->deadline_ms ? check->deadline_ms : q->registry->timeout_ms) * 1000;
    (*q->checks)++;
    if (av_name_normalize(check->name.ptr, check->name.len, x->name, &reason) < 0) {
        /* The dispatcher normalises; a name that fails here came from a
         * daemon that does not. Answer rather than drop. */
        (*q->malformed)++;
        av_str_copy(x->name, sizeof x->name, check->name);
        send_answer(q, x, AV_STATUS_INVALID, reason, NULL);
        query_free(x);
        return;
    }
    if (av_daemon_stopping(q->d)) {
        /* Sent before the dispatcher read our bye: hand it back too. */
        query_list_t one = { NULL, NULL, 0 };
        list_push(&one, x);
        hand_back(q, &one);
        return;
    }
    if (credit(q) == 0) {
        send_answer(q, x, AV_STATUS_UNKNOWN, AV_REASON_OVERLOADED, NULL);
        query_free(x);
        return;
    }
    if (q->backoff_until_us > x->arrived_us) {
        (*q->rate_limited)++;
        send_answer(q, x, AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED, "backoff");
        query_free(x);
        return;
    }
    if (q->registry->dns_precheck && q->dns) {
        list_push(&q->dns_pending, x);
        dns_precheck(q, x);
    } else {
        list_push(&q->waiting, x);
        pump(q);
    }
}

void
querier_dns_done(querier_t *q, query_t *x, bool delegated)
{
    list_remove(&q->dns_pending, x);
    if (delegated) {
        /* Registered, and the registry's quota not spent. */
        x->source = AV_SOURCE_DNS;
        send_answer(q, x, AV_STATUS_REGISTERED, NULL, "dns: delegated");
        query_free(x);
        return;
    }
    x->started_us = 0; /* the registry's round trip is timed from when it is asked */
    list_push(&q->waiting, x);
    pump(q);
}

/* ---- the registry's address ------------------------------------------- */

/* After a failed lookup, queries fail at once for this long before the
 * next try, so an unreachable resolver is not asked once per check. */
#define RESOLVE_RETRY_US (10 * 1000 * 1000ULL)

/* The address is looked up (c-ares, on the loop) when the first query needs
 * it, not at start: a constellation started with registries nobody asks
 * (the default table) sends nothing anywhere, not even DNS. Returns true
 * when the queries may go on: the address is known, or the lookup failed
 * lately (they fail with its reason). */
static bool
address_settled(querier_t *q, uint64_t now)
{
    if (q->addr_ready)
        return true;
    if (q->resolving)
        return false; /* querier_address pumps again */
    if (q->addr_tried_us && now - q->addr_tried_us < RESOLVE_RETRY_US)
        return true;
    q->addr_tried_us = now;
    q->resolving = true;
    /* An address written as one needs no lookup (c-ares would answer it on
     * its next timer tick only). */
    char port[16];
    struct addrinfo numeric = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM }, *res;
    snprintf(port, sizeof port, "%u", q->registry->port);
    if (getaddrinfo(q->registry->host, port, &numeric, &res) == 0) {
        querier_address(q, res->ai_addr, res->ai_addrlen, NULL);
        freeaddrinfo(res);
    } else if (dns_resolve(q, q->registry->host, q->registry->port) < 0) {
        querier_address(q, NULL, 0, "cannot set up the resolver");
    }
    return !q->resolving;
}

void
querier_address(querier_t *q, const struct sockaddr *addr, socklen_t len, const char *error)
{
    q->resolving = false;
    if (addr) {
        memcpy(&q->addr, addr, len);
        q->addr_len = len;
        q->addr_ready = true;
    } else {
        snprintf(q->addr_error, sizeof q->addr_error, "cannot resolve %s: %s", q->registry->host, error);
        av_report(q->d, AV_LOG_ERR, q->registry->name, "resolve_failed", "%s", q->addr_error);
    }
    pump(q);
}

/* ---- the dispatcher link --------------------------------------------- */

static void
send_credit(querier_t *q, av_msg_type_t type)
{
    av_ready_t r = { .registry = av_str(q->registry->name), .credit = credit(q), .pid = (uint32_t)getpid() };
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    if (av_encode_ready(&sbuf, type, &r) == 0)
        av_zsock_send_nowait(q->dispatcher, sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy(&sbuf);
}

static void
on_heartbeat(av_daemon_t *d, void *arg)
{
    (void)d;
    querier_t *q = arg;
    if (!av_daemon_stopping(q->d))
        send_credit(q, AV_MSG_HEARTBEAT);
}

static bool
on_dispatcher(av_daemon_t *d, zsock_t *sock, void *arg)
{
    querier_t *q = arg;
    zframe_t *frame = zframe_recv(sock);
    av_msg_t msg;
    if (!frame)
        return false;
    av_msg_init(&msg);
    int rc = av_msg_decode(&msg, zframe_data(frame), zframe_size(frame));
    if (rc == 0 && msg.type == AV_MSG_CHECK && msg.u.check.n_names == 0) {
        querier_take(q, &msg.u.check);
    } else if (rc == 0 && msg.type == AV_MSG_HEARTBEAT) {
        /* the dispatcher is there; nothing to do */
    } else {
        char why[128];
        (*q->malformed)++;
        av_report(d, AV_LOG_WARNING, q->registry->name, "malformed_message",
                  "dropped a message from the dispatcher: %s",
                  rc ? av_msg_strerror(&msg, rc, why, sizeof why) : av_msg_type_name(msg.type));
    }
    av_msg_release(&msg);
    zframe_destroy(&frame);
    return true;
}

/* ---- lifecycle ---------------------------------------------------------- */

static int
configure(querier_t *q, const av_registry_cfg_t *r)
{
    char err[256];
    av_classifier_t *classifier = av_classifier_new(r, err, sizeof err);
    if (!classifier) {
        av_log_err("%s", err);
        return -1;
    }
    av_classifier_destroy(&q->classifier);
    q->classifier = classifier;
    q->registry = r;
    q->protocol = r->protocol == AV_PROTO_RDAP ? &rdap_protocol
                  : r->protocol == AV_PROTO_DAS ? &das_protocol
                                                : &whois_protocol;
    q->capacity = r->concurrency + r->queue;
    q->tokens = r->rate_burst;
    q->tokens_at_us = av_mono_us();
    if (r->dns_precheck && !q->dns && q->d && dns_open(q) < 0)
        return -1;
    if (r->protocol == AV_PROTO_RDAP) {
        /* libcurl resolves the base URL's host itself, off the loop. */
        q->addr_ready = true;
        if (q->rdap)
            rdap_set_base(q, r->base_url);
    } else {
        /* looked up again when next needed, for the host may have changed */
        dns_resolver_close(q);
        q->resolving = false;
        q->addr_ready = false;
        q->addr_tried_us = 0;
    }
    return 0;
}

/* The instance is REGISTRY, or REGISTRY.N for the N-th querier of a
 * registry with `queriers: N` (registry names hold no dot). */
const av_registry_cfg_t *
querier_registry(const av_config_t *cfg, const char *instance)
{
    char name[AV_REGISTRY_MAX + 1];
    size_t n = strcspn(instance, ".");
    if (n > AV_REGISTRY_MAX)
        return NULL;
    memcpy(name, instance, n);
    name[n] = '\0';
    return av_config_registry(cfg, name);
}

static uint64_t
gauge_inflight(av_daemon_t *d)
{
    return ((querier_t *)av_daemon_state(d))->inflight.count;
}

static uint64_t
gauge_waiting(av_daemon_t *d)
{
    return ((querier_t *)av_daemon_state(d))->waiting.count;
}

static uint64_t
gauge_dns_pending(av_daemon_t *d)
{
    return ((querier_t *)av_daemon_state(d))->dns_pending.count;
}

static uint64_t
gauge_credit(av_daemon_t *d)
{
    return credit(av_daemon_state(d));
}

static uint64_t
gauge_backoff_ms(av_daemon_t *d)
{
    querier_t *q = av_daemon_state(d);
    uint64_t now = av_mono_us();
    return q->backoff_until_us > now ? (q->backoff_until_us - now) / 1000 : 0;
}

int
querier_start(querier_t *q, av_daemon_t *d)
{
    const av_config_t *cfg = av_daemon_config(d);
    const av_registry_cfg_t *r = querier_registry(cfg, av_daemon_instance(d));
    q->d = d;
    if (!r) {
        av_log_err("no registry for instance '%s' in %s", av_daemon_instance(d), cfg->path);
        return -1;
    }
    q->checks = av_daemon_counter(d, "checks");
    for (int s = 0; s < AV_STATUS_COUNT; s++) {
        char name[32];
        snprintf(name, sizeof name, "answered_%s", av_status_name((av_status_t)s));
        q->answers[s] = av_daemon_counter(d, name);
    }
    q->timeouts = av_daemon_counter(d, "timeouts");
    q->registry_errors = av_daemon_counter(d, "registry_errors");
    q->rate_limited = av_daemon_counter(d, "rate_limited");
    q->backoffs = av_daemon_counter(d, "backoffs");
    q->rate_limit_waits = av_daemon_counter(d, "rate_limit_waits");
    q->malformed = av_daemon_counter(d, "malformed");
    q->handed_back = av_daemon_counter(d, "handed_back");
    av_daemon_gauge(d, "inflight", gauge_inflight);
    av_daemon_gauge(d, "waiting", gauge_waiting);
    av_daemon_gauge(d, "credit", gauge_credit);
    av_daemon_gauge(d, "backoff_ms", gauge_backoff_ms);
    av_daemon_gauge(d, "dns_pending", gauge_dns_pending);
    if (!(q->poller = av_poller_new(av_daemon_loop(d))) || configure(q, r) < 0)
        return -1;
    if (r->protocol == AV_PROTO_RDAP && rdap_open(q) < 0) {
        av_log_err("registry '%s': cannot set up RDAP transfers", r->name);
        return -1;
    }
    if (sd_event_add_time(av_daemon_loop(d), &q->pump_timer, CLOCK_MONOTONIC, 0, 1000, on_pump, q) < 0)
        return -1;
    sd_event_source_set_enabled(q->pump_timer, SD_EVENT_OFF);
    q->timeout_timer = av_daemon_every(d, TIMEOUT_SCAN_MS, on_timeout_scan, q);
    q->heartbeat_timer = av_daemon_every(d, cfg->dispatcher.heartbeat_ms, on_heartbeat, q);
    if (!q->timeout_timer || !q->heartbeat_timer)
        return -1;
    /* However busy the registry sockets keep the loop, the dispatcher must
     * hear from us, or it thinks we are dead. */
    sd_event_source_set_priority(q->heartbeat_timer, SD_EVENT_PRIORITY_IMPORTANT);
    q->dispatcher = av_daemon_connect(d, ZMQ_DEALER, cfg->endpoints.dispatcher_workers);
    if (!q->dispatcher || av_daemon_watch(d, q->dispatcher, on_dispatcher, q) < 0)
        return -1;
    send_credit(q, AV_MSG_READY);
    if (r->protocol == AV_PROTO_RDAP)
        av_daemon_status_text(d, "querying %s (rdap %s)", r->name, r->base_url);
    else
        av_daemon_status_text(d, "querying %s (%s %s:%u)", r->name, q->protocol->name, r->host, r->port);
    return 0;
}

int
querier_reload(querier_t *q, const av_registry_cfg_t *next)
{
    if (!next) {
        av_log_err("registry '%s' is gone from the new configuration; keeping the old one",
                   q->registry->name);
        return -1;
    }
    if (next->protocol != q->registry->protocol) {
        av_log_err("registry '%s' changed protocol: that needs a restart", next->name);
        return -1;
    }
    return configure(q, next);
}

static void
hand_back(querier_t *q, query_list_t *list)
{
    uint32_t n = 0;
    uint64_t *ids = calloc(list->count ? list->count : 1, sizeof *ids);
    if (!ids)
        return;
    while (list->head) {
        query_t *x = list->head;
        list_remove(list, x);
        q->protocol->abort(q, x);
        ids[n++] = x->rid;
        query_free(x);
    }
    if (n) {
        msgpack_sbuffer sbuf;
        msgpack_sbuffer_init(&sbuf);
        for (uint32_t off = 0; off < n; off += AV_HANDBACK_MAX) {
            uint32_t chunk = n - off < AV_HANDBACK_MAX ? n - off : AV_HANDBACK_MAX;
            msgpack_sbuffer_clear(&sbuf);
            if (av_encode_bye(&sbuf, av_str(q->registry->name), ids + off, chunk) == 0)
                av_zsock_send_nowait(q->dispatcher, sbuf.data, sbuf.size);
        }
        msgpack_sbuffer_destroy(&sbuf);
        *q->handed_back += n;
        av_log_notice("handed %u check%s back to the dispatcher", n, n == 1 ? "" : "s");
    }
    free(ids);
}

void
querier_stop(querier_t *q)
{
    /* Checks not yet sent go back to the dispatcher now, to another
     * querier of the registry; those in flight finish here. */
    hand_back(q, &q->waiting);
    if (q->inflight.count == 0)
        av_daemon_drained(q->d);
}

void
querier_close(querier_t *q)
{
    dns_close(q); /* lookups still pending end up waiting: handed back below */
    dns_resolver_close(q);
    if (q->dispatcher) {
        hand_back(q, &q->waiting);
        hand_back(q, &q->inflight); /* the drain ran out: these too */
        av_daemon_unwatch(q->d, q->dispatcher);
    }
    sd_event_source_disable_unref(q->pump_timer);
    sd_event_source_disable_unref(q->timeout_timer);
    sd_event_source_disable_unref(q->heartbeat_timer);
    zsock_destroy(&q->dispatcher);
    rdap_close(q);
    av_poller_destroy(&q->poller);
    av_classifier_destroy(&q->classifier);
}
