/* libFuzzer target for the querier's reading of whois and DAS replies:
 * verdict_decide with EVIDENCE_TEXT, under the shipped registry table
 * (config/availd.yaml and the registries.yaml it includes; another file
 * with AVAILD_FUZZ_CONFIG). Whatever the reply, the verdict is final, its
 * status one a reply can get, and every unknown has a reason of the table.
 * `available` only by an available pattern of the registry, when no pattern
 * read before it (rate limit, error, reserved, registered) could match; or,
 * for a registry read generically, by a generic "not found" rule when none
 * of the registry's patterns and no generic rule read before it could match
 * and the DNS pre-check found the name undelegated.
 *
 * Input: a first line "[posix:]NAME[ DNS]" picking the registry, the reply
 * after it. NAME is a TLD of the table or a registry's name; "generic" is a
 * registry with no patterns of its own, read generically; "posix:" picks the
 * registry's patterns compiled as POSIX ERE instead of PCRE2 (the table has
 * no POSIX registry, so every one whose patterns compile as ERE gets a twin).
 * DNS is what the pre-check found: delegated, undelegated or no-answer
 * (none: not asked). Any other line picks a registry and a DNS outcome by
 * its hash. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "verdict.h"

#include <czmq.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SELECTOR_MAX_BYTES 64
#define FEATURES 65536

/* Which pattern decided, for each registry, as coverage libFuzzer can see
 * (PCRE2 itself is not instrumented): an input that makes a new pattern of
 * a registry decide is kept. libFuzzer clears these before every run. */
__attribute__((used, section("__libfuzzer_extra_counters"), no_sanitize("address")))
static uint8_t features[FEATURES];

typedef struct {
    const av_registry_cfg_t *reg;
    verdict_rules_t *rules;
    bool posix;
    size_t feature_base;       /* 2 + one per pattern, then one per generic rule, from here */
    /* The patterns read before `available`, compiled as av_patterns
     * compiles them, to prove an available verdict (PCRE2 only); for a
     * generic available, the available ones too (any match would have
     * decided before the generic reading). */
    pcre2_code **before;
    size_t n_before;
    pcre2_code **available;
    size_t n_available;
} rule_set_t;

static av_config_t *config;
static av_registry_cfg_t **twins;  /* POSIX copies, owned */
static size_t n_twins;
static rule_set_t *sets;
static size_t n_sets;
static pcre2_match_data *match;
/* The generic reading's rules, and those read before its "not found". */
static const verdict_generic_rule_t *generic_rules;
static size_t n_generic_rules;
static pcre2_code **generic_before;
static size_t n_generic_before;
/* Registries without patterns of their own read alike (the implicit ones
 * by the hundred): one set for those read generically, one for the others. */
static av_registry_cfg_t generic_registry = {
    .name = "generic", .protocol = AV_PROTO_WHOIS, .reading = AV_READING_GENERIC, .max_reply_bytes = 65536,
};
static av_registry_cfg_t bare_registry = {
    .name = "bare", .protocol = AV_PROTO_WHOIS, .reading = AV_READING_PATTERNS, .max_reply_bytes = 65536,
};
static zhashx_t *by_name;          /* lower-case registry name or TLD -> set index + 1 */

static void
must(bool ok, const char *what, const rule_set_t *s)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz_whois: %s (registry %s, %s)\n", what, s->reg->name, s->posix ? "posix" : "pcre2");
    abort();
}

static pcre2_code *
compile_like_av_patterns(const char *pattern)
{
    int code;
    PCRE2_SIZE at;
    pcre2_compile_context *ctx = pcre2_compile_context_create(NULL);
    pcre2_set_newline(ctx, PCRE2_NEWLINE_ANYCRLF);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_CASELESS | PCRE2_MULTILINE,
                                   &code, &at, ctx);
    pcre2_compile_context_free(ctx);
    if (re)
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static size_t
n_patterns(const av_registry_cfg_t *reg)
{
    size_t n = 0;
    for (int k = 0; k < AV_PAT_KINDS; k++)
        n += reg->patterns[k].count;
    return n;
}

static int
add_set(const av_registry_cfg_t *reg, bool posix, size_t *feature_next)
{
    char err[512];
    rule_set_t *s = &sets[n_sets];
    s->reg = reg;
    s->posix = posix;
    if (!(s->rules = verdict_rules_new(reg, err, sizeof err))) {
        fprintf(stderr, "fuzz_whois: registry %s: %s\n", reg->name, err);
        return -1;
    }
    s->feature_base = *feature_next;
    *feature_next += 2 + n_patterns(reg) + (reg->reading == AV_READING_GENERIC ? n_generic_rules : 0);
    if (!posix) {
        static const av_pattern_kind_t before[] = { AV_PAT_RATE_LIMITED, AV_PAT_ERROR, AV_PAT_RESERVED,
                                                    AV_PAT_REGISTERED };
        s->before = calloc(n_patterns(reg) + 1, sizeof *s->before);
        s->available = calloc(reg->patterns[AV_PAT_AVAILABLE].count + 1, sizeof *s->available);
        for (size_t o = 0; o < sizeof before / sizeof before[0]; o++)
            for (uint32_t i = 0; i < reg->patterns[before[o]].count; i++)
                if (!(s->before[s->n_before++] = compile_like_av_patterns(reg->patterns[before[o]].items[i])))
                    return -1;
        for (uint32_t i = 0; i < reg->patterns[AV_PAT_AVAILABLE].count; i++)
            if (!(s->available[s->n_available++] =
                      compile_like_av_patterns(reg->patterns[AV_PAT_AVAILABLE].items[i])))
                return -1;
    }
    n_sets++;
    return 0;
}

/* The registry's patterns as POSIX ERE, when it has some and every one
 * compiles so. */
static av_registry_cfg_t *
posix_twin(const av_registry_cfg_t *reg)
{
    char why[256];
    if (n_patterns(reg) == 0)
        return NULL;
    for (int k = 0; k < AV_PAT_KINDS; k++)
        for (uint32_t i = 0; i < reg->patterns[k].count; i++)
            if (av_pattern_check(reg->patterns[k].items[i], true, why, sizeof why) < 0)
                return NULL;
    av_registry_cfg_t *twin = av_registry_cfg_dup(reg);
    if (twin)
        twin->posix_patterns = true;
    return twin;
}

static void
name_set(const char *name, size_t index)
{
    char key[256];
    snprintf(key, sizeof key, "%s", name);
    for (char *c = key; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    zhashx_update(by_name, key, (void *)(uintptr_t)(index + 1));
}

static void
name_registry(const av_registry_cfg_t *reg, size_t index)
{
    name_set(reg->name, index);
    for (uint32_t t = 0; t < reg->tlds.count; t++)
        name_set(reg->tlds.items[t], index);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[AV_CONFIG_ERR_MAX];
    const char *path = getenv("AVAILD_FUZZ_CONFIG") ? getenv("AVAILD_FUZZ_CONFIG")
                                                    : AVAILD_SOURCE_DIR "/config/availd.yaml";
    if (av_config_load(path, &config, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_whois: %s\n", err);
        exit(1);
    }
    sets = calloc(2 * config->n_registries + 2, sizeof *sets);
    twins = calloc(config->n_registries, sizeof *twins);
    by_name = zhashx_new();
    match = pcre2_match_data_create(1, NULL);
    generic_rules = verdict_generic_rules(&n_generic_rules);
    generic_before = calloc(n_generic_rules, sizeof *generic_before);
    for (size_t i = 0; i < n_generic_rules; i++)
        if (generic_rules[i].kind != AV_PAT_AVAILABLE &&
            !(generic_before[n_generic_before++] = compile_like_av_patterns(generic_rules[i].pattern)))
            exit(1);
    size_t feature_next = 0, generic_set = n_sets, bare_set = n_sets + 1, alike = 0;
    if (add_set(&generic_registry, false, &feature_next) < 0 || add_set(&bare_registry, false, &feature_next) < 0)
        exit(1);
    name_set("generic", generic_set);
    name_set("bare", bare_set);
    for (uint32_t i = 0; i < config->n_registries; i++) {
        const av_registry_cfg_t *reg = &config->registries[i];
        if (n_patterns(reg) == 0) {
            name_registry(reg, reg->reading == AV_READING_GENERIC ? generic_set : bare_set);
            alike++;
            continue;
        }
        name_registry(reg, n_sets);
        if (add_set(reg, false, &feature_next) < 0)
            exit(1);
        av_registry_cfg_t *twin = posix_twin(reg);
        if (twin) {
            twins[n_twins++] = twin;
            if (add_set(twin, true, &feature_next) < 0)
                exit(1);
        }
    }
    fprintf(stderr,
            "fuzz_whois: %s: %u registries, %zu of them without patterns of their own, %zu with a POSIX twin; "
            "%zu features\n",
            path, config->n_registries, alike, n_twins, feature_next);
    return 0;
}

static const rule_set_t *
pick(const char *line, size_t len, dns_outcome_t *dns)
{
    static const struct {
        const char *word;
        dns_outcome_t dns;
    } outcomes[] = { { " delegated", DNS_DELEGATED }, { " undelegated", DNS_NOT_DELEGATED },
                     { " no-answer", DNS_NO_ANSWER } };
    *dns = DNS_NOT_ASKED;
    size_t name_len = len;
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) {
        size_t n = strlen(outcomes[i].word);
        if (len >= n && memcmp(line + len - n, outcomes[i].word, n) == 0) {
            *dns = outcomes[i].dns;
            name_len = len - n;
        }
    }
    bool posix = name_len >= 6 && strncmp(line, "posix:", 6) == 0;
    const char *name = posix ? line + 6 : line;
    if (posix)
        name_len -= 6;
    char key[SELECTOR_MAX_BYTES + 1];
    for (size_t i = 0; i < name_len; i++)
        key[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    key[name_len] = '\0';
    size_t found = memchr(key, '\0', name_len) ? 0 : (size_t)(uintptr_t)zhashx_lookup(by_name, key);
    if (found) {
        const rule_set_t *s = &sets[found - 1];
        /* A registry's twin, when it has one, comes right after it. */
        if (posix && found < n_sets && sets[found].posix && sets[found].reg != s->reg &&
            strcmp(sets[found].reg->name, s->reg->name) == 0)
            return &sets[found];
        return s;
    }
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)line[i]) * 16777619u;
    *dns = (dns_outcome_t)(h >> 28 & 3);
    return &sets[h % n_sets];
}

static bool
only_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

/* The index of the deciding pattern among the registry's, or -1. */
static long
pattern_index(const av_registry_cfg_t *reg, av_pattern_kind_t kind, const char *text)
{
    long base = 0;
    for (int k = 0; k < AV_PAT_KINDS; k++) {
        for (uint32_t i = 0; i < reg->patterns[k].count; i++)
            if ((av_pattern_kind_t)k == kind && reg->patterns[k].items[i] == text)
                return base + i;
        base += reg->patterns[k].count;
    }
    return -1;
}

static bool
known_reason(const char *reason)
{
    size_t n;
    const verdict_reason_t *all = verdict_reasons(&n);
    for (size_t i = 0; reason && i < n; i++)
        if (all[i].code == reason || strcmp(all[i].code, reason) == 0)
            return true;
    return false;
}

/* The generic rule that decided, or -1. */
static long
generic_index(av_pattern_kind_t kind, const char *decided_by)
{
    for (size_t i = 0; decided_by && i < n_generic_rules; i++)
        if (generic_rules[i].kind == kind && strcmp(generic_rules[i].decided_by, decided_by) == 0)
            return (long)i;
    return -1;
}

/* None of these may match the reply, nor fail to run on it (a match limit
 * is no proof of "no match"). */
static void
none_matches(pcre2_code *const *codes, size_t n, const evidence_t *e, const char *what, const rule_set_t *s)
{
    for (size_t i = 0; i < n; i++) {
        int rc = pcre2_match(codes[i], (PCRE2_SPTR)e->body, e->len, 0, 0, match, NULL);
        if (rc != PCRE2_ERROR_NOMATCH) {
            fprintf(stderr, "fuzz_whois: %s: pattern %zu %s\n", what, i, rc >= 0 ? "matches" : "failed to run");
            must(false, "a wrong available", s);
        }
    }
}

static const av_status_t status_of[AV_PAT_KINDS] = {
    [AV_PAT_AVAILABLE] = AV_STATUS_AVAILABLE,   [AV_PAT_REGISTERED] = AV_STATUS_REGISTERED,
    [AV_PAT_RESERVED] = AV_STATUS_RESERVED,     [AV_PAT_RATE_LIMITED] = AV_STATUS_UNKNOWN,
    [AV_PAT_ERROR] = AV_STATUS_UNKNOWN,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *lf = memchr(text, '\n', size < SELECTOR_MAX_BYTES ? size : SELECTOR_MAX_BYTES);
    size_t line_len = lf ? (size_t)(lf - text) : (size < SELECTOR_MAX_BYTES ? size : SELECTOR_MAX_BYTES);
    dns_outcome_t dns;
    const rule_set_t *s = pick(text, line_len, &dns);
    size_t off = lf ? line_len + 1 : line_len;
    /* The querier reads no more than max_reply_bytes of a reply. */
    size_t len = size - off < s->reg->max_reply_bytes ? size - off : s->reg->max_reply_bytes;
    evidence_t e = { .kind = EVIDENCE_TEXT, .body = len ? text + off : NULL, .len = len, .dns = dns };
    verdict_t v;
    verdict_decide(s->rules, &e, &v);

    must(v.final, "a reply's verdict is not final", s);
    must((unsigned)v.status < AV_STATUS_COUNT && v.status != AV_STATUS_INVALID, "status out of range", s);
    must(v.source == AV_SOURCE_NONE, "a reply's verdict names a source", s);
    if (v.status == AV_STATUS_UNKNOWN)
        must(known_reason(v.reason), "unknown without a reason of verdict_reasons()", s);
    else
        must(v.reason == NULL, "a definite verdict with a reason", s);
    bool empty = len == 0 || only_space(e.body, len);
    if (empty)
        must(v.status == AV_STATUS_UNKNOWN && strcmp(v.reason, AV_REASON_EMPTY_REPLY) == 0,
             "an empty reply is not unknown (empty_reply)", s);
    if (v.by_pattern && v.kind == AV_PAT_RATE_LIMITED)
        must(v.status == AV_STATUS_UNKNOWN && strcmp(v.reason, AV_REASON_RATE_LIMITED) == 0,
             "a rate-limit pattern without rate_limited", s);
    if (v.by_pattern && v.kind == AV_PAT_ERROR)
        must(v.status == AV_STATUS_UNKNOWN && strcmp(v.reason, AV_REASON_REGISTRY_ERROR) == 0,
             "an error pattern without registry_error", s);
    if (!v.by_pattern)
        must(v.status == AV_STATUS_UNKNOWN, "a definite verdict without a pattern", s);

    size_t feature = s->feature_base + empty;
    if (v.reading == AV_READING_GENERIC) {
        /* The registry's patterns said nothing; the generic reading decided. */
        must(s->reg->reading == AV_READING_GENERIC, "read generically, yet the registry reads by patterns", s);
        long rule = v.by_pattern ? generic_index(v.kind, v.decided_by) : -1;
        if (v.by_pattern && rule < 0) {
            /* Its "not found" without an undelegated name: unknown. */
            must(v.kind == AV_PAT_AVAILABLE && dns != DNS_NOT_DELEGATED && v.status == AV_STATUS_UNKNOWN &&
                     strcmp(v.reason, AV_REASON_UNPARSEABLE) == 0,
                 "decided by something the generic reading does not have", s);
        } else if (v.by_pattern) {
            must(v.status == status_of[v.kind], "the status is not the generic rule's", s);
            feature = s->feature_base + 2 + n_patterns(s->reg) + (size_t)rule;
        }
        if (v.status == AV_STATUS_AVAILABLE) {
            must(dns == DNS_NOT_DELEGATED, "a generic available without DNS saying undelegated", s);
            none_matches(s->before, s->n_before, &e, "generic available, a registry pattern", s);
            none_matches(s->available, s->n_available, &e, "generic available, a registry pattern", s);
            none_matches(generic_before, n_generic_before, &e, "generic available, an earlier generic rule", s);
        }
    } else {
        long index = -1;
        if (v.by_pattern) {
            must(v.decided_by != NULL, "decided by a pattern without naming it", s);
            index = pattern_index(s->reg, v.kind, v.decided_by);
            must(index >= 0, "decided by a pattern the registry does not have", s);
            must(v.status == status_of[v.kind], "the status is not the deciding pattern's", s);
            feature = s->feature_base + 2 + (size_t)index;
        } else if (s->reg->reading == AV_READING_GENERIC && !empty) {
            must(false, "a registry read generically, and the generic reading was not asked", s);
        }
        if (v.status == AV_STATUS_AVAILABLE) {
            must(v.by_pattern && v.kind == AV_PAT_AVAILABLE, "available, not by an available pattern", s);
            /* Never a wrong available: every pattern read before it says
             * "no match". */
            none_matches(s->before, s->n_before, &e, "available, an earlier pattern", s);
        }
    }
    features[feature % FEATURES]++;
    return 0;
}
