/* Transitional (see av_classify.h). */
#include "av_classify.h"

#include <stdlib.h>

struct av_classifier {
    av_patterns_t *patterns;
};

av_classifier_t *
av_classifier_new(const av_registry_cfg_t *reg, char *err, size_t errlen)
{
    av_classifier_t *self = calloc(1, sizeof *self);
    if (self && !(self->patterns = av_patterns_new(reg, err, errlen))) {
        free(self);
        return NULL;
    }
    return self;
}

void
av_classifier_destroy(av_classifier_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    av_patterns_destroy(&(*self_p)->patterns);
    free(*self_p);
    *self_p = NULL;
}

void
av_classify(av_classifier_t *self, const char *reply, size_t len, av_verdict_t *out)
{
    static const av_pattern_kind_t order[] = { AV_PAT_RATE_LIMITED, AV_PAT_ERROR, AV_PAT_RESERVED,
                                               AV_PAT_REGISTERED, AV_PAT_AVAILABLE };
    static const av_status_t status_of[AV_PAT_KINDS] = {
        [AV_PAT_AVAILABLE] = AV_STATUS_AVAILABLE, [AV_PAT_REGISTERED] = AV_STATUS_REGISTERED,
        [AV_PAT_RESERVED] = AV_STATUS_RESERVED, [AV_PAT_RATE_LIMITED] = AV_STATUS_UNKNOWN,
        [AV_PAT_ERROR] = AV_STATUS_UNKNOWN,
    };
    size_t i = 0;
    while (i < len && (reply[i] == ' ' || reply[i] == '\t' || reply[i] == '\r' || reply[i] == '\n'))
        i++;
    *out = (av_verdict_t){ .status = AV_STATUS_UNKNOWN };
    if (i == len) {
        out->reason = AV_REASON_EMPTY_REPLY;
        return;
    }
    out->pattern = av_patterns_first(self->patterns, order, sizeof order / sizeof order[0], reply, len, &out->kind);
    if (!out->pattern) {
        out->reason = AV_REASON_UNPARSEABLE;
        return;
    }
    out->status = status_of[out->kind];
    out->reason = out->kind == AV_PAT_RATE_LIMITED ? AV_REASON_RATE_LIMITED
                  : out->kind == AV_PAT_ERROR      ? AV_REASON_REGISTRY_ERROR
                                                   : NULL;
}
