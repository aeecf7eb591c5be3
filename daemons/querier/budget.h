/* A registry's budget as one querier spends it: a token bucket for its rate
 * limit (rate_queries per rate_period_s, bursts of rate_burst) and the pause
 * a rate-limit reply imposes. Pure arithmetic on the times given, so the
 * querier and the tests drive it with their own clock. */
#ifndef BUDGET_H
#define BUDGET_H

#include "av_config.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint32_t rate_queries;     /* 0: no rate limit */
    uint32_t rate_period_s;
    uint32_t rate_burst;
    double tokens;
    uint64_t tokens_at_us;
    uint64_t backoff_until_us; /* 0 or in the past: not backing off */
} budget_t;

/* Takes the registry's limits; the bucket starts full. */
void budget_configure(budget_t *b, const av_registry_cfg_t *cfg, uint64_t now_us);
/* Takes one token: true, or false with *wait_us until the next one. */
bool budget_take(budget_t *b, uint64_t now_us, uint64_t *wait_us);
/* Pauses the registry for `seconds` from now (a pause already longer is
 * kept). Returns true when this begins a pause, false when one was on. */
bool budget_backoff(budget_t *b, uint64_t now_us, uint32_t seconds);
/* Microseconds left of the pause, 0 when none. */
uint64_t budget_backoff_left_us(const budget_t *b, uint64_t now_us);

#endif
