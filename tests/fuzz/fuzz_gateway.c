/* libFuzzer target for the TCP line gateway's reading of a client's line
 * (gateway_read_line, as availd-intake's gateway calls it on every recv),
 * then the name's way to a registry (av_names_route over the shipped table,
 * as the dispatcher routes a gateway check). However the bytes are split
 * across reads, the outcome is the same and is what the bytes say: the
 * first line within the gateway's 1,024 bytes, without its end and
 * surrounding blanks; a name routes to a registry that serves its suffix,
 * or is refused with one of the reasons an answer can carry.
 *
 * Input: byte 0 is the size of each read (0: one read of all), the rest is
 * what the client sends before it stops sending. */
#include "av_names.h"
#include "intake.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_BYTES 1024    /* gateway.c's buffer for a client's line */

static av_config_t *config;
static av_names_t *names;

static void
must(bool ok, const char *what)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz_gateway: %s\n", what);
    abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[AV_CONFIG_ERR_MAX];
    const char *path = getenv("AVAILD_FUZZ_CONFIG") ? getenv("AVAILD_FUZZ_CONFIG")
                                                    : AVAILD_SOURCE_DIR "/config/availd.yaml";
    if (av_config_load(path, &config, err, sizeof err) < 0 || !(names = av_names_new(config))) {
        fprintf(stderr, "fuzz_gateway: %s\n", err);
        exit(1);
    }
    return 0;
}

static bool
blank(char c)
{
    return c == ' ' || c == '\t';
}

/* What the whole stream says, read at once: the reference. */
static gateway_line_t
expected(const char *s, size_t size, size_t *start, size_t *end)
{
    size_t len = size < LINE_MAX_BYTES ? size : LINE_MAX_BYTES;
    const char *lf = memchr(s, '\n', len);
    if (!lf)
        return size >= LINE_MAX_BYTES ? GATEWAY_LINE_TOO_LONG : GATEWAY_LINE_PARTIAL;
    size_t a = 0, b = (size_t)(lf - s);
    while (a < b && blank(s[a]))
        a++;
    while (b > a && (blank(s[b - 1]) || s[b - 1] == '\r'))
        b--;
    *start = a;
    *end = b;
    return a == b ? GATEWAY_LINE_EMPTY : GATEWAY_LINE_NAME;
}

static bool
invalid_reason(const char *reason)
{
    static const char *const all[] = {
        AV_INVALID_EMPTY,    AV_INVALID_TOO_LONG, AV_INVALID_LABEL_LONG,   AV_INVALID_EMPTY_LABEL, AV_INVALID_CHARACTER,
        AV_INVALID_HYPHEN,   AV_INVALID_IDNA,     AV_INVALID_SINGLE_LABEL, AV_INVALID_SUBDOMAIN,
        AV_INVALID_PUBLIC_SUFFIX,
    };
    for (size_t i = 0; reason && i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i], reason) == 0)
            return true;
    return false;
}

static void
route(const char *name, size_t len)
{
    char out[AV_DOMAIN_MAX + 1];
    const av_registry_cfg_t *reg = NULL;
    const char *reason = NULL;
    switch (av_names_route(names, name, len, out, &reg, &reason)) {
    case AV_ROUTE_OK: {
        size_t n = strlen(out);
        must(n > 0 && n <= AV_DOMAIN_MAX, "a routed name of a bad length");
        must(strspn(out, "abcdefghijklmnopqrstuvwxyz0123456789-.") == n, "a routed name that is not an A-label");
        must(reg != NULL && reason == NULL, "routed without a registry");
        /* Exactly one label under a suffix the registry serves. */
        const char *suffix = strchr(out, '.');
        must(suffix != NULL, "a routed name of one label");
        bool served = false;
        for (uint32_t t = 0; t < reg->tlds.count; t++)
            served |= strcmp(reg->tlds.items[t], suffix + 1) == 0;
        must(served, "routed to a registry that does not serve the suffix");
        break;
    }
    case AV_ROUTE_INVALID:
        must(reg == NULL && invalid_reason(reason), "invalid without a reason of av_names.h");
        break;
    case AV_ROUTE_UNSUPPORTED:
        must(reg == NULL && reason && strcmp(reason, AV_REASON_UNSUPPORTED) == 0, "unsupported without its reason");
        break;
    default:
        must(false, "a route outcome out of range");
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return -1;
    size_t chunk = data[0] ? data[0] : LINE_MAX_BYTES;
    const char *stream = (const char *)data + 1;
    size -= 1;

    /* The client's bytes arrive chunk by chunk, as recv gives them. */
    char *in = malloc(LINE_MAX_BYTES);
    size_t len = 0, sent = 0, start = 0, end = 0;
    gateway_line_t got = GATEWAY_LINE_PARTIAL;
    while (got == GATEWAY_LINE_PARTIAL && sent < size) {
        size_t n = chunk;
        if (n > LINE_MAX_BYTES - len)
            n = LINE_MAX_BYTES - len;
        if (n > size - sent)
            n = size - sent;
        memcpy(in + len, stream + sent, n);
        size_t seen = len;
        len += n;
        sent += n;
        got = gateway_read_line(in, len, seen, LINE_MAX_BYTES, &start, &end);
        must(got == GATEWAY_LINE_PARTIAL || got == GATEWAY_LINE_NAME || got == GATEWAY_LINE_EMPTY ||
                 got == GATEWAY_LINE_TOO_LONG, "a line outcome out of range");
    }
    /* Stopped sending without a line end: the gateway waits, then times out. */
    size_t want_start = 0, want_end = 0;
    gateway_line_t want = expected(stream, size, &want_start, &want_end);
    must(got == want, "the outcome depends on how the bytes were split");
    if (got == GATEWAY_LINE_NAME) {
        must(start == want_start && end == want_end, "the name depends on how the bytes were split");
        must(start < end && end <= len, "a name out of the bytes received");
        must(!memchr(in + start, '\n', end - start), "a name across a line end");
        must(!blank(in[start]) && !blank(in[end - 1]) && in[end - 1] != '\r', "a name with blanks around it");
        route(in + start, end - start);
    }
    free(in);
    return 0;
}
