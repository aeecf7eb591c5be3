/* Every verdict of the querier is made here, from what a protocol observed:
 * the text of a whois or DAS reply (the registry's patterns, and for a
 * registry with `reading: generic` then the generic reading), an RDAP
 * reply's HTTP status and RFC 8056 statuses, a DNS pre-check's delegation,
 * or a failure to get any reply. One decision function, one table of the
 * reasons an answer can be unknown. `availctl classify` reads replies through
 * it too, so ops see exactly the querier's decision. */
#ifndef VERDICT_H
#define VERDICT_H

#include "av_config.h"
#include "av_patterns.h"
#include "av_proto.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    EVIDENCE_TEXT = 1,   /* whois, DAS: the reply as the registry wrote it */
    EVIDENCE_HTTP,       /* RDAP: status code, body, Retry-After */
    EVIDENCE_DELEGATION, /* DNS pre-check: does the name have NS records? */
    EVIDENCE_FAILURE,    /* no reply: timeout, connection or transfer error */
} evidence_kind_t;

/* What the DNS pre-check found about a name. */
typedef enum {
    DNS_NOT_ASKED = 0,
    DNS_DELEGATED,       /* NS records owned by the name */
    DNS_NOT_DELEGATED,   /* NXDOMAIN, or an answer without NS records for it */
    DNS_NO_ANSWER,       /* the lookup failed: says nothing */
} dns_outcome_t;

typedef struct {
    evidence_kind_t kind;
    const char *body;          /* TEXT, HTTP */
    size_t len;
    long http_status;          /* HTTP */
    uint32_t retry_after_s;    /* HTTP: from Retry-After, 0 when absent */
    dns_outcome_t dns;         /* DELEGATION: what the pre-check found; TEXT: what it
                                  found before the registry was asked */
    const char *failure;       /* FAILURE: AV_REASON_TIMEOUT or AV_REASON_REGISTRY_ERROR */
    const char *detail;        /* FAILURE: what went wrong, for the log */
} evidence_t;

typedef struct {
    bool final;                /* false: no verdict yet, ask the registry (a name without delegation) */
    av_status_t status;
    const char *reason;        /* unknown and invalid: one of the reasons table's codes */
    const char *decided_by;    /* the pattern or rule, for audit ("rdap: 404", "dns: delegated", a pattern,
                                  "generic: creation date") */
    bool by_pattern;           /* decided_by is a pattern (or a generic rule) of kind `kind` */
    av_pattern_kind_t kind;
    av_reading_t reading;      /* TEXT: GENERIC when the generic reading decided (its rule, or nothing it knew) */
    av_source_t source;        /* AV_SOURCE_DNS for the pre-check; NONE: the protocol's own */
    uint32_t backoff_s;        /* rate limited: the registry asked for this pause (0: its backoff_s) */
} verdict_t;

/* What the querier does with an unknown answer of a reason. */
typedef struct {
    const char *code;          /* AV_REASON_* */
    const char *meaning;       /* one line, for docs and logs */
    const char *counter;       /* the querier counter it adds to, or NULL */
    bool backs_off;            /* the registry is asked to pause */
    int report_level;          /* an error event at this level, -1 for none */
} verdict_reason_t;

/* The reason's row, or NULL for a code the table lacks. */
const verdict_reason_t *verdict_reason(const char *code);
/* Every row, for docs and tests. */
const verdict_reason_t *verdict_reasons(size_t *count);

/* One rule of the generic reading of whois replies: what it recognises
 * (decided_by, "generic: ...") and its PCRE2 pattern. */
typedef struct {
    av_pattern_kind_t kind;
    const char *decided_by;
    const char *pattern;
} verdict_generic_rule_t;

/* Every rule of the generic reading, each kind's in the order tried, for
 * docs and tests. */
const verdict_generic_rule_t *verdict_generic_rules(size_t *count);

typedef struct verdict_rules verdict_rules_t;

/* A registry's rules: its patterns compiled, and with `reading: generic` the
 * generic reading (compiled once for all such registries). NULL with err on
 * a bad pattern. */
verdict_rules_t *verdict_rules_new(const av_registry_cfg_t *reg, char *err, size_t errlen);
void verdict_rules_destroy(verdict_rules_t **self_p);

/* A whois or DAS reply is read by the registry's own patterns; when none
 * matches and the registry reads generically, by the generic reading, which
 * says `available` only for a vetted "not found" wording with no record data
 * in the reply and evidence->dns == DNS_NOT_DELEGATED (else unknown,
 * unparseable). */
void verdict_decide(verdict_rules_t *rules, const evidence_t *evidence, verdict_t *out);

#endif
