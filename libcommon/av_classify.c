/* Pattern matching of registry replies with PCRE2 (JIT where available) or
 * POSIX extended regular expressions. Patterns are case-insensitive and
 * multi-line (^ and $ match at line ends), as registry replies are lines. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "av_classify.h"

#include <pcre2.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *text;          /* points into the config, which outlives us */
    av_pattern_kind_t kind;
    pcre2_code *re;
    regex_t posix;
    bool has_posix;
} pattern_t;

struct av_classifier {
    pattern_t *patterns;       /* in decision order */
    size_t count;
    bool posix;
    pcre2_match_data *match;
    char *scratch;             /* NUL-terminated copy for regexec */
    size_t scratch_size;
};

static const av_pattern_kind_t decision_order[AV_PAT_KINDS] = {
    AV_PAT_RATE_LIMITED, AV_PAT_ERROR, AV_PAT_RESERVED, AV_PAT_REGISTERED, AV_PAT_AVAILABLE,
};

const char *
av_pattern_kind_name(av_pattern_kind_t kind)
{
    static const char *const names[AV_PAT_KINDS] = { "available", "registered", "reserved", "rate_limited",
                                                     "error" };
    return (unsigned)kind < AV_PAT_KINDS ? names[kind] : "?";
}

static pcre2_code *
compile_pcre(const char *pattern, char *why, size_t whylen)
{
    int code;
    PCRE2_SIZE at;
    /* Whois lines end in CRLF: with ANYCRLF, `$` matches before "\r\n". */
    pcre2_compile_context *ctx = pcre2_compile_context_create(NULL);
    if (ctx)
        pcre2_set_newline(ctx, PCRE2_NEWLINE_ANYCRLF);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_CASELESS | PCRE2_MULTILINE,
                                   &code, &at, ctx);
    pcre2_compile_context_free(ctx);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(why, whylen, "%s at offset %zu", (const char *)msg, (size_t)at);
    }
    return re;
}

static int
compile_posix(regex_t *re, const char *pattern, char *why, size_t whylen)
{
    int rc = regcomp(re, pattern, REG_EXTENDED | REG_ICASE | REG_NEWLINE | REG_NOSUB);
    if (rc != 0) {
        regerror(rc, re, why, whylen);
        return -1;
    }
    return 0;
}

int
av_pattern_check(const char *pattern, bool posix, char *why, size_t whylen)
{
    if (posix) {
        regex_t re;
        if (compile_posix(&re, pattern, why, whylen) < 0)
            return -1;
        regfree(&re);
        return 0;
    }
    pcre2_code *re = compile_pcre(pattern, why, whylen);
    if (!re)
        return -1;
    pcre2_code_free(re);
    return 0;
}

av_classifier_t *
av_classifier_new(const av_registry_cfg_t *reg, char *err, size_t errlen)
{
    av_classifier_t *self = calloc(1, sizeof *self);
    size_t total = 0;
    if (!self)
        goto nomem;
    for (int k = 0; k < AV_PAT_KINDS; k++)
        total += reg->patterns[k].count;
    self->posix = reg->posix_patterns;
    if (total && !(self->patterns = calloc(total, sizeof *self->patterns)))
        goto nomem;
    for (int d = 0; d < AV_PAT_KINDS; d++) {
        av_pattern_kind_t kind = decision_order[d];
        for (uint32_t i = 0; i < reg->patterns[kind].count; i++) {
            pattern_t *p = &self->patterns[self->count];
            char why[200];
            p->text = reg->patterns[kind].items[i];
            p->kind = kind;
            if (self->posix) {
                if (compile_posix(&p->posix, p->text, why, sizeof why) < 0) {
                    snprintf(err, errlen, "registry %s: %s pattern '%s': %s", reg->name, av_pattern_kind_name(kind),
                             p->text, why);
                    goto fail;
                }
                p->has_posix = true;
            } else {
                if (!(p->re = compile_pcre(p->text, why, sizeof why))) {
                    snprintf(err, errlen, "registry %s: %s pattern '%s': %s", reg->name, av_pattern_kind_name(kind),
                             p->text, why);
                    goto fail;
                }
                pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* an optimisation: failure is fine */
            }
            self->count++;
        }
    }
    if (!self->posix && !(self->match = pcre2_match_data_create(1, NULL)))
        goto nomem;
    return self;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    av_classifier_destroy(&self);
    return NULL;
}

void
av_classifier_destroy(av_classifier_t **self_p)
{
    av_classifier_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++) {
        pcre2_code_free(self->patterns[i].re);
        if (self->patterns[i].has_posix)
            regfree(&self->patterns[i].posix);
    }
    free(self->patterns);
    pcre2_match_data_free(self->match);
    free(self->scratch);
    free(self);
    *self_p = NULL;
}

static bool
only_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

static bool
matches(av_classifier_t *self, pattern_t *p, const char *reply, size_t len)
{
    if (!self->posix)
        return pcre2_match(p->re, (PCRE2_SPTR)reply, len, 0, 0, self->match, NULL) >= 0;
    return regexec(&p->posix, self->scratch, 0, NULL, 0) == 0;
}

void
av_classify(av_classifier_t *self, const char *reply, size_t len, av_verdict_t *out)
{
    memset(out, 0, sizeof *out);
    out->status = AV_STATUS_UNKNOWN;
    if (len == 0 || only_space(reply, len)) {
        out->reason = AV_REASON_EMPTY_REPLY;
        return;
    }
    if (self->posix) {
        if (self->scratch_size < len + 1) {
            char *grown = realloc(self->scratch, len + 1);
            if (!grown) {
                out->reason = AV_REASON_REGISTRY_ERROR;
                return;
            }
            self->scratch = grown;
            self->scratch_size = len + 1;
        }
        /* regexec sees a C string: a NUL would end it early, and its `$`
         * knows only "\n", so CR before LF and NULs are dropped or blanked
         * to match what PCRE2 (with ANYCRLF, and the length) sees. */
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            if (reply[i] == '\r' && i + 1 < len && reply[i + 1] == '\n')
                continue;
            self->scratch[o++] = reply[i] ? reply[i] : ' ';
        }
        self->scratch[o] = '\0';
    }
    for (size_t i = 0; i < self->count; i++) {
        pattern_t *p = &self->patterns[i];
        if (!matches(self, p, reply, len))
            continue;
        out->kind = p->kind;
        out->pattern = p->text;
        switch (p->kind) {
        case AV_PAT_RATE_LIMITED:
            out->status = AV_STATUS_UNKNOWN;
            out->reason = AV_REASON_RATE_LIMITED;
            break;
        case AV_PAT_ERROR:
            out->status = AV_STATUS_UNKNOWN;
            out->reason = AV_REASON_REGISTRY_ERROR;
            break;
        case AV_PAT_RESERVED: out->status = AV_STATUS_RESERVED; break;
        case AV_PAT_REGISTERED: out->status = AV_STATUS_REGISTERED; break;
        case AV_PAT_AVAILABLE: out->status = AV_STATUS_AVAILABLE; break;
        default: break;
        }
        return;
    }
    out->reason = AV_REASON_UNPARSEABLE;
}
