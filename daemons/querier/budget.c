/* The token bucket and the backoff of one registry (see budget.h). */
#include "budget.h"

void
budget_configure(budget_t *b, const av_registry_cfg_t *cfg, uint64_t now_us)
{
    b->rate_queries = cfg->rate_queries;
    b->rate_period_s = cfg->rate_period_s ? cfg->rate_period_s : 1;
    b->rate_burst = cfg->rate_burst ? cfg->rate_burst : 1;
    b->tokens = b->rate_burst;
    b->tokens_at_us = now_us;
}

bool
budget_take(budget_t *b, uint64_t now_us, uint64_t *wait_us)
{
    if (b->rate_queries == 0)
        return true;
    double per_us = (double)b->rate_queries / ((double)b->rate_period_s * 1e6);
    if (now_us > b->tokens_at_us) {
        b->tokens += (double)(now_us - b->tokens_at_us) * per_us;
        b->tokens_at_us = now_us;
    }
    if (b->tokens > b->rate_burst)
        b->tokens = b->rate_burst;
    if (b->tokens >= 1) {
        b->tokens -= 1;
        return true;
    }
    *wait_us = (uint64_t)((1 - b->tokens) / per_us) + 1;
    return false;
}

bool
budget_backoff(budget_t *b, uint64_t now_us, uint32_t seconds)
{
    bool already = b->backoff_until_us > now_us;
    uint64_t until = now_us + (uint64_t)seconds * 1000000;
    if (until > b->backoff_until_us)
        b->backoff_until_us = until;
    return !already;
}

uint64_t
budget_backoff_left_us(const budget_t *b, uint64_t now_us)
{
    return b->backoff_until_us > now_us ? b->backoff_until_us - now_us : 0;
}
