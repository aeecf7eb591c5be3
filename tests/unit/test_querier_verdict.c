/* Unit tests of the querier's verdict: what a whois or DAS reply gets from
 * its registry's patterns (the precedence between pattern kinds, the unknown
 * reasons), what an RDAP reply gets from its HTTP status and RFC 8056
 * statuses, what the DNS pre-check may decide, and the table of reasons.
 * The behaviour tests run twice, once per pattern syntax (PCRE2 and POSIX
 * ERE), with equivalent patterns, so both engines are held to one contract.
 * The generic reading of whois replies (`reading: generic`) is tested here
 * rule by rule; tests/unit/test_querier_generic.c measures it on the real
 * answers of ../shared/fixtures/whois. */
#include "verdict.h"

#include "unit_files.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* ---- fixture and helpers ------------------------------------------------ */

/* A whois or DAS reply, as the querier hands it to the verdict. */
static void
decide_text(verdict_rules_t *rules, const char *reply, size_t len, verdict_t *out)
{
    evidence_t e = { .kind = EVIDENCE_TEXT, .body = reply, .len = len };
    verdict_decide(rules, &e, out);
    assert_true(out->final);
}

/* Set by the group setup: which syntax this run of the behaviour tests uses. */
static bool use_posix;

typedef struct {
    av_registry_cfg_t reg;     /* built by hand; owns its pattern strings */
    verdict_rules_t *cls;
    char err[256];
} fixture_t;

static int
group_pcre2(void **state)
{
    (void)state;
    use_posix = false;
    return 0;
}

static int
group_posix(void **state)
{
    (void)state;
    use_posix = true;
    return 0;
}

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->reg.name = strdup("example-registry");
    f->reg.posix_patterns = use_posix;
    *state = f;
    return f->reg.name ? 0 : -1;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    verdict_rules_destroy(&f->cls);
    for (int k = 0; k < AV_PAT_KINDS; k++) {
        for (uint32_t i = 0; i < f->reg.patterns[k].count; i++)
            free(f->reg.patterns[k].items[i]);
        free(f->reg.patterns[k].items);
    }
    free(f->reg.name);
    free(f);
    return 0;
}

static void
add_pattern(fixture_t *f, av_pattern_kind_t kind, const char *pattern)
{
    av_strlist_t *list = &f->reg.patterns[kind];
    char **grown = realloc(list->items, (list->count + 1) * sizeof *grown);
    assert_non_null(grown);
    list->items = grown;
    assert_non_null(list->items[list->count] = strdup(pattern));
    list->count++;
}

/* Patterns in the style of real whois servers, written once per syntax.
 * The kinds are added in an order unlike the decision order on purpose. */
static void
add_registry_patterns(fixture_t *f)
{
    const char *space = use_posix ? "[[:space:]]" : "\\s";
    char buf[128];
    add_pattern(f, AV_PAT_AVAILABLE, "^No match for");
    add_pattern(f, AV_PAT_AVAILABLE, "^NOT FOUND");
    snprintf(buf, sizeof buf, "^%s*Domain Name:", space);
    add_pattern(f, AV_PAT_REGISTERED, buf);
    add_pattern(f, AV_PAT_REGISTERED, "^Registrar:");
    add_pattern(f, AV_PAT_RESERVED, "reserved (by|for) the registry");
    snprintf(buf, sizeof buf, "^Status:%s*reserved", space);
    add_pattern(f, AV_PAT_RESERVED, buf);
    add_pattern(f, AV_PAT_RATE_LIMITED, "rate limit exceeded");
    add_pattern(f, AV_PAT_RATE_LIMITED, "too many (queries|requests)");
}

static void
build(fixture_t *f)
{
    f->cls = verdict_rules_new(&f->reg, f->err, sizeof f->err);
    if (!f->cls)
        fail_msg("classifier refused: %s", f->err);
}

/* The fixture's classifier with add_registry_patterns, built once. */
static verdict_rules_t *
registry_classifier(fixture_t *f)
{
    if (!f->cls) {
        add_registry_patterns(f);
        build(f);
    }
    return f->cls;
}

static verdict_t
classify_n(fixture_t *f, const char *reply, size_t len)
{
    verdict_t v;
    decide_text(registry_classifier(f), reply, len, &v);
    return v;
}

static verdict_t
classify(fixture_t *f, const char *reply)
{
    return classify_n(f, reply, strlen(reply));
}

static void
assert_status(verdict_t v, av_status_t status, const char *reason)
{
    if (v.status != status || (reason ? !v.reason || strcmp(v.reason, reason) != 0 : v.reason != NULL))
        fail_msg("%s: want %s/%s, got %s/%s (pattern %s)", use_posix ? "posix" : "pcre2", av_status_name(status),
                 reason ? reason : "-", av_status_name(v.status), v.reason ? v.reason : "-",
                 v.decided_by ? v.decided_by : "none");
}

/* Replies as registries send them: CRLF line ends, a banner first. */
#define BANNER "% Example WHOIS server\r\n% Terms of use apply.\r\n\r\n"
#define AVAILABLE_REPLY BANNER "No match for \"FREE-NAME.COM\".\r\n>>> Last update: 2024-01-01 <<<\r\n"
#define REGISTERED_REPLY BANNER "   Domain Name: EXAMPLE.COM\r\n   Registry Domain ID: 2336799_DOMAIN\r\n"
#define RESERVED_REPLY BANNER "Domain: nic.example\r\nStatus: Reserved\r\n"
#define RATE_LIMITED_REPLY BANNER "WHOIS LIMIT EXCEEDED - Rate limit exceeded, try again later.\r\n"

/* ---- one verdict per kind ----------------------------------------------- */

static void
test_available_reply_is_available(void **state)
{
    fixture_t *f = *state;
    verdict_t v = classify(f, AVAILABLE_REPLY);
    assert_status(v, AV_STATUS_AVAILABLE, NULL);
    assert_int_equal(v.kind, AV_PAT_AVAILABLE);
    assert_string_equal(v.decided_by, "^No match for");
}

static void
test_registered_reply_is_registered(void **state)
{
    fixture_t *f = *state;
    verdict_t v = classify(f, REGISTERED_REPLY);
    assert_status(v, AV_STATUS_REGISTERED, NULL);
    assert_int_equal(v.kind, AV_PAT_REGISTERED);
    assert_non_null(strstr(v.decided_by, "Domain Name:"));
}

static void
test_reserved_reply_is_reserved(void **state)
{
    fixture_t *f = *state;
    verdict_t v = classify(f, RESERVED_REPLY);
    assert_status(v, AV_STATUS_RESERVED, NULL);
    assert_int_equal(v.kind, AV_PAT_RESERVED);
    assert_non_null(strstr(v.decided_by, "^Status:"));
}

static void
test_rate_limited_reply_is_unknown_rate_limited(void **state)
{
    fixture_t *f = *state;
    verdict_t v = classify(f, RATE_LIMITED_REPLY);
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED);
    assert_string_equal(v.reason, "rate_limited");
    assert_int_equal(v.kind, AV_PAT_RATE_LIMITED);
    assert_string_equal(v.decided_by, "rate limit exceeded");
}

/* ---- precedence --------------------------------------------------------- */

static void
test_rate_limit_wins_over_every_other_match(void **state)
{
    fixture_t *f = *state;
    /* A throttled reply can quote the name and the usual wording. */
    verdict_t v = classify(f,
        "No match for \"EXAMPLE.COM\".\r\n"
        "Domain Name: EXAMPLE.COM\r\n"
        "Status: reserved\r\n"
        "Too many queries from your address.\r\n");
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED);
    assert_int_equal(v.kind, AV_PAT_RATE_LIMITED);
}

static void
test_reserved_and_registered_win_over_available(void **state)
{
    fixture_t *f = *state;
    /* A reply that could mean either is never `available`. */
    assert_status(classify(f, "No match for \"X.COM\".\r\nDomain Name: X.COM\r\n"), AV_STATUS_REGISTERED, NULL);
    assert_status(classify(f, "Domain Name: X.COM\r\nNo match for \"X.COM\".\r\n"), AV_STATUS_REGISTERED, NULL);
    assert_status(classify(f, "NOT FOUND\r\nThis name is reserved by the registry.\r\n"), AV_STATUS_RESERVED, NULL);
    /* And reserved wins over registered. */
    assert_status(classify(f, "Registrar: Example Inc.\r\nStatus: reserved\r\n"), AV_STATUS_RESERVED, NULL);
}

/* ---- unknown ------------------------------------------------------------ */

static void
test_no_match_is_unknown_unparseable(void **state)
{
    fixture_t *f = *state;
    verdict_t v = classify(f, BANNER "Something the patterns never saw.\r\n");
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
    assert_string_equal(v.reason, "unparseable");
    assert_null(v.decided_by);
}

static void
test_empty_and_whitespace_replies_are_unknown_empty_reply(void **state)
{
    fixture_t *f = *state;
    const char *blank[] = { "", " ", "\r\n", " \t\r\n \r\n\n" };
    for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++) {
        verdict_t v = classify(f, blank[i]);
        assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_EMPTY_REPLY);
        assert_null(v.decided_by);
    }
    assert_string_equal(AV_REASON_EMPTY_REPLY, "empty_reply");
    /* A NULL reply of length 0 is empty too, not a crash. */
    assert_status(classify_n(f, NULL, 0), AV_STATUS_UNKNOWN, AV_REASON_EMPTY_REPLY);
}

static void
test_classifier_without_patterns_finds_everything_unparseable(void **state)
{
    fixture_t *f = *state;
    build(f); /* no pattern added */
    verdict_t v;
    decide_text(f->cls, AVAILABLE_REPLY, strlen(AVAILABLE_REPLY), &v);
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
}

/* ---- how patterns match ------------------------------------------------- */

static void
test_matching_ignores_case(void **state)
{
    fixture_t *f = *state;
    assert_status(classify(f, "no MATCH For \"x.com\"\r\n"), AV_STATUS_AVAILABLE, NULL);
    assert_status(classify(f, "DOMAIN NAME: X.COM\r\n"), AV_STATUS_REGISTERED, NULL);
    assert_status(classify(f, "RATE LIMIT EXCEEDED\r\n"), AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED);
}

static void
test_caret_anchors_at_every_line_start(void **state)
{
    fixture_t *f = *state;
    /* The verdict line is deep in the reply, after CRLF lines. */
    assert_status(classify(f, AVAILABLE_REPLY), AV_STATUS_AVAILABLE, NULL);
    assert_status(classify(f, "line one\nline two\nNOT FOUND\n"), AV_STATUS_AVAILABLE, NULL);
    /* ...but ^ does not match inside a line. */
    assert_status(classify(f, "Note: No match for this is not a verdict.\r\n"), AV_STATUS_UNKNOWN,
                  AV_REASON_UNPARSEABLE);
}

static void
test_bytes_that_are_not_utf8_do_not_break_matching(void **state)
{
    fixture_t *f = *state;
    /* Latin-1 e-acute and stray bytes, around and inside the verdict line. */
    assert_status(classify(f, "   Domain Name: caf\xe9.fr\r\n"), AV_STATUS_REGISTERED, NULL);
    assert_status(classify(f, "\xff\xfe\xe9\xc3\r\nNo match for \"caf\xe9.com\"\r\n"), AV_STATUS_AVAILABLE, NULL);
    assert_status(classify(f, "\xe9\xe9\xe9\r\n\x80\x81\r\n"), AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
}

static void
test_dollar_matches_at_the_end_of_a_crlf_line(void **state)
{
    fixture_t *f = *state;
    /* Whois lines end in CRLF: `$` must match before "\r\n", in both
     * syntaxes, or an exact-line pattern never matches a real reply. */
    add_pattern(f, AV_PAT_AVAILABLE, "^Status: free$");
    add_pattern(f, AV_PAT_REGISTERED, "^Status: connect$");
    build(f);
    verdict_t v;
    decide_text(f->cls, "Domain: x.de\r\nStatus: free\r\n", 28, &v);
    assert_status(v, AV_STATUS_AVAILABLE, NULL);
    decide_text(f->cls, "Domain: x.de\r\nStatus: connect\r\nChanged: 2020\r\n", 45, &v);
    assert_status(v, AV_STATUS_REGISTERED, NULL);
    decide_text(f->cls, "Status: freedom\r\n", 17, &v);
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
}

static void
test_a_nul_byte_does_not_hide_the_rest_of_the_reply(void **state)
{
    fixture_t *f = *state;
    /* PCRE2 reads the whole length; regexec would stop at the NUL unless
     * the classifier makes both see the same reply. */
    const char reply[] = "junk\0\nNo match for \"x.com\"\r\n";
    assert_status(classify_n(f, reply, sizeof reply - 1), AV_STATUS_AVAILABLE, NULL);
}

static void
test_only_the_given_length_is_matched(void **state)
{
    fixture_t *f = *state;
    /* The reply buffer is not NUL-terminated: bytes past len are not the reply. */
    const char buf[] = "partial\nNo match for \"X.COM\"\r\n";
    assert_status(classify_n(f, buf, 7), AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
    assert_status(classify_n(f, buf, sizeof buf - 1), AV_STATUS_AVAILABLE, NULL);
    /* A long reply after a short one: the POSIX scratch copy grows. */
    char big[20000];
    memset(big, 'z', sizeof big);
    memcpy(big + sizeof big - 12, "\nNOT FOUND\r\n", 12);
    assert_status(classify_n(f, big, sizeof big), AV_STATUS_AVAILABLE, NULL);
}

static void
test_bad_pattern_fails_the_classifier_with_the_reason(void **state)
{
    fixture_t *f = *state;
    add_pattern(f, AV_PAT_AVAILABLE, "^No match for");
    add_pattern(f, AV_PAT_REGISTERED, "(unclosed");
    assert_null(verdict_rules_new(&f->reg, f->err, sizeof f->err));
    assert_non_null(strstr(f->err, "registry example-registry: registered pattern '(unclosed': "));
}


/* ---- the generic reading (registries with `reading: generic`) ----------- */

/* A reply as the querier hands it, with what the DNS pre-check found. */
static verdict_t
classify_dns(verdict_rules_t *rules, const char *reply, dns_outcome_t dns)
{
    evidence_t e = { .kind = EVIDENCE_TEXT, .body = reply, .len = strlen(reply), .dns = dns };
    verdict_t v;
    verdict_decide(rules, &e, &v);
    assert_true(v.final);
    return v;
}

/* The fixture's registry reading generically, with no patterns of its own. */
static verdict_rules_t *
generic_classifier(fixture_t *f)
{
    f->reg.reading = AV_READING_GENERIC;
    build(f);
    return f->cls;
}

#define GENERIC_FREE_REPLY BANNER "No match for \"FREE-NAME.TEST\".\r\n>>> Last update of WHOIS database: 2024-01-01 <<<\r\n"

static void
test_generic_available_needs_dns_to_say_not_delegated(void **state)
{
    fixture_t *f = *state;
    verdict_rules_t *rules = generic_classifier(f);
    verdict_t v = classify_dns(rules, GENERIC_FREE_REPLY, DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_AVAILABLE, NULL);
    assert_int_equal(v.reading, AV_READING_GENERIC);
    assert_true(v.by_pattern);
    assert_int_equal(v.kind, AV_PAT_AVAILABLE);
    assert_string_equal(v.decided_by, "generic: no match");
    /* The same words without DNS saying "not delegated" are not enough. */
    const dns_outcome_t unsure[] = { DNS_NOT_ASKED, DNS_NO_ANSWER, DNS_DELEGATED };
    for (size_t i = 0; i < sizeof unsure / sizeof unsure[0]; i++) {
        v = classify_dns(rules, GENERIC_FREE_REPLY, unsure[i]);
        assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
        assert_int_equal(v.reading, AV_READING_GENERIC);
        assert_non_null(strstr(v.decided_by, "generic: not found, but the DNS pre-check"));
    }
    /* Other common wordings, each vetted against the corpus. */
    const char *free_replies[] = {
        "NOT FOUND\r\n", "No Data Found\r\n", "Domain not found.\r\n", "%% No entries found for the selected source(s).\r\n",
        "Data not found. This domain is available for registration.\r\n", "Domain Status: Available\r\n",
        "The queried object does not exist: DOMAIN NOT FOUND\r\n",
    };
    for (size_t i = 0; i < sizeof free_replies / sizeof free_replies[0]; i++) {
        assert_status(classify_dns(rules, free_replies[i], DNS_NOT_DELEGATED), AV_STATUS_AVAILABLE, NULL);
        assert_status(classify_dns(rules, free_replies[i], DNS_NOT_ASKED), AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
    }
}

static void
test_generic_record_data_wins_over_not_found_wording(void **state)
{
    fixture_t *f = *state;
    verdict_rules_t *rules = generic_classifier(f);
    /* A reply with a "not found" AND what only a record holds is registered,
     * whatever DNS says: the words could be about something else. */
    const struct {
        const char *reply, *decided_by;
    } taken[] = {
        { "No match for \"X.TEST\".\r\nCreation Date: 2001-07-31T23:57:50Z\r\n", "generic: creation date" },
        { "Domain Name: x.test\r\nRegistry Expiry Date: 2030-01-01\r\nNOT FOUND\r\n", "generic: expiry date" },
        { "NOT FOUND\r\nName Server: ns1.example.net\r\n", "generic: name server" },
        { "Domain not found\r\nRegistrant:\r\n   Example Ltd\r\n", "generic: registrant" },
        { "Domain Status: clientTransferProhibited https://icann.org/epp#clientTransferProhibited\r\nNot found\r\n",
          "generic: EPP status" },
        { "Status: pendingDelete\r\nNo Data Found\r\n", "generic: redemption or pending delete" },
        { "[Created on]                    2005/05/30\r\nNo match!!\r\n", "generic: creation date" },
        { "Nameservers:\r\n\tns1.example.net\r\nnot found\r\n", "generic: name server list" },
    };
    for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++) {
        verdict_t v = classify_dns(rules, taken[i].reply, DNS_NOT_DELEGATED);
        assert_status(v, AV_STATUS_REGISTERED, NULL);
        assert_string_equal(v.decided_by, taken[i].decided_by);
        assert_int_equal(v.kind, AV_PAT_REGISTERED);
    }
    /* A "Domain Name:" line alone is no record: free answers echo the name. */
    verdict_t v = classify_dns(rules, "Domain Name: x.test\r\nDomain Status: No Object Found\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_AVAILABLE, NULL);
    /* Reserved, then throttling, before all that. */
    v = classify_dns(rules, "Reserved by Registry\r\nCreation Date: 2001-01-01\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_RESERVED, NULL);
    assert_string_equal(v.decided_by, "generic: reserved by");
    v = classify_dns(rules, "Creation Date: 2001-01-01\r\nWHOIS LIMIT EXCEEDED - try again later\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED);
    assert_int_equal(v.kind, AV_PAT_RATE_LIMITED);
    /* A server's error that names the query is no "not found". */
    v = classify_dns(rules, "Invalid domain name: x.test not found\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_REGISTRY_ERROR);
    /* Terms of use are not throttling, nor a reservation. */
    v = classify_dns(rules, "NOT FOUND\r\nAccess to the whois service is rate limited. All rights reserved.\r\n"
                            "If too many queries are received, access is expressly prohibited.\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_AVAILABLE, NULL);
    /* And what it does not know stays unknown. */
    v = classify_dns(rules, BANNER "Something no registry says.\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
    assert_null(v.decided_by);
    assert_int_equal(v.reading, AV_READING_GENERIC);
}

static void
test_own_patterns_are_tried_before_the_generic_reading(void **state)
{
    fixture_t *f = *state;
    add_pattern(f, AV_PAT_AVAILABLE, "^Status: free$");
    add_pattern(f, AV_PAT_REGISTERED, "^Status: connect$");
    add_pattern(f, AV_PAT_RATE_LIMITED, "^Slow, friend$");
    verdict_rules_t *rules = generic_classifier(f);
    /* The registry's own words decide, whatever the generic rules see... */
    verdict_t v = classify_dns(rules, "Status: free\r\nChanged: 2020-01-01\r\n", DNS_NOT_ASKED);
    assert_status(v, AV_STATUS_AVAILABLE, NULL);
    assert_string_equal(v.decided_by, "^Status: free$");
    assert_int_equal(v.reading, AV_READING_PATTERNS);
    v = classify_dns(rules, "Slow, friend\r\nCreation Date: 2001-01-01\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_RATE_LIMITED);
    assert_string_equal(v.decided_by, "^Slow, friend$");
    v = classify_dns(rules, "Status: connect\r\nNOT FOUND\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_REGISTERED, NULL);
    assert_int_equal(v.reading, AV_READING_PATTERNS);
    /* ...and what they do not recognise goes to the generic reading. */
    v = classify_dns(rules, "Registrar: Example Registrar Ltd\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_REGISTERED, NULL);
    assert_string_equal(v.decided_by, "generic: registrar");
    assert_int_equal(v.reading, AV_READING_GENERIC);
    v = classify_dns(rules, "NOT FOUND\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_AVAILABLE, NULL);
    assert_int_equal(v.reading, AV_READING_GENERIC);
    /* A registry reading by its patterns alone never reads generically. */
    f->reg.reading = AV_READING_PATTERNS;
    verdict_rules_t *patterns_only = verdict_rules_new(&f->reg, f->err, sizeof f->err);
    assert_non_null(patterns_only);
    v = classify_dns(patterns_only, "Registrar: Example Registrar Ltd\r\n", DNS_NOT_DELEGATED);
    assert_status(v, AV_STATUS_UNKNOWN, AV_REASON_UNPARSEABLE);
    assert_int_equal(v.reading, AV_READING_PATTERNS);
    verdict_rules_destroy(&patterns_only);
}

static void
test_generic_rules_are_shared_and_outlive_each_registry(void **state)
{
    fixture_t *f = *state;
    f->reg.reading = AV_READING_GENERIC;
    verdict_rules_t *a = verdict_rules_new(&f->reg, f->err, sizeof f->err);
    verdict_rules_t *b = verdict_rules_new(&f->reg, f->err, sizeof f->err);
    assert_non_null(a);
    assert_non_null(b);
    verdict_rules_destroy(&a);
    assert_status(classify_dns(b, "NOT FOUND\r\n", DNS_NOT_DELEGATED), AV_STATUS_AVAILABLE, NULL);
    verdict_rules_destroy(&b);
    /* Compiled again for the next one. */
    a = verdict_rules_new(&f->reg, f->err, sizeof f->err);
    assert_non_null(a);
    assert_status(classify_dns(a, "Creation Date: 2001-01-01\r\n", DNS_NOT_DELEGATED), AV_STATUS_REGISTERED, NULL);
    verdict_rules_destroy(&a);
}

static void
test_generic_rules_table(void **state)
{
    (void)state;
    size_t n, per_kind[AV_PAT_KINDS] = { 0 };
    const verdict_generic_rule_t *rules = verdict_generic_rules(&n);
    assert_true(n >= 40);
    for (size_t i = 0; i < n; i++) {
        assert_true((unsigned)rules[i].kind < AV_PAT_KINDS);
        assert_non_null(rules[i].pattern);
        assert_int_equal(strncmp(rules[i].decided_by, "generic: ", 9), 0);
        char why[200];
        if (av_pattern_check(rules[i].pattern, false, why, sizeof why) != 0)
            fail_msg("%s: %s", rules[i].decided_by, why);
        per_kind[rules[i].kind]++;
    }
    for (int k = 0; k < AV_PAT_KINDS; k++)
        assert_true(per_kind[k] > 0);
}

static void
test_every_unknown_of_the_generic_reading_has_a_row_in_the_reasons_table(void **state)
{
    fixture_t *f = *state;
    verdict_rules_t *rules = generic_classifier(f);
    const char *replies[] = {
        "", " \r\n", "Too many queries from your address\r\n", "Invalid query\r\n", BANNER "nothing known\r\n",
        GENERIC_FREE_REPLY,
    };
    const dns_outcome_t dns[] = { DNS_NOT_ASKED, DNS_DELEGATED, DNS_NOT_DELEGATED, DNS_NO_ANSWER };
    size_t unknowns = 0;
    for (size_t i = 0; i < sizeof replies / sizeof replies[0]; i++) {
        for (size_t d = 0; d < sizeof dns / sizeof dns[0]; d++) {
            verdict_t v = classify_dns(rules, replies[i], dns[d]);
            if (v.status != AV_STATUS_UNKNOWN) {
                assert_null(v.reason);
                continue;
            }
            unknowns++;
            if (!verdict_reason(v.reason))
                fail_msg("reply %zu: reason %s not in the table", i, v.reason ? v.reason : "(none)");
        }
    }
    assert_int_equal(unknowns, sizeof replies / sizeof replies[0] * 4 - 1); /* all but the free reply, undelegated */
    /* Throttling words back the registry off, as its own patterns' do. */
    verdict_t v = classify_dns(rules, "Too many queries from your address\r\n", DNS_NOT_DELEGATED);
    assert_true(verdict_reason(v.reason)->backs_off);
}

/* ---- RDAP: the HTTP status, then the record's statuses ------------------ */

static verdict_t
decide_http(long status, const char *body, uint32_t retry_after_s)
{
    evidence_t e = { .kind = EVIDENCE_HTTP, .http_status = status, .body = body, .len = body ? strlen(body) : 0,
                     .retry_after_s = retry_after_s };
    verdict_t v;
    verdict_decide(NULL, &e, &v); /* RDAP needs no patterns */
    assert_true(v.final);
    return v;
}

static void
test_rdap_404_is_available_and_200_registered(void **state)
{
    (void)state;
    verdict_t v = decide_http(404, "{\"errorCode\":404}", 0);
    assert_int_equal(v.status, AV_STATUS_AVAILABLE);
    assert_string_equal(v.decided_by, "rdap: 404");
    assert_null(v.reason);
    v = decide_http(200, "{\"objectClassName\":\"domain\",\"status\":[\"active\",\"client transfer prohibited\"]}", 0);
    assert_int_equal(v.status, AV_STATUS_REGISTERED);
    assert_string_equal(v.decided_by, "rdap: 200");
    /* A 200 whose body is not JSON is still a record: registered, never available. */
    v = decide_http(200, "<html>surprise</html>", 0);
    assert_int_equal(v.status, AV_STATUS_REGISTERED);
    v = decide_http(200, NULL, 0);
    assert_int_equal(v.status, AV_STATUS_REGISTERED);
}

static void
test_rdap_statuses_reserved_and_redemption(void **state)
{
    (void)state;
    verdict_t v = decide_http(200, "{\"status\":[\"Reserved\"]}", 0);
    assert_int_equal(v.status, AV_STATUS_RESERVED);
    assert_string_equal(v.decided_by, "rdap: status reserved");
    v = decide_http(200, "{\"status\":[\"blocked\"]}", 0);
    assert_int_equal(v.status, AV_STATUS_RESERVED);
    /* RFC 8056: a name in redemption or pending delete is still taken. */
    const char *taken[] = { "redemption period", "pending delete", "pending restore" };
    for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"status\":[\"active\",\"%s\"]}", taken[i]);
        v = decide_http(200, body, 0);
        assert_int_equal(v.status, AV_STATUS_REGISTERED);
        assert_string_equal(v.decided_by, "rdap: status in redemption or pending delete");
    }
    /* Statuses that are not strings are passed over. */
    v = decide_http(200, "{\"status\":[1,null,{\"a\":\"reserved\"}]}", 0);
    assert_int_equal(v.status, AV_STATUS_REGISTERED);
}

static void
test_rdap_429_and_503_are_rate_limited_with_the_pause_asked(void **state)
{
    (void)state;
    verdict_t v = decide_http(429, "", 30);
    assert_int_equal(v.status, AV_STATUS_UNKNOWN);
    assert_string_equal(v.reason, AV_REASON_RATE_LIMITED);
    assert_string_equal(v.decided_by, "rdap: 429");
    assert_int_equal(v.backoff_s, 30);
    v = decide_http(503, NULL, 0);
    assert_string_equal(v.reason, AV_REASON_RATE_LIMITED);
    assert_string_equal(v.decided_by, "rdap: 503");
    assert_int_equal(v.backoff_s, 0); /* the registry's own backoff_s then */
}

static void
test_rdap_other_statuses_are_unknown_http_status(void **state)
{
    (void)state;
    const long codes[] = { 0, 301, 400, 403, 500, 502 };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        verdict_t v = decide_http(codes[i], "{\"status\":[]}", 0);
        assert_int_equal(v.status, AV_STATUS_UNKNOWN);
        assert_string_equal(v.reason, AV_REASON_HTTP_STATUS);
    }
}

/* ---- the DNS pre-check and failures ------------------------------------ */

static void
test_a_delegation_is_registered_and_none_decides_nothing(void **state)
{
    (void)state;
    evidence_t e = { .kind = EVIDENCE_DELEGATION, .dns = DNS_DELEGATED };
    verdict_t v;
    verdict_decide(NULL, &e, &v);
    assert_true(v.final);
    assert_int_equal(v.status, AV_STATUS_REGISTERED);
    assert_int_equal(v.source, AV_SOURCE_DNS);
    assert_string_equal(v.decided_by, "dns: delegated");
    /* No delegation is never `available`: the registry decides. */
    e.dns = DNS_NOT_DELEGATED;
    verdict_decide(NULL, &e, &v);
    assert_false(v.final);
    e.dns = DNS_NO_ANSWER;
    verdict_decide(NULL, &e, &v);
    assert_false(v.final);
}

static void
test_failures_are_unknown_with_their_reason(void **state)
{
    (void)state;
    evidence_t e = { .kind = EVIDENCE_FAILURE, .failure = AV_REASON_TIMEOUT, .detail = "slow" };
    verdict_t v;
    verdict_decide(NULL, &e, &v);
    assert_true(v.final);
    assert_int_equal(v.status, AV_STATUS_UNKNOWN);
    assert_string_equal(v.reason, AV_REASON_TIMEOUT);
    e.failure = AV_REASON_REGISTRY_ERROR;
    verdict_decide(NULL, &e, &v);
    assert_string_equal(v.reason, AV_REASON_REGISTRY_ERROR);
    /* A protocol naming no reason of the table still gets a known one. */
    e.failure = "made_up";
    verdict_decide(NULL, &e, &v);
    assert_string_equal(v.reason, AV_REASON_REGISTRY_ERROR);
    e.failure = NULL;
    verdict_decide(NULL, &e, &v);
    assert_string_equal(v.reason, AV_REASON_REGISTRY_ERROR);
}

/* ---- the table of reasons ------------------------------------------------ */

static void
test_every_unknown_verdict_has_a_row_in_the_reasons_table(void **state)
{
    fixture_t *f = *state;
    size_t n;
    const verdict_reason_t *rows = verdict_reasons(&n);
    assert_true(n >= 7);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(rows[i].code);
        assert_non_null(rows[i].meaning);
        assert_ptr_equal(verdict_reason(rows[i].code), &rows[i]);
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(rows[i].code, rows[j].code);
    }
    assert_null(verdict_reason("no_such_reason"));
    assert_null(verdict_reason(NULL));
    /* Only a rate limit pauses the registry; timeouts and errors are counted. */
    assert_true(verdict_reason(AV_REASON_RATE_LIMITED)->backs_off);
    assert_false(verdict_reason(AV_REASON_TIMEOUT)->backs_off);
    assert_string_equal(verdict_reason(AV_REASON_TIMEOUT)->counter, "timeouts");
    assert_string_equal(verdict_reason(AV_REASON_REGISTRY_ERROR)->counter, "registry_errors");
    /* Every reason the decision function gives for a reply is in the table. */
    const char *replies[] = { "", RATE_LIMITED_REPLY, BANNER "nothing known\r\n" };
    for (size_t i = 0; i < sizeof replies / sizeof replies[0]; i++) {
        verdict_t v = classify(f, replies[i]);
        assert_non_null(verdict_reason(v.reason));
    }
    const long codes[] = { 429, 503, 500 };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        assert_non_null(verdict_reason(decide_http(codes[i], NULL, 0).reason));
}

/* ---- outside the per-syntax groups ------------------------------------- */

/* glibc's regexec keeps the DFA states it builds in the regex_t: a querier
 * with POSIX patterns compiles each afresh every 256 matches so what it
 * holds stays bounded, and a fresh compile decides as the first did. */
static void
test_posix_patterns_are_compiled_afresh_and_decide_the_same(void **state)
{
    fixture_t *f = *state;
    f->reg.posix_patterns = true;
    add_pattern(f, AV_PAT_RATE_LIMITED, "^.{0,60}\\blimit (exceeded|reached)\\b");
    add_pattern(f, AV_PAT_AVAILABLE, "^(No match for|NOT FOUND|No entries found)");
    char err[256];
    av_patterns_t *pats = av_patterns_new(&f->reg, err, sizeof err);
    assert_non_null(pats);
    static const av_pattern_kind_t order[] = { AV_PAT_RATE_LIMITED, AV_PAT_AVAILABLE };
    static const struct {
        const char *reply;
        bool hit;
        av_pattern_kind_t kind;
    } replies[] = {
        { "% Query rate limit exceeded, try later\n", true, AV_PAT_RATE_LIMITED },
        { "No match for \"x.example\".\n", true, AV_PAT_AVAILABLE },
        { "Domain Name: x.example\nRegistrar: R\n", false, AV_PAT_AVAILABLE },
    };
    uint32_t runs = 3 * 256 * 4 + 5; /* each reply tries one pattern or both */
    for (uint32_t run = 0; run < runs; run++) {
        const char *reply = replies[run % 3].reply;
        av_pattern_kind_t kind = AV_PAT_KINDS;
        const char *hit = av_patterns_first(pats, order, 2, reply, strlen(reply), &kind);
        assert_int_equal(hit != NULL, replies[run % 3].hit);
        if (hit)
            assert_int_equal(kind, replies[run % 3].kind);
    }
    /* rate_limited is tried on every reply, available on the two it misses */
    uint64_t want = runs / 256 + (runs - (runs + 2) / 3) / 256;
    assert_int_equal(av_patterns_fresh_compiles(pats), want);
    av_patterns_destroy(&pats);
}

static void
test_pattern_check_rejects_unclosed_group_in_both_syntaxes(void **state)
{
    (void)state;
    for (int posix = 0; posix < 2; posix++) {
        char why[200] = "";
        assert_int_equal(av_pattern_check("(unclosed", posix, why, sizeof why), -1);
        assert_true(strlen(why) > 0);
        why[0] = '\0';
        assert_int_equal(av_pattern_check("^(No match|NOT FOUND)", posix, why, sizeof why), 0);
    }
    char why[200];
    assert_int_equal(av_pattern_check("(unclosed", false, why, sizeof why), -1);
    assert_non_null(strstr(why, "missing closing parenthesis"));
    /* PCRE2-only syntax is refused by POSIX, so the config check catches it. */
    assert_int_equal(av_pattern_check("(?i)foo", false, why, sizeof why), 0);
    assert_int_equal(av_pattern_check("(?i)foo", true, why, sizeof why), -1);
}

/* Patterns that made glibc's regcomp take gigabytes or seconds are refused
 * with the reason; the shapes registries use still compile. */
static void
test_posix_patterns_that_would_explode_in_regcomp_are_refused(void **state)
{
    (void)state;
    static const struct {
        const char *pattern;
        const char *why;
    } refused[] = {
        { "a++++++++++++++++++++", "a repetition right after another at offset 2" },
        { "a{2}{2}", "a repetition right after another" },
        { "x*?", "a repetition right after another" },
        { "((a{1,100}){1,100}){1,100}", "more than 4096 positions" },
        { "(a{255}){17}", "more than 4096 positions" },
        { "(a|b){1,32767}", "a repetition count above 255" },
        { "a{256}", "a repetition count above 255" },
        { "((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))", "groups nested deeper than 32" },
        { "a{x}b++", "a repetition right after another" }, /* a stray { does not end the check */
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char why[200] = "";
        assert_int_equal(av_pattern_check(refused[i].pattern, true, why, sizeof why), -1);
        if (!strstr(why, refused[i].why))
            fail_msg("%s: '%s' lacks '%s'", refused[i].pattern, why, refused[i].why);
    }
    char long_pattern[1100];
    memset(long_pattern, 'a', sizeof long_pattern - 1);
    long_pattern[sizeof long_pattern - 1] = '\0';
    char why[200] = "";
    assert_int_equal(av_pattern_check(long_pattern, true, why, sizeof why), -1);
    assert_non_null(strstr(why, "longer than 1024 bytes"));
    static const char *const accepted[] = {
        "^No match for \"?[a-z0-9.-]+\"?",
        "^.{0,60}\\blimit",
        "(a{255}){16}",
        "^(Status|Domain Status):[[:space:]]*(free|available)",
        "[]a{]+x{2,3}",
        "\\++",
        "(ab|cd)+(ef)*g?h{1,}",
    };
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        why[0] = '\0';
        if (av_pattern_check(accepted[i], true, why, sizeof why) != 0)
            fail_msg("%s refused: %s", accepted[i], why);
    }
}

static void
test_pattern_kind_names(void **state)
{
    (void)state;
    assert_string_equal(av_pattern_kind_name(AV_PAT_AVAILABLE), "available");
    assert_string_equal(av_pattern_kind_name(AV_PAT_REGISTERED), "registered");
    assert_string_equal(av_pattern_kind_name(AV_PAT_RESERVED), "reserved");
    assert_string_equal(av_pattern_kind_name(AV_PAT_RATE_LIMITED), "rate_limited");
    assert_string_equal(av_pattern_kind_name(AV_PAT_KINDS), "?");
}

/* A temp directory for availd.yaml, and what is loaded from it; the
 * teardown frees them even when the test fails half-way. */
typedef struct {
    char *dir;
    av_config_t *cfg;
    verdict_rules_t *cls;
} loaded_t;

static int
setup_loaded(void **state)
{
    loaded_t *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = unit_tmpdir_new("classify"))) {
        free(l);
        return -1;
    }
    *state = l;
    return 0;
}

static int
teardown_loaded(void **state)
{
    loaded_t *l = *state;
    verdict_rules_destroy(&l->cls);
    av_config_free(&l->cfg);
    unit_tmpdir_remove(&l->dir);
    free(l);
    return 0;
}

static void
test_classifier_from_a_loaded_config_with_posix_syntax(void **state)
{
    loaded_t *l = *state;
    /* The way the querier gets its patterns: from availd.yaml. */
    char path[PATH_MAX], err[AV_CONFIG_ERR_MAX];
    assert_int_equal(unit_write_file(unit_path(path, sizeof path, l->dir, "availd.yaml"),
        "registries:\n"
        "  afnic:\n"
        "    tlds: fr\n"
        "    protocol: whois\n"
        "    host: whois.nic.fr\n"
        "    pattern_syntax: posix\n"
        "    patterns:\n"
        "      available: ['^%% No entries found']\n"
        "      registered: ['^domain:[[:space:]]+[a-z0-9-]+\\.fr']\n"
        "      rate_limited: 'excessive (query|querying)'\n"), 0);
    if (av_config_load(path, &l->cfg, err, sizeof err) != 0)
        fail_msg("config refused: %s", err);
    const av_registry_cfg_t *reg = av_config_registry(l->cfg, "afnic");
    assert_non_null(reg);
    assert_true(reg->posix_patterns);
    if (!(l->cls = verdict_rules_new(reg, err, sizeof err)))
        fail_msg("classifier refused: %s", err);
    verdict_rules_t *cls = l->cls;

    const char *free_reply = "%% This is the AFNIC Whois server.\r\n%% No entries found in the AFNIC Database.\r\n";
    const char *taken_reply = "%%\r\ndomain:      example.fr\r\nstatus:      ACTIVE\r\n";
    verdict_t v;
    decide_text(cls, free_reply, strlen(free_reply), &v);
    assert_int_equal(v.status, AV_STATUS_AVAILABLE);
    decide_text(cls, taken_reply, strlen(taken_reply), &v);
    assert_int_equal(v.status, AV_STATUS_REGISTERED);
    const char *throttled = "Excessive querying, slow down\r\n";
    decide_text(cls, throttled, strlen(throttled), &v);
    assert_int_equal(v.status, AV_STATUS_UNKNOWN);
    assert_string_equal(v.reason, AV_REASON_RATE_LIMITED);

    verdict_rules_destroy(&l->cls);
    assert_null(l->cls);
    verdict_rules_destroy(&l->cls); /* a second destroy is harmless */
}

#define BEHAVIOUR_TESTS                                                                     \
    T(test_available_reply_is_available),                                                   \
    T(test_registered_reply_is_registered),                                                 \
    T(test_reserved_reply_is_reserved),                                                     \
    T(test_rate_limited_reply_is_unknown_rate_limited),                                     \
    T(test_rate_limit_wins_over_every_other_match),                                         \
    T(test_reserved_and_registered_win_over_available),                                     \
    T(test_no_match_is_unknown_unparseable),                                                \
    T(test_empty_and_whitespace_replies_are_unknown_empty_reply),                           \
    T(test_classifier_without_patterns_finds_everything_unparseable),                       \
    T(test_matching_ignores_case),                                                          \
    T(test_caret_anchors_at_every_line_start),                                              \
    T(test_bytes_that_are_not_utf8_do_not_break_matching),                                  \
    T(test_only_the_given_length_is_matched),                                               \
    T(test_dollar_matches_at_the_end_of_a_crlf_line),                                       \
    T(test_a_nul_byte_does_not_hide_the_rest_of_the_reply),                                 \
    T(test_bad_pattern_fails_the_classifier_with_the_reason),                               \
    T(test_generic_available_needs_dns_to_say_not_delegated),                               \
    T(test_generic_record_data_wins_over_not_found_wording),                                \
    T(test_own_patterns_are_tried_before_the_generic_reading),                              \
    T(test_generic_rules_are_shared_and_outlive_each_registry),                             \
    T(test_every_unknown_of_the_generic_reading_has_a_row_in_the_reasons_table)

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest behaviour[] = { BEHAVIOUR_TESTS };
#undef T
    const struct CMUnitTest other[] = {
        cmocka_unit_test(test_pattern_check_rejects_unclosed_group_in_both_syntaxes),
        cmocka_unit_test(test_pattern_kind_names),
        cmocka_unit_test(test_generic_rules_table),
        cmocka_unit_test(test_rdap_404_is_available_and_200_registered),
        cmocka_unit_test(test_rdap_statuses_reserved_and_redemption),
        cmocka_unit_test(test_rdap_429_and_503_are_rate_limited_with_the_pause_asked),
        cmocka_unit_test(test_rdap_other_statuses_are_unknown_http_status),
        cmocka_unit_test(test_a_delegation_is_registered_and_none_decides_nothing),
        cmocka_unit_test(test_failures_are_unknown_with_their_reason),
        cmocka_unit_test_setup_teardown(test_every_unknown_verdict_has_a_row_in_the_reasons_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_posix_patterns_are_compiled_afresh_and_decide_the_same, setup, teardown),
        cmocka_unit_test(test_posix_patterns_that_would_explode_in_regcomp_are_refused),
        cmocka_unit_test_setup_teardown(test_classifier_from_a_loaded_config_with_posix_syntax, setup_loaded,
                                        teardown_loaded),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("pattern_syntax pcre2", behaviour, group_pcre2, NULL);
    failed += cmocka_run_group_tests_name("pattern_syntax posix", behaviour, group_posix, NULL);
    failed += cmocka_run_group_tests_name("verdict", other, NULL, NULL);
    return failed;
}
