/* The querier's one decision function (see verdict.h). Never a wrong
 * `available`: only the registry's own "not found" (a pattern, or RDAP's
 * 404) makes one, or, for a registry read generically, a vetted "not found"
 * wording with no record data in the reply and no delegation in DNS; a reply
 * that could mean two things gets the more cautious reading (rate-limit
 * wording first, then the registry's error codes, reserved, registered, and
 * available last). */
#include "verdict.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NO_REPORT (-1)

static const verdict_reason_t reasons[] = {
    { AV_REASON_TIMEOUT, "no complete reply within the registry's timeout", "timeouts", false, AV_LEVEL_WARNING },
    { AV_REASON_REGISTRY_ERROR, "the registry reported an error of its own", "registry_errors", false,
      AV_LEVEL_WARNING },
    { AV_REASON_DNS_FAILURE, "the registry's host name could not be resolved", "dns_failures", false,
      AV_LEVEL_WARNING },
    { AV_REASON_CONNECT_FAILED, "the registry refused the connection or did not take it", "connect_failures",
      false, AV_LEVEL_WARNING },
    { AV_REASON_CONNECTION_LOST, "the connection broke before the reply was whole", "connections_lost", false,
      AV_LEVEL_WARNING },
    { AV_REASON_TLS_ERROR, "the registry's TLS failed (handshake, certificate)", "tls_errors", false,
      AV_LEVEL_WARNING },
    { AV_REASON_HTTP_STATUS, "the RDAP service answered an HTTP status that decides nothing (not 200, 404, 429 "
      "or 503)", "http_statuses", false, AV_LEVEL_WARNING },
    { AV_REASON_QUERIER_ERROR, "the querier itself failed (out of memory, no socket)", "querier_errors", false,
      AV_LEVEL_ERR },
    /* The backoff it starts is reported once, not every answer. */
    { AV_REASON_RATE_LIMITED, "the registry says we exceed its rate limit, or we wait out its backoff",
      "rate_limited", true, NO_REPORT },
    { AV_REASON_UNPARSEABLE, "no pattern of the registry matched the reply, or the generic reading could not "
      "be sure (a \"not found\" wording without DNS saying the name is undelegated)", NULL, false,
      AV_LEVEL_NOTICE },
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

/* ---- the generic reading of whois replies ------------------------------ */

/* For registries without tuned patterns (`reading: generic`): what a whois
 * reply MEANS, in the wordings many registries use, PCRE2, case-insensitive
 * and multi-line as a registry's own patterns. Tried in the decision order
 * of patterns (rate_limited, error, reserved, registered, available; each
 * kind's rules in table order). Every "not found" wording is vetted against every
 * registered, reserved and throttled answer of ../shared/fixtures/whois
 * (tests/unit/test_querier_generic.c checks that none matches one), and a
 * "not found" only says `available` when nothing of a record matched and the
 * DNS pre-check found the name undelegated. Record data is a field with a
 * value: a label at the start of a line, a separator, and a date, a host
 * name or any value, on that line or the next (sections such as
 * "Registrant:\n   Name"). */

/* A label at the start of a line, after an item number ("1a.", "c") or a
 * bracket ("[Created on]") or a "domain:"/"domain_" prefix. */
#define G_LINE "^[ \\t]*(?:[a-z0-9]{1,2}[.)]?[ \\t]+)?[\\[(]?(?:domain[:_ ]?)?"
/* Between label and value: a colon or '#' (then dot leaders), a closing
 * bracket, dot leaders, a tab, or two spaces. */
#define G_SEP "(?:[\\])]?[ \\t]*[:#][ \\t.:#]*|[\\])][ \\t]*|(?:[ \\t]*\\.){2,}[ \\t.:#]*|[ \\t]*\\t[ \\t]*|  +)"
/* Before a date, also one space ("Record created on 2000-08-29"). */
#define G_DATE_SEP "(?:" G_SEP "|[ \\t]+(?=\\d))"
/* A value on the line, or on the next one. */
#define G_VALUE "(?:[^\\s]|[ \\t]*\\r?\\n[ \\t]*[^\\s%#])"
#define G_HOST "[a-z0-9-]+(?:\\.[a-z0-9-]+)+\\.?(?=[\\s\\[(,;]|$)"

static const verdict_generic_rule_t generic_rules[] = {
    /* Throttling: unknown, rate_limited, and the registry is backed off.
     * Not "rate limit" alone: terms of use say "access is rate limited". */
    { AV_PAT_RATE_LIMITED, "generic: limit exceeded", "\\blimit (exceeded|reached)\\b" },
    { AV_PAT_RATE_LIMITED, "generic: limit or quota exceeded",
      "\\b(limit|quota|rate)\\b[^\\n]{0,60}\\b(exceeded|reached)\\b" },
    { AV_PAT_RATE_LIMITED, "generic: exceeded the limit", "\\bexceeded\\b[^\\n]{0,40}\\b(limit|quota|rate)\\b" },
    /* At the start of a line: terms of use say "if too many queries are received..." */
    { AV_PAT_RATE_LIMITED, "generic: too many queries",
      "^[^a-z\\n]{0,10}too many (requests|queries|connections|lookups)\\b" },
    { AV_PAT_RATE_LIMITED, "generic: try again later", "\\btry again later\\b" },
    { AV_PAT_RATE_LIMITED, "generic: slow down", "\\bslow down\\b" },
    { AV_PAT_RATE_LIMITED, "generic: wait before asking again", "\\bwait \\d+ (seconds|minutes)\\b" },
    { AV_PAT_RATE_LIMITED, "generic: request denied", "\\brequest denied\\b" },

    /* The server's own failure: unknown, registry_error, so that an error
     * naming the query ("invalid domain: x not found") is never a "not found". */
    { AV_PAT_ERROR, "generic: invalid query",
      "\\binvalid (query|request|domain( name)?|input|characters?|syntax|tld)\\b" },
    { AV_PAT_ERROR, "generic: server error", "\\b(internal|server|database|system|syntax) error\\b|\\bunknown command\\b" },
    { AV_PAT_ERROR, "generic: service unavailable", "\\bservice (is )?(temporarily )?unavailable\\b" },

    /* Reserved, restricted, prohibited names. Not the words alone: terms of
     * use are "All rights reserved" and "expressly prohibited". */
    { AV_PAT_RESERVED, "generic: reserved by", "\\breserved (by|for)\\b" },
    { AV_PAT_RESERVED, "generic: status reserved", "\\b(status|state)\\]?[ \\t]*:?[ \\t]*reserved\\b" },
    { AV_PAT_RESERVED, "generic: name is prohibited",
      "\\b(domain|name)\\b[^\\n.]{0,30}\\bis (prohibited|restricted|blocked|reserved)\\b" },
    { AV_PAT_RESERVED, "generic: restricted from registration", "\\brestricted from registration\\b" },
    { AV_PAT_RESERVED, "generic: restricted name", "\\brestricted (domain|name)\\b" },
    { AV_PAT_RESERVED, "generic: prohibited string", "\\bprohibited string\\b" },
    { AV_PAT_RESERVED, "generic: not available for registration", "\\bnot available for registration\\b" },
    { AV_PAT_RESERVED, "generic: cannot be registered", "\\bcan ?not be registered\\b" },
    { AV_PAT_RESERVED, "generic: domain not available",
      "^[ \\t]*domain (name )?(is )?not available[ \\t]*\\.?[ \\t]*$" },

    /* Record data: what only an answer about an existing record holds. */
    { AV_PAT_REGISTERED, "generic: creation date",
      G_LINE "(?:record |registrant_contact_)?(creation date|created( on| date)?|date ?created|registered( on| date)?"
      "|date ?registered|registration( date| time)?|activated|acivated|date de cr[^\\s]{0,2}ation|data de registo"
      "|fecha de (creaci[^\\s]{1,2}n|registro))" G_DATE_SEP "[^\\n]*\\d" },
    { AV_PAT_REGISTERED, "generic: expiry date",
      G_LINE "(?:record |registry |registrar registration )?(expir(y|ation|es|ed)( date| on)?|paid-till"
      "|valid[ -](until|date)|renewal( date)?|date ?billed ?until|billed ?until)" G_DATE_SEP "[^\\n]*\\d" },
    /* Not "last updated": whois servers date their database so. */
    { AV_PAT_REGISTERED, "generic: change date",
      G_LINE "(?:record )?(updated date|last[ -]modified|changed)" G_DATE_SEP "[^\\n]*\\d" },
    { AV_PAT_REGISTERED, "generic: registrar",
      G_LINE "(sponsoring registrar|registrar([ _]name)?|registration service provider|registered by|registrado por)"
      G_SEP G_VALUE },
    { AV_PAT_REGISTERED, "generic: registrant",
      G_LINE "(registrant([ _](name|organi[sz]ation|contact[ _]name))?|holder( of (the )?domain( name)?)?"
      "|(domain )?owner|titular|titulaire|registered for|org-name)" G_SEP G_VALUE },
    { AV_PAT_REGISTERED, "generic: contact",
      G_LINE "((admin(istrative)?|tech(nical)?|billing|zone)[ _-]?(c|contact|id|handle)|nic-hdl"
      "|contacto (administrativo|tecnico))" G_SEP G_VALUE },
    { AV_PAT_REGISTERED, "generic: name server",
      G_LINE "(name ?servers?( \\d+)?|nservers?|ns\\d*|dns|dns_name|(primary|secondary) ns"
      "|(primary|secondary|third|fourth) server hostname|(domain )?servers)" G_SEP G_HOST },
    { AV_PAT_REGISTERED, "generic: name server list",
      G_LINE "(name ?servers?|domain servers|nameserver information|servers)[^\\n:]{0,25}:?[ \\t]*\\r?\\n[ \\t]*"
      G_HOST },
    { AV_PAT_REGISTERED, "generic: record identifier",
      G_LINE "(registry domain id|domain[ _]?id|roid|registration no\\.?)" G_SEP "[^\\s]" },
    { AV_PAT_REGISTERED, "generic: EPP status", "\\b(client|server)(delete|transfer|update|renew|hold)(prohibited)?\\b" },
    /* A name in redemption or pending delete is taken. */
    { AV_PAT_REGISTERED, "generic: redemption or pending delete",
      "\\b(redemption ?period|pending ?delete|pending ?restore)\\b" },
    { AV_PAT_REGISTERED, "generic: record status",
      G_LINE "([a-z]+[ -])?(status|state|estado[^\\n:]{0,10}|domaintype)" G_SEP
      "(\\d+ )?(ok|active|activ[eo]|registered|connect|paid|delegated|in use|not available|dom_ok|hold|locked)\\b" },

    /* "Not found", vetted. Not "No entries found" alone: AFNIC's throttled
     * answers end in "No entries found in the AFNIC Database"; the RIPE
     * server's "No entries found for..." and "%ERROR:101" forms are kept. */
    { AV_PAT_AVAILABLE, "generic: no match", "\\bno match(es|ing)?\\b" },
    { AV_PAT_AVAILABLE, "generic: not found", "(\\b|_)not[ _]found\\b" },
    { AV_PAT_AVAILABLE, "generic: no records found",
      "\\bno (records?|data|objects?|information|results|domain records?)( was| were)?( found| available| matching)\\b" },
    { AV_PAT_AVAILABLE, "generic: no entries found for", "\\bno entries found (for|in the selected)\\b" },
    { AV_PAT_AVAILABLE, "generic: no entries found (error 101)", "^[%#]*[ \\t]*error:101: no entries found\\b" },
    { AV_PAT_AVAILABLE, "generic: nothing found", "\\bnothing found\\b" },
    { AV_PAT_AVAILABLE, "generic: no found", "\\bno found\\b" },
    { AV_PAT_AVAILABLE, "generic: 0 objects found", "\\b(returned|found) 0 (objects|results|records|entries)\\b" },
    /* A sentence of its own: "whether a domain name is available for
     * registration" is terms of use. */
    { AV_PAT_AVAILABLE, "generic: available for registration",
      "(^|\\.[ \\t]+)[ \\t%#]*(the |this )?(domain( name)?[ \\t]+)?[^\\s]+[ \\t]+is available for "
      "(registration|purchase)\\b" },
    { AV_PAT_AVAILABLE, "generic: not registered",
      "\\b(domain|name)\\b[^\\n]{0,40}\\b(is |has )?not (been |a )?registe?red\\b" },
    { AV_PAT_AVAILABLE, "generic: status not registered",
      "^[ \\t%#]*(domain[ \\t]+)?(status[ \\t]*:[ \\t]*)?not registered\\b" },
    { AV_PAT_AVAILABLE, "generic: status available",
      "^[ \\t]*(domain |query_)?status[ \\t]*:[ \\t]*(\\d+ )?(available|free)[ \\t]*$" },
    { AV_PAT_AVAILABLE, "generic: no such domain", "\\bno such (domain|object|entry)\\b" },
    { AV_PAT_AVAILABLE, "generic: does not exist", "\\b(domain|object|name)\\b[^\\n]{0,60}\\bdoes not exist\\b" },
    { AV_PAT_AVAILABLE, "generic: no entry", "\\bdo(es)? not have an? (entry|record)\\b" },
    { AV_PAT_AVAILABLE, "generic: could not find",
      "\\bcould not find (the |this |that |your )?(requested )?(domain|object|entry|record)\\b" },
    { AV_PAT_AVAILABLE, "generic: available", "^[ \\t]*available[ \\t]*$" },
    { AV_PAT_AVAILABLE, "generic: name is free", "^[ \\t]*[^\\s]+[ \\t]+is (free|available)[ \\t]*\\.?[ \\t]*$" },
};

#define N_GENERIC_RULES (sizeof generic_rules / sizeof generic_rules[0])

/* What the generic reading says of a "not found" it may not trust. */
static const char generic_unconfirmed[] =
    "generic: not found, but the DNS pre-check did not find the name undelegated";

const verdict_generic_rule_t *
verdict_generic_rules(size_t *count)
{
    *count = N_GENERIC_RULES;
    return generic_rules;
}

/* The rules compiled once for every registry read generically. The
 * querier and availctl decide on one thread, so one set (and its match
 * buffer) serves them all; it goes with the last registry using it. */
static struct {
    av_patterns_t *patterns;
    unsigned users;
    char *items[AV_PAT_KINDS][N_GENERIC_RULES];
} generic;

static av_patterns_t *
generic_acquire(char *err, size_t errlen)
{
    if (generic.users == 0) {
        av_registry_cfg_t cfg = { .name = "generic reading" };
        for (size_t i = 0; i < N_GENERIC_RULES; i++) {
            av_strlist_t *list = &cfg.patterns[generic_rules[i].kind];
            list->items = generic.items[generic_rules[i].kind];
            /* av_patterns only reads the text, which is static. */
            list->items[list->count++] = (char *)generic_rules[i].pattern;
        }
        if (!(generic.patterns = av_patterns_new(&cfg, err, errlen)))
            return NULL;
    }
    generic.users++;
    return generic.patterns;
}

static void
generic_release(void)
{
    if (generic.users > 0 && --generic.users == 0)
        av_patterns_destroy(&generic.patterns);
}

static const verdict_generic_rule_t *
generic_rule_of(const char *pattern)
{
    for (size_t i = 0; i < N_GENERIC_RULES; i++)
        if (generic_rules[i].pattern == pattern)
            return &generic_rules[i];
    return NULL;
}

struct verdict_rules {
    av_patterns_t *patterns;
    av_patterns_t *generic;    /* shared (see generic_acquire); NULL: patterns only */
};

verdict_rules_t *
verdict_rules_new(const av_registry_cfg_t *reg, char *err, size_t errlen)
{
    verdict_rules_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!(self->patterns = av_patterns_new(reg, err, errlen)) ||
        (reg->reading == AV_READING_GENERIC && !(self->generic = generic_acquire(err, errlen))))
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
    if (self->generic)
        generic_release();
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

/* ---- whois and DAS: the registry's patterns, then the generic reading -- */

static const av_pattern_kind_t text_order[] = {
    AV_PAT_RATE_LIMITED, AV_PAT_ERROR, AV_PAT_RESERVED, AV_PAT_REGISTERED, AV_PAT_AVAILABLE,
};

static void
matched(verdict_t *out, av_pattern_kind_t kind, const char *decided_by)
{
    static const av_status_t status_of[AV_PAT_KINDS] = {
        [AV_PAT_AVAILABLE] = AV_STATUS_AVAILABLE,   [AV_PAT_REGISTERED] = AV_STATUS_REGISTERED,
        [AV_PAT_RESERVED] = AV_STATUS_RESERVED,     [AV_PAT_RATE_LIMITED] = AV_STATUS_UNKNOWN,
        [AV_PAT_ERROR] = AV_STATUS_UNKNOWN,
    };
    out->status = status_of[kind];
    out->reason = kind == AV_PAT_RATE_LIMITED ? AV_REASON_RATE_LIMITED
                  : kind == AV_PAT_ERROR      ? AV_REASON_REGISTRY_ERROR
                                              : NULL;
    out->decided_by = decided_by;
    out->by_pattern = true;
    out->kind = kind;
}

/* The generic reading: a rule's meaning, except that a "not found" is only
 * `available` when the DNS pre-check found no delegation (no record data
 * matched, or the registered rules, tried before, would have decided). */
static void
decide_generic(verdict_rules_t *rules, const evidence_t *e, verdict_t *out)
{
    av_pattern_kind_t kind;
    out->reading = AV_READING_GENERIC;
    const char *pattern = av_patterns_first(rules->generic, text_order, sizeof text_order / sizeof text_order[0],
                                            e->body, e->len, &kind);
    const verdict_generic_rule_t *rule = pattern ? generic_rule_of(pattern) : NULL;
    if (!rule) {
        unknown(out, AV_REASON_UNPARSEABLE, NULL);
        return;
    }
    matched(out, kind, rule->decided_by);
    if (kind == AV_PAT_AVAILABLE && e->dns != DNS_NOT_DELEGATED) {
        out->status = AV_STATUS_UNKNOWN;
        out->reason = AV_REASON_UNPARSEABLE;
        out->decided_by = generic_unconfirmed;
    }
}

static void
decide_text(verdict_rules_t *rules, const evidence_t *e, verdict_t *out)
{
    if (e->len == 0 || only_space(e->body, e->len)) {
        unknown(out, AV_REASON_EMPTY_REPLY, NULL);
        return;
    }
    av_pattern_kind_t kind;
    const char *pattern = av_patterns_first(rules->patterns, text_order, sizeof text_order / sizeof text_order[0],
                                            e->body, e->len, &kind);
    if (pattern)
        matched(out, kind, pattern);
    else if (rules->generic)
        decide_generic(rules, e, out);
    else
        unknown(out, AV_REASON_UNPARSEABLE, NULL);
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
        unknown(out, AV_REASON_HTTP_STATUS, NULL);
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
