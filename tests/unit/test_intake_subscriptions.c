/* Unit tests for intake's table of its subscribers' prefixes. */
#include "subscriptions.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static bool
update(subscriptions_t *s, bool subscribe, const char *prefix, size_t len)
{
    uint8_t msg[SUBSCRIPTION_PREFIX_MAX + 8];
    msg[0] = subscribe ? 1 : 0;
    memcpy(msg + 1, prefix, len);
    return subscriptions_update(s, msg, len + 1);
}

static bool
match(subscriptions_t *s, const char *topic)
{
    return subscriptions_match(s, topic, strlen(topic));
}

static void
test_a_topic_matches_every_prefix_subscribed_and_nothing_else(void **state)
{
    (void)state;
    subscriptions_t *s = subscriptions_new();
    assert_non_null(s);
    assert_false(match(s, "shop-1/42"));
    assert_true(update(s, true, "shop-1/", 7));
    assert_true(match(s, "shop-1/42"));
    assert_true(match(s, "shop-1/"));
    assert_false(match(s, "shop-1"));
    assert_false(match(s, "shop-2/42"));
    /* bytes that are no text, a NUL among them, are prefixes too */
    assert_true(update(s, true, "a\0b", 3));
    assert_true(subscriptions_match(s, "a\0bc", 4));
    assert_false(subscriptions_match(s, "a\0c", 3));
    /* the empty prefix: everything */
    assert_true(update(s, true, "", 0));
    assert_true(match(s, "anything"));
    assert_false(update(s, false, "", 0));
    assert_false(match(s, "anything"));
    subscriptions_destroy(&s);
    assert_null(s);
}

static void
test_a_prefix_goes_when_its_last_subscriber_goes(void **state)
{
    (void)state;
    subscriptions_t *s = subscriptions_new();
    uint64_t g = subscriptions_generation(s);
    update(s, true, "p/", 2);
    update(s, true, "p/", 2); /* a second subscriber, same prefix */
    assert_int_equal(subscriptions_generation(s), g + 2);
    assert_int_equal(subscriptions_count(s), 1);
    update(s, false, "p/", 2);
    assert_true(match(s, "p/1"));
    update(s, false, "p/", 2);
    assert_false(match(s, "p/1"));
    assert_int_equal(subscriptions_count(s), 0);
    /* an unsubscribe of what nobody holds changes nothing */
    update(s, false, "q/", 2);
    assert_int_equal(subscriptions_count(s), 0);
    assert_int_equal(subscriptions_generation(s), g + 2);
    subscriptions_destroy(&s);
}

static void
test_what_is_not_a_subscription_is_ignored(void **state)
{
    (void)state;
    subscriptions_t *s = subscriptions_new();
    assert_false(subscriptions_update(s, (const uint8_t *)"", 0));
    assert_false(subscriptions_update(s, (const uint8_t *)"\x02hello", 6));
    assert_int_equal(subscriptions_count(s), 0);
    assert_false(match(s, "hello"));
    subscriptions_destroy(&s);
}

/* Past its bounds the table stops telling: every topic counts as listened
 * to, as on a plain PUB, so nothing is held for a frontend without end. */
static void
test_past_its_bounds_every_topic_matches(void **state)
{
    (void)state;
    subscriptions_t *s = subscriptions_new();
    char long_prefix[SUBSCRIPTION_PREFIX_MAX + 1];
    memset(long_prefix, 'x', sizeof long_prefix);
    assert_true(update(s, true, long_prefix, sizeof long_prefix));
    assert_true(match(s, "unrelated"));
    subscriptions_destroy(&s);

    s = subscriptions_new();
    char prefix[16];
    for (int i = 0; i < SUBSCRIPTIONS_MAX; i++) {
        int n = snprintf(prefix, sizeof prefix, "s%d/", i);
        update(s, true, prefix, (size_t)n);
    }
    assert_int_equal(subscriptions_count(s), SUBSCRIPTIONS_MAX);
    assert_false(match(s, "unrelated"));
    update(s, true, "one-more/", 9);
    assert_int_equal(subscriptions_count(s), SUBSCRIPTIONS_MAX);
    assert_true(match(s, "unrelated"));
    subscriptions_destroy(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_topic_matches_every_prefix_subscribed_and_nothing_else),
        cmocka_unit_test(test_a_prefix_goes_when_its_last_subscriber_goes),
        cmocka_unit_test(test_what_is_not_a_subscription_is_ignored),
        cmocka_unit_test(test_past_its_bounds_every_topic_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
