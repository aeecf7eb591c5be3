/* One registry's checks from arrival to answer: asked in the DNS first when
 * the registry has a pre-check, then waiting for a slot (concurrency) and a
 * token (rate limit), in flight with the registry's protocol, and answered
 * with the verdict on what the protocol observed. A rate-limit verdict
 * pauses the registry (backoff) and answers what waits at once. */
#include "querier.h"

#include <stdlib.h>
#include <string.h>

#define RAW_EXCERPT_MAX 4096
#define REPLY_INITIAL_BYTES 1024

/* ---- lists ---------------------------------------------------------------- */

static void
list_init(query_list_t *l)
{
    TAILQ_INIT(&l->head);
    l->count = 0;
}

static void
list_push(query_list_t *l, query_t *x)
{
    TAILQ_INSERT_TAIL(&l->head, x, link);
    x->list = l;
    l->count++;
}

static void
list_remove(query_t *x)
{
    if (!x->list)
        return;
    TAILQ_REMOVE(&x->list->head, x, link);
    x->list->count--;
    x->list = NULL;
}

/* ---- queries -------------------------------------------------------------- */

query_t *
registry_query_new(registry_t *r, const av_check_t *check)
{
    query_t *x = calloc(1, sizeof *x + r->protocol->query_state_size);
    if (!x)
        return NULL;
    x->registry = r;
    x->rid = check->rid;
    x->want_raw = check->raw;
    x->arrived_us = av_mono_us();
    /* A check may wait (for a slot or a token) as long as its asker does;
     * the waiting list is scanned from its head, so a check behind one
     * with a later deadline is answered a little late, never early. */
    x->deadline_us =
        x->arrived_us + (uint64_t)(check->deadline_ms ? check->deadline_ms : r->cfg->timeout_ms) * 1000;
    return x;
}

/* Releases what a protocol holds for x and takes it out of its list. */
static void
release(registry_t *r, query_t *x)
{
    if (x->list == &r->inflight)
        r->protocol->abort(r, r->protocol_state, x);
    else if (x->list == &r->prechecking && r->precheck)
        r->precheck->abort(r, r->precheck_state, x);
    list_remove(x);
}

void
registry_query_free(registry_t *r, query_t *x)
{
    release(r, x);
    free(x->reply);
    free(x);
}

char *
query_reply_room(query_t *x, size_t *room)
{
    size_t cap = x->registry->cfg->max_reply_bytes;
    if (x->reply_len >= cap) {
        x->truncated = true;
        return NULL;
    }
    if (x->reply_len == x->reply_cap) {
        size_t grown = x->reply_cap ? x->reply_cap * 2 : REPLY_INITIAL_BYTES;
        if (grown > cap)
            grown = cap;
        char *buf = realloc(x->reply, grown);
        if (!buf)
            return NULL;
        x->reply = buf;
        x->reply_cap = grown;
    }
    *room = x->reply_cap - x->reply_len;
    return x->reply + x->reply_len;
}

bool
query_reply_append(query_t *x, const char *data, size_t len)
{
    while (len) {
        size_t room;
        char *at = query_reply_room(x, &room);
        if (!at)
            return false;
        size_t n = len < room ? len : room;
        memcpy(at, data, n);
        x->reply_len += n;
        data += n;
        len -= n;
    }
    return true;
}

/* ---- answers -------------------------------------------------------------- */

static void
answer(registry_t *r, query_t *x, av_status_t status, const char *reason, const char *decided_by,
       av_source_t source)
{
    char raw[RAW_EXCERPT_MAX + 1];
    av_answer_t a = {
        .id = AV_STR(""),
        .name = av_str(x->name),
        .status = status,
        .reason = av_str(reason),
        .registry = av_str(r->cfg->name),
        .source = source,
        .at_ms = av_now_ms(),
        .latency_us = x->started_us ? av_mono_us() - x->started_us : 0,
        .matched = av_str(decided_by),
        .rid = x->rid,
    };
    /* The raw excerpt travels with unknown answers (for audit) and when
     * asked for; registries answer in any encoding, the wire wants UTF-8. */
    uint32_t raw_max = r->cfg->raw_bytes;
    if (x->reply_len && raw_max && (status == AV_STATUS_UNKNOWN || x->want_raw)) {
        size_t n = x->reply_len < raw_max ? x->reply_len : raw_max;
        a.raw.len = (uint32_t)av_utf8_sanitize(raw, sizeof raw, x->reply, n);
        a.raw.ptr = raw;
    }
    querier_answer(r->q, x, &a);
}

/* An answer availd makes without asking (backoff, overload, deadline): no
 * source, and so no timing sample. */
static void
answer_unasked(registry_t *r, query_t *x, const char *reason, const char *decided_by)
{
    const verdict_reason_t *row = verdict_reason(reason);
    if (row && row->counter)
        (*querier_counter(r->q, row->counter))++;
    answer(r, x, AV_STATUS_UNKNOWN, reason, decided_by, AV_SOURCE_NONE);
}

static void
enter_backoff(registry_t *r, uint32_t seconds, const char *why)
{
    if (budget_backoff(&r->budget, av_mono_us(), seconds)) {
        (*r->q->backoffs)++;
        av_report(r->q->d, AV_LOG_WARNING, r->cfg->name, AV_REASON_RATE_LIMITED, "%s: backing off for %u s", why,
                  seconds);
    }
    /* Waiting checks would wait out the whole backoff: answer them now. */
    query_t *x;
    while ((x = TAILQ_FIRST(&r->waiting.head))) {
        list_remove(x);
        answer_unasked(r, x, AV_REASON_RATE_LIMITED, "backoff");
        registry_query_free(r, x);
    }
}

/* What the log and the error event say about an unknown verdict. */
static void
report_unknown(registry_t *r, const query_t *x, const evidence_t *e, const verdict_t *v, int level)
{
    char what[160];
    switch (e->kind) {
    case EVIDENCE_FAILURE:
        snprintf(what, sizeof what, "%s", e->detail ? e->detail : "no reply");
        break;
    case EVIDENCE_HTTP:
        snprintf(what, sizeof what, "HTTP %ld", e->http_status);
        break;
    default:
        if (v->by_pattern)
            snprintf(what, sizeof what, "the reply matched %s pattern '%s'", av_pattern_kind_name(v->kind),
                     v->decided_by);
        else
            snprintf(what, sizeof what, "no pattern matched the reply (%zu bytes)", x->reply_len);
    }
    av_report(r->q->d, level, r->cfg->name, v->reason, "%s: %s", x->name, what);
}

void
registry_evidence(registry_t *r, query_t *x, const evidence_t *e)
{
    verdict_t v;
    bool prechecked = x->list == &r->prechecking;
    release(r, x);
    verdict_decide(r->rules, e, &v);
    if (prechecked) {
        x->dns = e->dns;
        (*(v.final ? r->q->dns_delegated : r->q->dns_not_delegated))++;
        if (!v.final) {
            x->started_us = 0; /* the registry's round trip is timed from when it is asked */
            list_push(&r->waiting, x);
            registry_pump(r);
            return;
        }
    }
    av_source_t source = v.source ? v.source : r->protocol->source;
    if (v.status == AV_STATUS_UNKNOWN) {
        const verdict_reason_t *row = verdict_reason(v.reason);
        if (row && row->counter)
            (*querier_counter(r->q, row->counter))++;
        if (row && row->report_level >= 0)
            report_unknown(r, x, e, &v, row->report_level);
        answer(r, x, v.status, v.reason, v.decided_by, source);
        if (row && row->backs_off)
            enter_backoff(r, v.backoff_s ? v.backoff_s : r->cfg->backoff_s,
                          "the registry says we exceed its rate limit");
    } else {
        answer(r, x, v.status, v.reason, v.decided_by, source);
    }
    registry_query_free(r, x);
    registry_pump(r);
}

void
registry_fail(registry_t *r, query_t *x, const char *reason, const char *detail)
{
    evidence_t e = { .kind = EVIDENCE_FAILURE, .failure = reason, .detail = detail };
    registry_evidence(r, x, &e);
}

/* ---- sending under the budget -------------------------------------------- */

static void
arm_pump(registry_t *r, uint64_t at_us)
{
    sd_event_source_set_time(r->pump_timer, at_us);
    sd_event_source_set_enabled(r->pump_timer, SD_EVENT_ONESHOT);
}

static void
pump_once(registry_t *r)
{
    uint64_t now = av_mono_us();
    uint64_t pause = budget_backoff_left_us(&r->budget, now);
    if (pause) {
        if (r->waiting.count)
            arm_pump(r, now + pause);
        return;
    }
    if (r->waiting.count && !r->protocol_state && !(r->protocol_state = r->protocol->open(r, r->cfg))) {
        /* it said why; what waits is answered, the next check tries again */
        query_t *x;
        while ((x = TAILQ_FIRST(&r->waiting.head))) {
            list_remove(x);
            answer_unasked(r, x, AV_REASON_QUERIER_ERROR, NULL);
            registry_query_free(r, x);
        }
        return;
    }
    if (r->waiting.count && r->protocol->ready && !r->protocol->ready(r, r->protocol_state))
        return; /* it pumps again when ready */
    while (r->waiting.count && r->inflight.count < r->cfg->concurrency) {
        uint64_t wait_us = 0;
        if (!budget_take(&r->budget, now, &wait_us)) {
            (*r->q->rate_limit_waits)++;
            arm_pump(r, now + wait_us);
            return;
        }
        query_t *x = TAILQ_FIRST(&r->waiting.head);
        list_remove(x);
        x->started_us = now;
        x->deadline_us = now + (uint64_t)r->cfg->timeout_ms * 1000;
        list_push(&r->inflight, x);
        r->protocol->start(r, r->protocol_state, x); /* a failure answers x at once */
        now = av_mono_us();
    }
}

/* Finishing a query pumps again; the `pumping` flag turns that into another
 * turn of this loop instead of a recursion as deep as the queue. */
void
registry_pump(registry_t *r)
{
    if (r->pumping || r->closing)
        return;
    if (av_daemon_stopping(r->q->d)) {
        if (querier_idle(r->q))
            av_daemon_drained(r->q->d);
        return;
    }
    r->pumping = true;
    pump_once(r);
    r->pumping = false;
}

static int
on_pump(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    registry_pump(userdata);
    return 0;
}

/* In-flight queries are in deadline order (one timeout per registry) and
 * waiting ones nearly so (see registry_query_new): a scan stops at the
 * first one still in time. */
void
registry_expire(registry_t *r, uint64_t now_us)
{
    query_t *x;
    while ((x = TAILQ_FIRST(&r->inflight.head)) && x->deadline_us <= now_us)
        registry_fail(r, x, AV_REASON_TIMEOUT, "no complete reply within the registry's timeout");
    while ((x = TAILQ_FIRST(&r->waiting.head)) && x->deadline_us <= now_us) {
        list_remove(x);
        answer_unasked(r, x, AV_REASON_DEADLINE, NULL);
        registry_query_free(r, x);
    }
}

uint32_t
registry_credit(const registry_t *r)
{
    uint32_t load = r->waiting.count + r->inflight.count + r->prechecking.count;
    return load >= r->capacity ? 0 : r->capacity - load;
}

void
registry_take(registry_t *r, query_t *x)
{
    if (av_daemon_stopping(r->q->d)) {
        /* Sent before the dispatcher read our bye: hand it back too. */
        query_list_t one;
        list_init(&one);
        list_push(&one, x);
        querier_hand_back(r->q, r, &one);
        return;
    }
    if (registry_credit(r) == 0) {
        answer_unasked(r, x, AV_REASON_OVERLOADED, NULL);
        registry_query_free(r, x);
        return;
    }
    if (budget_backoff_left_us(&r->budget, x->arrived_us)) {
        answer_unasked(r, x, AV_REASON_RATE_LIMITED, "backoff");
        registry_query_free(r, x);
        return;
    }
    if (r->cfg->dns_precheck && r->precheck) {
        list_push(&r->prechecking, x);
        x->started_us = av_mono_us();
        r->precheck->start(r, r->precheck_state, x);
    } else {
        list_push(&r->waiting, x);
        registry_pump(r);
    }
}

/* ---- lifecycle ------------------------------------------------------------ */

const protocol_t *
protocol_for(av_registry_proto_t kind)
{
    switch (kind) {
    case AV_PROTO_RDAP: return &rdap_protocol;
    case AV_PROTO_DAS: return &das_protocol;
    case AV_PROTO_WHOIS: return &whois_protocol;
    }
    return &whois_protocol;
}

/* Adopts cfg (at start, and after a reload): everything that can fail is
 * made first, so a refused reload leaves the registry as it was. */
int
registry_configure(registry_t *r, const av_registry_cfg_t *cfg)
{
    char err[256];
    void *precheck_state = NULL;
    verdict_rules_t *rules = verdict_rules_new(cfg, err, sizeof err);
    if (!rules) {
        av_log_err("%s", err);
        return -1;
    }
    if (cfg->dns_precheck && !r->precheck && !(precheck_state = dns_precheck_protocol.open(r, cfg)))
        goto fail;
    if (r->protocol_state && r->protocol->configure(r, r->protocol_state, cfg) < 0)
        goto fail;
    if (r->precheck && r->precheck->configure(r, r->precheck_state, cfg) < 0)
        goto fail;
    if (precheck_state) {
        r->precheck = &dns_precheck_protocol;
        r->precheck_state = precheck_state;
    }
    verdict_rules_destroy(&r->rules);
    r->rules = rules;
    r->cfg = cfg;
    r->capacity = cfg->concurrency + cfg->queue;
    budget_configure(&r->budget, cfg, av_mono_us());
    return 0;
fail:
    if (precheck_state)
        dns_precheck_protocol.close(r, &precheck_state);
    verdict_rules_destroy(&rules);
    return -1;
}

registry_t *
registry_new(querier_t *q, const av_registry_cfg_t *cfg)
{
    registry_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->q = q;
    r->protocol = protocol_for(cfg->protocol);
    list_init(&r->prechecking);
    list_init(&r->waiting);
    list_init(&r->inflight);
    /* The protocol's state (connections, a resolver) is made when the
     * first check needs it: a querier of hundreds of registries, most of
     * them never asked, keeps only their settings. */
    if (registry_configure(r, cfg) < 0)
        goto fail;
    if (sd_event_add_time(av_daemon_loop(q->d), &r->pump_timer, CLOCK_MONOTONIC, 0, 1000, on_pump, r) < 0)
        goto fail;
    sd_event_source_set_enabled(r->pump_timer, SD_EVENT_OFF);
    return r;
fail:
    registry_destroy(&r);
    return NULL;
}

void
registry_destroy(registry_t **self_p)
{
    registry_t *r = self_p ? *self_p : NULL;
    if (!r)
        return;
    r->closing = true;
    /* Checks asked in the DNS go back too (their lookups, on a channel
     * other registries share, end for no one). */
    querier_hand_back(r->q, r, &r->prechecking);
    if (r->precheck)
        r->precheck->close(r, &r->precheck_state);
    r->precheck = NULL;
    querier_hand_back(r->q, r, &r->waiting);
    querier_hand_back(r->q, r, &r->inflight); /* the drain ran out: these too */
    if (r->protocol_state)
        r->protocol->close(r, &r->protocol_state);
    sd_event_source_disable_unref(r->pump_timer);
    verdict_rules_destroy(&r->rules);
    av_registry_cfg_free(&r->kept_cfg);
    free(r);
    *self_p = NULL;
}
