/* Turns a registry's raw reply into a verdict with the registry's patterns.
 * Shared by the querier and `availctl classify`, so ops see exactly the
 * decision the querier made. */
#ifndef AV_CLASSIFY_H
#define AV_CLASSIFY_H

#include "av_config.h"
#include "av_proto.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct av_classifier av_classifier_t;

typedef struct {
    av_status_t status;
    const char *reason;        /* for unknown: AV_REASON_*; else NULL */
    av_pattern_kind_t kind;    /* which list decided, when one did */
    const char *pattern;       /* the pattern that matched, or NULL */
} av_verdict_t;

/* Compiles every pattern of reg. NULL on error, with the reason in err. */
av_classifier_t *av_classifier_new(const av_registry_cfg_t *reg, char *err, size_t errlen);
void av_classifier_destroy(av_classifier_t **self_p);

/* Rate-limit wording wins over everything (a throttled reply can quote the
 * name), then the registry's own error codes (registry_error), reserved,
 * registered and last available: a reply that could mean either is never
 * `available`. No match and empty replies are unknown. */
void av_classify(av_classifier_t *self, const char *reply, size_t len, av_verdict_t *out);

/* Checks one pattern compiles; used by config validation. */
int av_pattern_check(const char *pattern, bool posix, char *why, size_t whylen);

const char *av_pattern_kind_name(av_pattern_kind_t kind);

#endif
