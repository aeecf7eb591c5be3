/* Unit tests of a registry's budget in the querier: the token bucket of its
 * rate limit (bursts, refill, the wait it asks for) and the pause a
 * rate-limit reply imposes, driven by a clock of the test's own. */
#include "budget.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define S (1000000ULL) /* one second in microseconds */

static av_registry_cfg_t
limits(uint32_t queries, uint32_t period_s, uint32_t burst)
{
    av_registry_cfg_t cfg = { .rate_queries = queries, .rate_period_s = period_s, .rate_burst = burst };
    return cfg;
}

static void
test_without_a_rate_limit_every_query_goes(void **state)
{
    (void)state;
    budget_t b = { 0 };
    av_registry_cfg_t cfg = limits(0, 1, 0);
    budget_configure(&b, &cfg, 5 * S);
    uint64_t wait = 0;
    for (int i = 0; i < 100000; i++)
        assert_true(budget_take(&b, 5 * S, &wait));
    assert_int_equal(wait, 0);
}

static void
test_a_full_bucket_gives_its_burst_then_waits_for_the_next_token(void **state)
{
    (void)state;
    budget_t b = { 0 };
    av_registry_cfg_t cfg = limits(10, 1, 5); /* 10 a second, bursts of 5 */
    uint64_t now = 100 * S, wait = 0;
    budget_configure(&b, &cfg, now);
    for (int i = 0; i < 5; i++)
        assert_true(budget_take(&b, now, &wait));
    assert_false(budget_take(&b, now, &wait));
    /* one token every 100 ms */
    assert_in_range(wait, 99000, 100001);
    assert_false(budget_take(&b, now + wait - 2000, &wait));
    assert_true(budget_take(&b, now + 100001, &wait));
}

static void
test_the_bucket_refills_at_the_rate_and_never_past_the_burst(void **state)
{
    (void)state;
    budget_t b = { 0 };
    av_registry_cfg_t cfg = limits(60, 60, 3); /* one a second, bursts of 3 */
    uint64_t now = 0, wait;
    budget_configure(&b, &cfg, now);
    for (int i = 0; i < 3; i++)
        assert_true(budget_take(&b, now, &wait));
    assert_false(budget_take(&b, now, &wait));
    /* an hour idle fills the bucket to its burst, not to 3,600 */
    now += 3600 * S;
    int taken = 0;
    while (budget_take(&b, now, &wait))
        taken++;
    assert_int_equal(taken, 3);
    /* over ten seconds at most ten more */
    taken = 0;
    for (uint64_t t = now; t <= now + 10 * S; t += S / 10)
        taken += budget_take(&b, t, &wait);
    assert_in_range(taken, 9, 10);
}

static void
test_a_clock_that_goes_back_adds_no_tokens(void **state)
{
    (void)state;
    budget_t b = { 0 };
    av_registry_cfg_t cfg = limits(1, 1, 1);
    uint64_t wait;
    budget_configure(&b, &cfg, 50 * S);
    assert_true(budget_take(&b, 50 * S, &wait));
    assert_false(budget_take(&b, 10 * S, &wait));
    assert_false(budget_take(&b, 50 * S, &wait));
}

static void
test_a_reload_refills_the_bucket_with_the_new_limits(void **state)
{
    (void)state;
    budget_t b = { 0 };
    av_registry_cfg_t cfg = limits(1, 1, 1);
    uint64_t wait;
    budget_configure(&b, &cfg, 0);
    assert_true(budget_take(&b, 0, &wait));
    assert_false(budget_take(&b, 0, &wait));
    cfg = limits(100, 1, 20);
    budget_configure(&b, &cfg, 0);
    int taken = 0;
    while (budget_take(&b, 0, &wait))
        taken++;
    assert_int_equal(taken, 20);
}

static void
test_a_backoff_pauses_for_its_seconds_and_only_the_first_begins_one(void **state)
{
    (void)state;
    budget_t b = { 0 };
    uint64_t now = 1000 * S;
    assert_int_equal(budget_backoff_left_us(&b, now), 0);
    assert_true(budget_backoff(&b, now, 30));
    assert_int_equal(budget_backoff_left_us(&b, now), 30 * S);
    assert_int_equal(budget_backoff_left_us(&b, now + 10 * S), 20 * S);
    /* during the pause, a shorter one neither shortens it nor counts as new */
    assert_false(budget_backoff(&b, now + 10 * S, 5));
    assert_int_equal(budget_backoff_left_us(&b, now + 10 * S), 20 * S);
    /* a longer one extends it */
    assert_false(budget_backoff(&b, now + 10 * S, 60));
    assert_int_equal(budget_backoff_left_us(&b, now + 10 * S), 60 * S);
    /* after it, the next one begins anew */
    assert_int_equal(budget_backoff_left_us(&b, now + 71 * S), 0);
    assert_true(budget_backoff(&b, now + 71 * S, 1));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_without_a_rate_limit_every_query_goes),
        cmocka_unit_test(test_a_full_bucket_gives_its_burst_then_waits_for_the_next_token),
        cmocka_unit_test(test_the_bucket_refills_at_the_rate_and_never_past_the_burst),
        cmocka_unit_test(test_a_clock_that_goes_back_adds_no_tokens),
        cmocka_unit_test(test_a_reload_refills_the_bucket_with_the_new_limits),
        cmocka_unit_test(test_a_backoff_pauses_for_its_seconds_and_only_the_first_begins_one),
    };
    return cmocka_run_group_tests_name("querier budget", tests, NULL, NULL);
}
