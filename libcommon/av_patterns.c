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

/* glibc's regcomp expands bounded repetitions and `+` into copies of what
 * they repeat, so a short pattern can take seconds and gigabytes to compile
 * (fuzz_config: `a` with 20 `+` in a row, 670 MB; `((a{1,100}){1,100}){1,100}`
 * 1.1 GB and 4 s; `(a|b){1,32767}` did not finish). Registry patterns are
 * short and plain, so POSIX patterns are held to what ERE defines and to a
 * size regcomp handles in milliseconds: no repetition right after another
 * (undefined in POSIX ERE), counts up to _POSIX2_RE_DUP_MAX (255), nesting
 * up to POSIX_GROUPS_MAX, and at most POSIX_POSITIONS_MAX positions once
 * the repetitions are expanded ((a{255}){16} is 4,080: 1 ms, 3 MB). */
#define POSIX_PATTERN_BYTES_MAX 1024
#define POSIX_GROUPS_MAX 32
#define POSIX_COUNT_MAX 255
#define POSIX_POSITIONS_MAX 4096.0

/* Where a bracket expression that opens at p ends (the `]`), or NULL. */
static const char *
bracket_end(const char *p)
{
    p++;
    if (*p == '^')
        p++;
    if (*p == ']')
        p++;
    for (; *p; p++) {
        if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
            const char *close = strchr(p + 2, p[1]);
            while (close && close[1] != ']')
                close = strchr(close + 1, p[1]);
            if (!close)
                return NULL;
            p = close + 1;
        } else if (*p == ']') {
            return p;
        }
    }
    return NULL;
}

/* The repeat factor of an interval `{m}`, `{m,}` or `{m,n}` at p; sets *end
 * past it. -1 when it is not one (regcomp then says what is wrong). */
static long
interval_factor(const char *p, const char **end)
{
    char *after;
    long m = strtol(p + 1, &after, 10), n = m;
    if (after == p + 1 || m < 0)
        return -1;
    if (*after == ',') {
        const char *q = after + 1;
        n = *q == '}' ? m + 1 : strtol(q, &after, 10);
        if (*q == '}')
            after = (char *)q;
        else if (after == q || n < m)
            return -1;
    }
    if (*after != '}')
        return -1;
    *end = after + 1;
    if (m > POSIX_COUNT_MAX || n > POSIX_COUNT_MAX + 1)
        return POSIX_COUNT_MAX + 2;
    return n > 1 ? n : 1;
}

static int
posix_pattern_bounded(const char *pattern, char *why, size_t whylen)
{
    if (strlen(pattern) > POSIX_PATTERN_BYTES_MAX) {
        snprintf(why, whylen, "longer than %d bytes", POSIX_PATTERN_BYTES_MAX);
        return -1;
    }
    /* per open group: positions so far, and those of its last atom */
    double total[POSIX_GROUPS_MAX + 1] = { 0 }, last[POSIX_GROUPS_MAX + 1] = { 0 };
    int depth = 0;
    bool after_repetition = false;
    for (const char *p = pattern; *p;) {
        double factor = 0;
        const char *next = p + 1;
        switch (*p) {
        case '*': case '?': factor = 1; break;
        case '+': factor = 2; break;
        case '{': {
            long f = interval_factor(p, &next);
            if (f < 0) { /* not an interval: regcomp refuses it or reads a `{` */
                next = p + 1;
                break;
            }
            if (f > POSIX_COUNT_MAX + 1) {
                snprintf(why, whylen, "a repetition count above %d at offset %zu", POSIX_COUNT_MAX,
                         (size_t)(p - pattern));
                return -1;
            }
            factor = (double)f;
            break;
        }
        case '(':
            if (depth == POSIX_GROUPS_MAX) {
                snprintf(why, whylen, "groups nested deeper than %d", POSIX_GROUPS_MAX);
                return -1;
            }
            depth++;
            total[depth] = last[depth] = 0;
            after_repetition = false;
            p = next;
            continue;
        case ')':
            if (depth > 0) {
                depth--;
                last[depth] = total[depth + 1];
                total[depth] += last[depth];
                after_repetition = false;
                p = next;
                continue;
            }
            break;
        case '|':
            after_repetition = false;
            p = next;
            continue;
        case '[':
            if (!(next = bracket_end(p)))
                return 0; /* regcomp refuses an unmatched [ */
            next++;
            break;
        case '\\':
            if (p[1])
                next = p + 2;
            break;
        default:
            break;
        }
        if (factor > 0) {
            if (after_repetition) {
                snprintf(why, whylen, "a repetition right after another at offset %zu (undefined in POSIX ERE)",
                         (size_t)(p - pattern));
                return -1;
            }
            total[depth] += last[depth] * (factor - 1);
            last[depth] *= factor;
            after_repetition = true;
        } else {
            total[depth] += 1;
            last[depth] = 1;
            after_repetition = false;
        }
        double positions = 0;
        for (int d = 0; d <= depth; d++)
            positions += total[d];
        if (positions > POSIX_POSITIONS_MAX) {
            snprintf(why, whylen, "more than %.0f positions once its repetitions are expanded",
                     POSIX_POSITIONS_MAX);
            return -1;
        }
        p = next;
    }
    return 0;
}

static int
compile_posix(regex_t *re, const char *pattern, char *why, size_t whylen)
{
    if (posix_pattern_bounded(pattern, why, whylen) < 0)
        return -1;
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
