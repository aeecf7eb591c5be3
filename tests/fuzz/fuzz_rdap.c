/* libFuzzer target for the querier's reading of RDAP replies: verdict_decide
 * with EVIDENCE_HTTP. Whatever the status code and body: 404 is the only
 * available, 200 is registered or reserved (never available), 429 and 503
 * are unknown (rate_limited) with the Retry-After as backoff, anything else
 * unknown (http_status); every verdict final, every unknown with a
 * reason of the table.
 *
 * Input: byte 0 picks the status code (by its value modulo 6: 200, 404,
 * 429, 503, 500, or another code made of bytes 1-2), bytes 1-2 are the
 * Retry-After seconds (big-endian), the rest is the body. */
#include "verdict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static verdict_rules_t *rules;

static void
must(bool ok, const char *what, long status)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz_rdap: %s (HTTP %ld)\n", what, status);
    abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* An RDAP registry reads no patterns; its rules are there all the same. */
    av_registry_cfg_t reg = { .name = "rdap-fuzz", .protocol = AV_PROTO_RDAP, .max_reply_bytes = 65536 };
    char err[256];
    if (!(rules = verdict_rules_new(&reg, err, sizeof err))) {
        fprintf(stderr, "fuzz_rdap: %s\n", err);
        exit(1);
    }
    return 0;
}

static bool
known_reason(const char *reason)
{
    size_t n;
    const verdict_reason_t *all = verdict_reasons(&n);
    for (size_t i = 0; reason && i < n; i++)
        if (strcmp(all[i].code, reason) == 0)
            return true;
    return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long codes[] = { 200, 404, 429, 503, 500 };
    if (size < 3)
        return -1; /* not an input of ours: keep it out of the corpus */
    uint16_t number = (uint16_t)(data[1] << 8 | data[2]);
    long status = data[0] % 6 < 5 ? codes[data[0] % 6] : number % 1000;
    evidence_t e = {
        .kind = EVIDENCE_HTTP,
        .body = size > 3 ? (const char *)data + 3 : NULL,
        .len = size - 3,
        .http_status = status,
        .retry_after_s = number,
    };
    verdict_t v;
    verdict_decide(rules, &e, &v);

    must(v.final, "an RDAP verdict is not final", status);
    must((unsigned)v.status < AV_STATUS_COUNT && v.status != AV_STATUS_INVALID, "status out of range", status);
    must(!v.by_pattern && v.source == AV_SOURCE_NONE, "an RDAP verdict by a pattern or another source", status);
    must((v.status == AV_STATUS_AVAILABLE) == (status == 404), "available is not exactly 404", status);
    if (v.status == AV_STATUS_UNKNOWN)
        must(known_reason(v.reason), "unknown without a reason of verdict_reasons()", status);
    else
        must(v.reason == NULL && v.decided_by != NULL, "a definite verdict with a reason or without its rule", status);
    switch (status) {
    case 200:
        must(v.status == AV_STATUS_REGISTERED || v.status == AV_STATUS_RESERVED, "200 is not registered or reserved",
             status);
        break;
    case 404:
        break;
    case 429:
    case 503:
        must(v.status == AV_STATUS_UNKNOWN && strcmp(v.reason, AV_REASON_RATE_LIMITED) == 0,
             "429 or 503 is not unknown (rate_limited)", status);
        must(v.backoff_s == e.retry_after_s, "the registry's Retry-After is not the backoff", status);
        break;
    default:
        must(v.status == AV_STATUS_UNKNOWN && strcmp(v.reason, AV_REASON_HTTP_STATUS) == 0,
             "an unexpected status is not unknown (http_status)", status);
    }
    if (status != 429 && status != 503)
        must(v.backoff_s == 0, "a backoff without a rate limit", status);
    return 0;
}
