/* One budget per registry across hosts (`budget: global`, the default): the
 * dispatcher holds the registry's rate limit and concurrency for all its
 * queriers, wherever they run, and grants a check to a querier only within
 * them. A querier that goes silent gives its grants back as its checks are
 * re-dispatched. With `budget: per_address` each querier spends the full
 * budget from its own source address (the querier's budget.c), and nothing
 * is held here. The token arithmetic is the querier's budget.c's. */
#include "dispatcher.h"

#include <string.h>

void
grants_configure(registry_state_t *r, const av_registry_cfg_t *cfg, void *ds)
{
    r->grant_owner = ds;
    r->global = !cfg->budget_per_address;
    r->concurrency = cfg->concurrency ? cfg->concurrency : 1;
    bool changed = r->rate_queries != cfg->rate_queries || r->rate_period_s != (cfg->rate_period_s ? cfg->rate_period_s : 1);
    r->rate_queries = cfg->rate_queries;
    r->rate_period_s = cfg->rate_period_s ? cfg->rate_period_s : 1;
    r->rate_burst = cfg->rate_burst ? cfg->rate_burst : 1;
    if (changed || !r->tokens_at_us) {
        r->tokens = r->rate_burst;
        r->tokens_at_us = av_mono_us();
    }
}

static int
on_grant_timer(sd_event_source *s, uint64_t usec, void *arg)
{
    (void)s;
    (void)usec;
    registry_state_t *r = arg;
    dispatch_pending(r->grant_owner, r);
    return 0;
}

/* Can a check of r go to a querier now? When only the rate says no, a
 * timer brings the pending checks back when the next token is due. */
bool
grants_available(registry_state_t *r, uint64_t now_us)
{
    if (!r->global)
        return true;
    if (r->sent.count >= r->concurrency)
        return false; /* an answer or a lost querier frees a slot, and dispatches */
    if (r->rate_queries == 0)
        return true;
    double per_us = (double)r->rate_queries / ((double)r->rate_period_s * 1e6);
    if (now_us > r->tokens_at_us) {
        r->tokens += (double)(now_us - r->tokens_at_us) * per_us;
        r->tokens_at_us = now_us;
    }
    if (r->tokens > r->rate_burst)
        r->tokens = r->rate_burst;
    if (r->tokens >= 1)
        return true;
    uint64_t due = now_us + (uint64_t)((1 - r->tokens) / per_us) + 1;
    dispatcher_t *ds = r->grant_owner;
    (*ds->budget_waits)++;
    if (!r->grant_timer) {
        if (sd_event_add_time(av_daemon_loop(ds->d), &r->grant_timer, CLOCK_MONOTONIC, due, 1000, on_grant_timer, r) < 0)
            r->grant_timer = NULL; /* the scan's next turn retries */
    } else {
        sd_event_source_set_time(r->grant_timer, due);
        sd_event_source_set_enabled(r->grant_timer, SD_EVENT_ONESHOT);
    }
    return false;
}

void
grants_take(registry_state_t *r)
{
    if (r->global && r->rate_queries)
        r->tokens -= 1;
}

void
grants_release(registry_state_t *r)
{
    r->grant_timer = sd_event_source_disable_unref(r->grant_timer);
}
