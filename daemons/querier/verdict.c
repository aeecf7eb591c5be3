/* The querier's one decision function (see verdict.h). Never a wrong
 * `available`: only the registry's own "not found" (a pattern, or RDAP's
 * 404) makes one; a reply that could mean two things gets the more cautious
 * reading (rate-limit wording first, then the registry's error codes,
 * reserved, registered, and available last). */
#include "verdict.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NO_REPORT (-1)

static const verdict_reason_t reasons[] = {
    { AV_REASON_TIMEOUT, "no complete reply within the registry's timeout", "timeouts", false, AV_LEVEL_WARNING },
    { AV_REASON_REGISTRY_ERROR, "the registry could not be reached or reported an error of its own",
      "registry_errors", false, AV_LEVEL_WARNING },
    /* The backoff it starts is reported once, not every answer. */
    { AV_REASON_RATE_LIMITED, "the registry says we exceed its rate limit, or we wait out its backoff",
      "rate_limited", true, NO_REPORT },
    { AV_REASON_UNPARSEABLE, "no pattern of the registry matched the reply", NULL, false, AV_LEVEL_NOTICE },
    { AV_REASON_EMPTY_REPLY, "the registry closed the connection without a word", NULL, false, NO_REPORT },
    { AV_REASON_OVERLOADED, "the querier holds as many checks as it may", NULL, false, NO_REPORT },
    { AV_REASON_DEADLINE, "the check waited for the rate limit or a free slot past its deadline", NULL, false,
      NO_REPORT },
};

const verdict_reason_t *
verdict_reasons(size_t *count)
{
    *count = sizeof reasons / sizeof reasons[0];
    return reasons;
}

const verdict_reason_t *
verdict_reason(const char *code)
{
    for (size_t i = 0; code && i < sizeof reasons / sizeof reasons[0]; i++)
        if (strcmp(reasons[i].code, code) == 0)
            return &reasons[i];
    return NULL;
}

struct verdict_rules {
    av_patterns_t *patterns;
};

verdict_rules_t *
verdict_rules_new(const av_registry_cfg_t *reg, char *err, size_t errlen)
{
    verdict_rules_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!(self->patterns = av_patterns_new(reg, err, errlen)))
        verdict_rules_destroy(&self);
    return self;
}

void
verdict_rules_destroy(verdict_rules_t **self_p)
{
    verdict_rules_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    av_patterns_destroy(&self->patterns);
    free(self);
    *self_p = NULL;
}

static void
unknown(verdict_t *out, const char *reason, const char *decided_by)
{
    out->status = AV_STATUS_UNKNOWN;
    out->reason = reason;
    out->decided_by = decided_by;
}

static bool
only_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

/* ---- whois and DAS: the registry's patterns -------------------------- */

static void
decide_text(verdict_rules_t *rules, const evidence_t *e, verdict_t *out)
{
    static const av_pattern_kind_t order[] = {
        AV_PAT_RATE_LIMITED, AV_PAT_ERROR, AV_PAT_RESERVED, AV_PAT_REGISTERED, AV_PAT_AVAILABLE,
    };
    static const av_status_t status_of[AV_PAT_KINDS] = {
        [AV_PAT_AVAILABLE] = AV_STATUS_AVAILABLE,   [AV_PAT_REGISTERED] = AV_STATUS_REGISTERED,
        [AV_PAT_RESERVED] = AV_STATUS_RESERVED,     [AV_PAT_RATE_LIMITED] = AV_STATUS_UNKNOWN,
        [AV_PAT_ERROR] = AV_STATUS_UNKNOWN,
    };
    if (e->len == 0 || only_space(e->body, e->len)) {
        unknown(out, AV_REASON_EMPTY_REPLY, NULL);
        return;
    }
    av_pattern_kind_t kind;
    const char *pattern = av_patterns_first(rules->patterns, order, sizeof order / sizeof order[0], e->body,
                                            e->len, &kind);
    if (!pattern) {
        unknown(out, AV_REASON_UNPARSEABLE, NULL);
        return;
    }
    out->status = status_of[kind];
    out->reason = kind == AV_PAT_RATE_LIMITED ? AV_REASON_RATE_LIMITED
                  : kind == AV_PAT_ERROR      ? AV_REASON_REGISTRY_ERROR
                                              : NULL;
    out->decided_by = pattern;
    out->by_pattern = true;
    out->kind = kind;
}

/* ---- RDAP: HTTP status, then RFC 8056 statuses --------------------- */

/* The statuses of a 200 reply: a registry's "reserved" (or "blocked") is
 * reserved; names in redemption or pending delete stay registered. */
static void
decide_rdap_record(const evidence_t *e, verdict_t *out)
{
    json_error_t err;
    out->status = AV_STATUS_REGISTERED;
    out->decided_by = "rdap: 200";
    json_t *root = e->len ? json_loadb(e->body, e->len, 0, &err) : NULL;
    json_t *list = root ? json_object_get(root, "status") : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        const char *s = json_string_value(v);
        if (!s)
            continue;
        if (strcasecmp(s, "reserved") == 0 || strcasecmp(s, "blocked") == 0) {
            out->status = AV_STATUS_RESERVED;
            out->decided_by = "rdap: status reserved";
        } else if (strcasecmp(s, "redemption period") == 0 || strcasecmp(s, "pending delete") == 0 ||
                   strcasecmp(s, "pending restore") == 0) {
            out->decided_by = "rdap: status in redemption or pending delete";
        }
    }
    json_decref(root);
}

static void
decide_http(const evidence_t *e, verdict_t *out)
{
    switch (e->http_status) {
    case 200:
        decide_rdap_record(e, out);
        return;
    case 404:
        out->status = AV_STATUS_AVAILABLE;
        out->decided_by = "rdap: 404";
        return;
    case 429:
    case 503:
        unknown(out, AV_REASON_RATE_LIMITED, e->http_status == 429 ? "rdap: 429" : "rdap: 503");
        out->backoff_s = e->retry_after_s;
        return;
    default:
        unknown(out, AV_REASON_REGISTRY_ERROR, NULL);
    }
}

void
verdict_decide(verdict_rules_t *rules, const evidence_t *e, verdict_t *out)
{
    memset(out, 0, sizeof *out);
    out->final = true;
    switch (e->kind) {
    case EVIDENCE_TEXT:
        decide_text(rules, e, out);
        return;
    case EVIDENCE_HTTP:
        decide_http(e, out);
        return;
    case EVIDENCE_DELEGATION:
        /* A delegation means registered, and the registry's quota is not
         * spent. No delegation proves nothing (registered names may be
         * undelegated, names in redemption are): the registry decides. */
        out->final = e->dns == DNS_DELEGATED;
        out->status = AV_STATUS_REGISTERED;
        out->decided_by = "dns: delegated";
        out->source = AV_SOURCE_DNS;
        return;
    case EVIDENCE_FAILURE:
        unknown(out, e->failure && verdict_reason(e->failure) ? e->failure : AV_REASON_REGISTRY_ERROR, NULL);
        return;
    }
    unknown(out, AV_REASON_REGISTRY_ERROR, NULL);
}
