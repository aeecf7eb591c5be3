/* Registry reply patterns with PCRE2 or POSIX ERE (see av_patterns.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "av_patterns.h"

#include <pcre2.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *text;          /* points into the config, which outlives us */
    pcre2_code *re;
    regex_t posix;
    bool has_posix;
    uint32_t posix_runs;       /* regexec calls since it was compiled */
} pattern_t;

/* glibc's regexec keeps the DFA states it builds for the texts it reads in
 * the regex_t until regfree: a pattern such as `^.{0,60}\blimit` grew by
 * ~20 KB per 1,000 whois replies without end, and fuzz_whois (1,256 POSIX
 * patterns, adversarial replies) ran out of 2 GB in a minute even when each
 * was compiled afresh every 2,048 matches. Every 256 it levels off (1.2 GB
 * under ASan, with a 5,686-input corpus). A compile costs 22-56 us, a match
 * of a 3 KB reply 50-660 us: the fresh compiles cost < 0.1%. */
#define POSIX_FRESH_RUNS 256

struct av_patterns {
    pattern_t *by_kind[AV_PAT_KINDS];
    uint32_t count[AV_PAT_KINDS];
    bool posix;
    pcre2_match_data *match;
    uint64_t posix_compiles;   /* fresh compiles since av_patterns_new */
    char *scratch;             /* NUL-terminated copy of the reply for regexec */
    size_t scratch_size;
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

static int
compile_one(av_patterns_t *self, pattern_t *p, const char *text, char *why, size_t whylen)
{
    p->text = text;
    if (self->posix) {
        if (compile_posix(&p->posix, text, why, whylen) < 0)
            return -1;
        p->has_posix = true;
        return 0;
    }
    if (!(p->re = compile_pcre(text, why, whylen)))
        return -1;
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* an optimisation: failure is fine */
    return 0;
}

av_patterns_t *
av_patterns_new(const av_registry_cfg_t *reg, char *err, size_t errlen)
{
    av_patterns_t *self = calloc(1, sizeof *self);
    if (!self)
        goto nomem;
    self->posix = reg->posix_patterns;
    for (int k = 0; k < AV_PAT_KINDS; k++) {
        uint32_t n = reg->patterns[k].count;
        if (n && !(self->by_kind[k] = calloc(n, sizeof *self->by_kind[k])))
            goto nomem;
        for (uint32_t i = 0; i < n; i++) {
            char why[200];
            if (compile_one(self, &self->by_kind[k][i], reg->patterns[k].items[i], why, sizeof why) < 0) {
                snprintf(err, errlen, "registry %s: %s pattern '%s': %s", reg->name,
                         av_pattern_kind_name((av_pattern_kind_t)k), reg->patterns[k].items[i], why);
                goto fail;
            }
            self->count[k]++;
        }
    }
    if (!self->posix && !(self->match = pcre2_match_data_create(1, NULL)))
        goto nomem;
    return self;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    av_patterns_destroy(&self);
    return NULL;
}

void
av_patterns_destroy(av_patterns_t **self_p)
{
    av_patterns_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    for (int k = 0; k < AV_PAT_KINDS; k++) {
        for (uint32_t i = 0; i < self->count[k]; i++) {
            pcre2_code_free(self->by_kind[k][i].re);
            if (self->by_kind[k][i].has_posix)
                regfree(&self->by_kind[k][i].posix);
        }
        free(self->by_kind[k]);
    }
    pcre2_match_data_free(self->match);
    free(self->scratch);
    free(self);
    *self_p = NULL;
}

/* regexec sees a C string: a NUL would end it early, and its `$` knows only
 * "\n", so CR before LF and NULs are dropped or blanked to match what PCRE2
 * (with ANYCRLF, and the length) sees. */
static int
prepare_posix(av_patterns_t *self, const char *reply, size_t len)
{
    if (self->scratch_size < len + 1) {
        char *grown = realloc(self->scratch, len + 1);
        if (!grown)
            return -1;
        self->scratch = grown;
        self->scratch_size = len + 1;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (reply[i] == '\r' && i + 1 < len && reply[i + 1] == '\n')
            continue;
        self->scratch[o++] = reply[i] ? reply[i] : ' ';
    }
    self->scratch[o] = '\0';
    return 0;
}

static bool
match_posix(av_patterns_t *self, pattern_t *p)
{
    bool hit = regexec(&p->posix, self->scratch, 0, NULL, 0) == 0;
    if (++p->posix_runs >= POSIX_FRESH_RUNS) {
        regex_t fresh;
        char why[200];
        /* It compiled before; should it fail now (memory), the old one serves on. */
        if (compile_posix(&fresh, p->text, why, sizeof why) == 0) {
            regfree(&p->posix);
            p->posix = fresh;
            self->posix_compiles++;
        }
        p->posix_runs = 0;
    }
    return hit;
}

uint64_t
av_patterns_fresh_compiles(const av_patterns_t *self)
{
    return self->posix_compiles;
}

const char *
av_patterns_first(av_patterns_t *self, const av_pattern_kind_t *order, size_t n_order, const char *reply,
                  size_t len, av_pattern_kind_t *kind)
{
    if (self->posix && prepare_posix(self, reply, len) < 0)
        return NULL;
    for (size_t o = 0; o < n_order; o++) {
        av_pattern_kind_t k = order[o];
        if ((unsigned)k >= AV_PAT_KINDS)
            continue;
        for (uint32_t i = 0; i < self->count[k]; i++) {
            pattern_t *p = &self->by_kind[k][i];
            bool hit = self->posix ? match_posix(self, p)
                                   : pcre2_match(p->re, (PCRE2_SPTR)reply, len, 0, 0, self->match, NULL) >= 0;
            if (hit) {
                *kind = k;
                return p->text;
            }
        }
    }
    return NULL;
}
