/* The API: names from a query string or a JSON body, each answered from the
 * cache at once or by intake, as one JSON body (/v1/status, /v1/check) or
 * as Server-Sent Events the moment each is final (/v1/stream). */
#include "http.h"

#include <stdlib.h>
#include <string.h>

/* Added to a request's deadline before availd-http gives up on intake,
 * which answers `unknown` (deadline) itself when a name's time is up. */
#define DEADLINE_MARGIN_MS 1000
/* The buffer MHD allocates (and zeroes) with each stream's response. A
 * chunked (HTTP/1.1) stream is written from the connection's own pool and
 * never uses it; only an HTTP/1.0 client reads through it, 256 bytes a
 * call. 4096 cost 3.8 MB of RSS at 1,000 open streams (bench/http/run
 * --only-streams: 31.1 -> 27.3 MB). */
#define STREAM_BLOCK_BYTES 256

/* ---- answers as JSON ----------------------------------------------------- */

/* Domainr's status words for availd's verdicts: the space-separated status
 * and its one-word summary. */
static void
domainr_status(av_status_t status, const char **words, const char **summary)
{
    switch (status) {
    case AV_STATUS_AVAILABLE: *words = "undelegated inactive", *summary = "inactive"; return;
    case AV_STATUS_REGISTERED: *words = "active", *summary = "active"; return;
    case AV_STATUS_RESERVED: *words = "reserved", *summary = "reserved"; return;
    case AV_STATUS_INVALID: *words = "invalid", *summary = "invalid"; return;
    default: *words = "unknown", *summary = "unknown"; return;
    }
}

static json_t *
json_str(const char *s, size_t len)
{
    char buf[AV_NAME_MAX * 3 + 1];
    size_t n = av_utf8_sanitize(buf, sizeof buf, s, len);
    return json_stringn(buf, n);
}

json_t *
api_answer_json(const char *asked, const av_answer_t *a)
{
    const char *words, *summary;
    domainr_status(a->status, &words, &summary);
    const char *name = a->name.len ? a->name.ptr : asked;
    size_t name_len = a->name.len ? a->name.len : strlen(asked);
    const char *dot = memchr(name, '.', name_len);
    json_t *o = json_object();
    json_object_set_new(o, "domain", json_str(asked, strlen(asked)));
    json_object_set_new(o, "zone", dot ? json_str(dot + 1, name_len - (size_t)(dot + 1 - name)) : json_string(""));
    json_object_set_new(o, "status", json_string(words));
    json_object_set_new(o, "summary", json_string(summary));
    json_object_set_new(o, "availability", json_string(av_status_name(a->status)));
    json_object_set_new(o, "name", json_str(a->name.ptr, a->name.len));
    if (a->reason.len)
        json_object_set_new(o, "reason", json_str(a->reason.ptr, a->reason.len));
    json_object_set_new(o, "registry", json_str(a->registry.ptr, a->registry.len));
    json_object_set_new(o, "source", json_string(av_source_name(a->source)));
    json_object_set_new(o, "at", json_integer((json_int_t)a->at_ms));
    return o;
}

/* ---- names from the request ------------------------------------------- */

static bool
utf8_valid(const char *s, size_t len)
{
    char buf[AV_NAME_MAX * 3 + 1];
    if (len > AV_NAME_MAX)
        return false;
    size_t n = av_utf8_sanitize(buf, sizeof buf, s, len);
    return n == len && memcmp(buf, s, len) == 0;
}

static int
add_name(char ***names, uint32_t *n, const char *s, size_t len, char *why, size_t whylen)
{
    if (len == 0)
        return snprintf(why, whylen, "empty name at position %u", *n + 1), -1;
    if (len > AV_NAME_MAX)
        return snprintf(why, whylen, "name at position %u longer than %d bytes", *n + 1, AV_NAME_MAX), -1;
    if (memchr(s, '\0', len) || !utf8_valid(s, len))
        return snprintf(why, whylen, "name at position %u is not UTF-8 text", *n + 1), -1;
    char **grown = realloc(*names, (*n + 1) * sizeof *grown);
    if (!grown)
        return snprintf(why, whylen, "out of memory"), -1;
    *names = grown;
    if (!(grown[*n] = strndup(s, len)))
        return snprintf(why, whylen, "out of memory"), -1;
    (*n)++;
    return 0;
}

int
api_split_names(const char *list, uint32_t max, char ***names, uint32_t *n, char *why, size_t whylen)
{
    *names = NULL;
    *n = 0;
    if (!list || !*list)
        return snprintf(why, whylen, "missing parameter 'domain' (names separated by commas)"), -1;
    for (const char *s = list;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (*n == max)
            return snprintf(why, whylen, "more than %u names", max), -2;
        while (len && (*s == ' ')) /* "a.com, b.net" */
            s++, len--;
        if (add_name(names, n, s, len, why, whylen) < 0)
            return -1;
        if (!comma)
            return 0;
        s = comma + 1;
    }
}

/* {"names": [...], "fresh": bool, "deadline_ms": N}: 0, -1 (400) or -2 (413). */
static int
parse_body(api_req_t *r, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return snprintf(why, whylen, "not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column), -1;
    int rc = -1;
    json_t *names = json_object_get(doc, "names"), *fresh = json_object_get(doc, "fresh"),
           *deadline = json_object_get(doc, "deadline_ms");
    uint32_t max = http_cfg(r->h)->max_names;
    if (!json_is_object(doc))
        snprintf(why, whylen, "the body must be a JSON object");
    else if (!json_is_array(names) || json_array_size(names) == 0)
        snprintf(why, whylen, "'names' must be a non-empty array of strings");
    else if (json_array_size(names) > max)
        snprintf(why, whylen, "%zu names: at most %u in one request", json_array_size(names), max), rc = -2;
    else if (fresh && !json_is_boolean(fresh))
        snprintf(why, whylen, "'fresh' must be true or false");
    else if (deadline && (!json_is_integer(deadline) || json_integer_value(deadline) < 1 ||
                          json_integer_value(deadline) > 3600000))
        snprintf(why, whylen, "'deadline_ms' must be an integer from 1 to 3600000");
    else
        rc = 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(names); i++) {
        json_t *name = json_array_get(names, i);
        if (!json_is_string(name)) {
            snprintf(why, whylen, "'names' must hold strings only (position %zu)", i + 1);
            rc = -1;
        } else if (add_name(&r->names, &r->n_names, json_string_value(name), json_string_length(name), why,
                            whylen) < 0) {
            rc = -1;
        }
    }
    if (rc == 0) {
        r->fresh = fresh && json_is_true(fresh);
        if (deadline)
            r->deadline_ms = (uint32_t)json_integer_value(deadline);
    }
    json_decref(doc);
    return rc;
}

static bool
query_flag(struct MHD_Connection *conn, const char *key)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, key);
    return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

/* ---- streams ---------------------------------------------------------------- */

/* Appends an event with data (taken). */
static void
stream_append(api_req_t *r, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text)
        return;
    size_t need = strlen(event) + strlen(text) + 32;
    if (r->out_pos == r->out_len)
        r->out_pos = r->out_len = 0;
    if (r->out_len + need > r->out_cap) {
        size_t cap = (r->out_len + need) * 2;
        char *grown = realloc(r->out, cap);
        if (!grown) {
            free(text);
            return;
        }
        r->out = grown;
        r->out_cap = cap;
    }
    r->out_len += (size_t)snprintf(r->out + r->out_len, r->out_cap - r->out_len, "event: %s\ndata: %s\n\n", event,
                                   text);
    free(text);
}

ssize_t
api_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    api_req_t *r = cls;
    if (r->out_pos < r->out_len) {
        size_t n = r->out_len - r->out_pos;
        if (n > max)
            n = max;
        memcpy(buf, r->out + r->out_pos, n);
        r->out_pos += n;
        return (ssize_t)n;
    }
    if (r->stream_done)
        return MHD_CONTENT_READER_END_OF_STREAM;
    /* Nothing yet: park the connection until an answer comes. */
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    return 0;
}

static enum MHD_Result
start_stream(api_req_t *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK_BYTES, api_stream_read, r, NULL);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    if (r->origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->origin);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
    r->responded = true;
    r->h->streams++;
    (*r->h->streams_opened)++;
    enum MHD_Result rc = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

static void
stream_answer(api_req_t *r, uint32_t idx)
{
    json_t *data = json_deep_copy(r->answers[idx]);
    json_object_set_new(data, "idx", json_integer(idx));
    stream_append(r, "answer", data);
}

/* ---- the end of a request ---------------------------------------------------- */

static json_t *
answers_body(api_req_t *r)
{
    json_t *list = json_array();
    for (uint32_t i = 0; i < r->n_names; i++)
        json_array_append(list, r->answers[i]);
    return json_pack("{s:o}", "status", list);
}

static void
leave_waiting(api_req_t *r)
{
    if (r->waiting) {
        TAILQ_REMOVE(&r->h->waiting, r, waiting_entry);
        r->waiting = false;
    }
    upstream_forget(r->h->up, r);
}

/* Every name has its answer: the body, or the stream's end. */
static void
finish(api_req_t *r)
{
    leave_waiting(r);
    if (r->route == ROUTE_STREAM) {
        stream_append(r, "done", json_pack("{s:I}", "count", (json_int_t)r->n_names));
        r->stream_done = true;
        http_wake(r);
        return;
    }
    if (!r->responded)
        http_respond_json(r, MHD_HTTP_OK, answers_body(r), 0);
    http_wake(r);
}

void
api_answer(api_req_t *r, uint32_t idx, const av_answer_t *answer)
{
    if (idx >= r->n_names || r->answers[idx])
        return; /* one answer a name */
    r->answers[idx] = api_answer_json(r->names[idx], answer);
    r->answered++;
    r->from_intake = true;
    if (r->route == ROUTE_STREAM)
        stream_answer(r, idx);
    if (r->answered == r->n_names)
        finish(r);
    else if (r->route == ROUTE_STREAM)
        http_wake(r);
}

void
api_expire(api_req_t *r)
{
    http_t *h = r->h;
    if (r->route == ROUTE_HEALTHZ) {
        leave_waiting(r);
        http_wake(r); /* the handler says 503: no pong */
        return;
    }
    uint32_t missing = r->n_names - r->answered;
    for (uint32_t i = 0; i < r->n_names; i++) {
        if (r->answers[i])
            continue;
        av_answer_t a = { .name = AV_STR(""), .query = av_str(r->names[i]), .status = AV_STATUS_UNKNOWN,
                          .reason = AV_STR(AV_REASON_DEADLINE), .source = AV_SOURCE_NONE, .at_ms = av_now_ms() };
        r->answers[i] = api_answer_json(r->names[i], &a);
        r->answered++;
        if (r->route == ROUTE_STREAM)
            stream_answer(r, i);
    }
    (*h->deadlines) += missing;
    if (r->route != ROUTE_STREAM && !r->from_intake && missing && !r->responded) {
        /* Intake said nothing in time: the gateway's timeout, with what the
         * cache knew. */
        leave_waiting(r);
        json_t *body = answers_body(r);
        json_object_set_new(body, "error", json_pack("{s:i,s:s}", "code", MHD_HTTP_GATEWAY_TIMEOUT, "message",
                                                    "deadline passed without intake's answer"));
        http_respond_json(r, MHD_HTTP_GATEWAY_TIMEOUT, body, 0);
        http_wake(r);
        return;
    }
    finish(r);
}

void
api_req_free(api_req_t *r)
{
    http_t *h = r->h;
    leave_waiting(r);
    if (r->route == ROUTE_STREAM && r->responded && h->streams)
        h->streams--;
    for (uint32_t i = 0; i < r->n_names; i++) {
        free(r->names[i]);
        if (r->answers)
            json_decref(r->answers[i]);
    }
    free(r->names);
    free(r->answers);
    free(r->pending_ids);
    free(r->body);
    free(r->out);
    free(r->origin);
    free(r);
}

/* ---- taking a request ------------------------------------------------------- */

static enum MHD_Result
start(api_req_t *r)
{
    http_t *h = r->h;
    const av_http_cfg_t *cfg = http_cfg(h);
    const av_config_t *all = av_daemon_config(h->d);
    uint64_t now_us = av_mono_us();
    uint32_t wait_s = budgets_take(h->budgets, r->client, r->n_names, now_us);
    if (wait_s) {
        (*h->rate_limited)++;
        return http_respond_error(r, MHD_HTTP_TOO_MANY_REQUESTS, "too many names: this client's budget is spent",
                                  wait_s);
    }
    if (r->route == ROUTE_STREAM && h->streams >= cfg->max_streams) {
        (*h->overloaded)++;
        return http_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "too many open streams", 1);
    }
    (*h->names_asked) += r->n_names;
    if (!(r->answers = calloc(r->n_names, sizeof *r->answers)))
        return MHD_NO;
    uint32_t *misses = calloc(r->n_names, sizeof *misses), n_misses = 0;
    if (!misses)
        return MHD_NO;
    for (uint32_t i = 0; i < r->n_names; i++) {
        av_answer_t a;
        av_cached_t cached;
        char name[AV_DOMAIN_MAX + 1];
        if (!r->fresh && lookup_cached(h, r->names[i], &a, name, &cached) == 1) {
            r->answers[i] = api_answer_json(r->names[i], &a);
            r->answered++;
            (*h->cache_hits)++;
        } else {
            misses[n_misses++] = i;
        }
    }
    if (n_misses && h->names_pending + n_misses > cfg->max_pending) {
        free(misses);
        (*h->overloaded)++;
        return http_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "overloaded: too many names waiting", 1);
    }
    if (!r->deadline_ms)
        r->deadline_ms = cfg->deadline_ms ? cfg->deadline_ms : all->intake.deadline_ms;
    /* A stream sends each name as a check of its own, so each answer comes
     * the moment it is final; a body waits for all of them anyway. */
    int rc = 0;
    if (r->route == ROUTE_STREAM)
        for (uint32_t i = 0; i < n_misses && rc == 0; i++)
            rc = upstream_check(h->up, r, &misses[i], 1);
    else if (n_misses)
        rc = upstream_check(h->up, r, misses, n_misses);
    free(misses);
    if (rc < 0) {
        upstream_forget(h->up, r);
        (*h->overloaded)++;
        return http_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "intake cannot take checks now", 1);
    }
    if (r->route == ROUTE_STREAM) {
        for (uint32_t i = 0; i < r->n_names; i++)
            if (r->answers[i])
                stream_answer(r, i);
        if (start_stream(r) != MHD_YES)
            return MHD_NO;
        if (r->answered == r->n_names) {
            stream_append(r, "done", json_pack("{s:I}", "count", (json_int_t)r->n_names));
            r->stream_done = true;
            return MHD_YES;
        }
    } else if (r->answered == r->n_names) {
        return http_respond_json(r, MHD_HTTP_OK, answers_body(r), 0);
    }
    r->deadline_us = now_us + ((uint64_t)r->deadline_ms + DEADLINE_MARGIN_MS) * 1000;
    TAILQ_INSERT_TAIL(&h->waiting, r, waiting_entry);
    r->waiting = true;
    if (r->route != ROUTE_STREAM) {
        r->suspended = true;
        MHD_suspend_connection(r->conn);
    }
    return MHD_YES;
}

enum MHD_Result
api_handle(api_req_t *r, const char *upload, size_t *upload_size)
{
    char why[256];
    const av_http_cfg_t *cfg = http_cfg(r->h);
    if (r->answers)
        return MHD_YES; /* taken already: called again after a resume */
    if (r->route == ROUTE_CHECK) {
        if (upload_size && *upload_size) {
            size_t n = *upload_size;
            *upload_size = 0;
            if (r->body_too_big || r->body_len + n > cfg->max_body_bytes) {
                /* Dropped up to a bound, then refused once the body is in
                 * (see on_request); past the bound refused at once. */
                r->body_too_big = true;
                free(r->body);
                r->body = NULL;
                r->body_len = 0;
                r->body_dropped += n;
                if (r->body_dropped > http_drop_max(r->h))
                    return http_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large", 0);
                return MHD_YES;
            }
            char *grown = realloc(r->body, r->body_len + n + 1);
            if (!grown)
                return MHD_NO;
            memcpy(grown + r->body_len, upload, n);
            r->body = grown;
            r->body_len += n;
            return MHD_YES;
        }
        if (r->body_too_big)
            return http_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large", 0);
        int rc = parse_body(r, why, sizeof why);
        if (rc < 0)
            return http_respond_error(r, rc == -2 ? MHD_HTTP_CONTENT_TOO_LARGE : MHD_HTTP_BAD_REQUEST, why, 0);
        return start(r);
    }
    const char *list = NULL;
    size_t list_len = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "domain", 6, &list, &list_len) == MHD_YES &&
        list && strlen(list) != list_len)
        return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "a name holds a NUL byte", 0);
    int rc = api_split_names(list, cfg->max_names, &r->names, &r->n_names, why, sizeof why);
    if (rc < 0)
        return http_respond_error(r, rc == -2 ? MHD_HTTP_CONTENT_TOO_LARGE : MHD_HTTP_BAD_REQUEST, why, 0);
    r->fresh = query_flag(r->conn, "fresh");
    const char *deadline = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "deadline_ms");
    if (deadline) {
        char *end;
        unsigned long v = strtoul(deadline, &end, 10);
        if (*end || v < 1 || v > 3600000)
            return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "'deadline_ms' must be an integer from 1 to 3600000",
                                      0);
        r->deadline_ms = (uint32_t)v;
    }
    return start(r);
}
