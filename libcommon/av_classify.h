/* Transitional: availctl classify's view of a whois reply until it reads
 * replies through the querier's verdict (daemons/querier/verdict.h). */
#ifndef AV_CLASSIFY_H
#define AV_CLASSIFY_H

#include "av_patterns.h"
#include "av_proto.h"

typedef struct av_classifier av_classifier_t;

typedef struct {
    av_status_t status;
    const char *reason;
    av_pattern_kind_t kind;
    const char *pattern;
} av_verdict_t;

av_classifier_t *av_classifier_new(const av_registry_cfg_t *reg, char *err, size_t errlen);
void av_classifier_destroy(av_classifier_t **self_p);
void av_classify(av_classifier_t *self, const char *reply, size_t len, av_verdict_t *out);

#endif
