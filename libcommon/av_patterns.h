/* A registry's reply patterns, compiled once: PCRE2 (JIT where available) or
 * POSIX extended regular expressions, case-insensitive and multi-line (^ and
 * $ match at line ends), as registry replies are lines. Shared by config
 * validation (does a pattern compile?) and the querier's verdict (which
 * pattern matches first?); what a match means is the verdict's business. */
#ifndef AV_PATTERNS_H
#define AV_PATTERNS_H

#include "av_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct av_patterns av_patterns_t;

/* Compiles every pattern of reg. NULL on error, with the reason in err. */
av_patterns_t *av_patterns_new(const av_registry_cfg_t *reg, char *err, size_t errlen);
void av_patterns_destroy(av_patterns_t **self_p);

/* The first pattern that matches reply, trying the kinds in the order given
 * (and each kind's patterns in config order). Returns the pattern's text
 * (owned by the config) and sets *kind, or NULL when none matches. */
const char *av_patterns_first(av_patterns_t *self, const av_pattern_kind_t *order, size_t n_order,
                              const char *reply, size_t len, av_pattern_kind_t *kind);

/* How often POSIX patterns were compiled afresh to let go of what glibc's
 * regexec cached (see av_patterns.c). */
uint64_t av_patterns_fresh_compiles(const av_patterns_t *self);

/* Checks one pattern compiles; used by config validation. */
int av_pattern_check(const char *pattern, bool posix, char *why, size_t whylen);

const char *av_pattern_kind_name(av_pattern_kind_t kind);

#endif
