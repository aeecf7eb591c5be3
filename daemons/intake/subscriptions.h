/* Who listens on intake's results socket: the topic prefixes its XPUB's
 * subscribers hold, counted per subscriber (ZMQ_XPUB_VERBOSER passes every
 * subscribe and unsubscribe, also those of a subscriber that goes). An
 * answer to a pushed check that no prefix matches is held until one does
 * (a subscriber reconnecting to a restarted intake, a slow joiner) instead
 * of being dropped by the PUB side of the socket. */
#ifndef INTAKE_SUBSCRIPTIONS_H
#define INTAKE_SUBSCRIPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct subscriptions subscriptions_t;

/* At most this many distinct prefixes are tracked, each up to this long;
 * past them (a frontend subscribing without end) every topic counts as
 * listened to: answers are published at once, as a plain PUB would. */
#define SUBSCRIPTIONS_MAX 100000
#define SUBSCRIPTION_PREFIX_MAX 256

subscriptions_t *subscriptions_new(void);
void subscriptions_destroy(subscriptions_t **self_p);

/* One message read from the XPUB: byte 1 subscribe or 0 unsubscribe, then
 * the prefix. Returns true for a subscribe (held answers may now go);
 * anything else that comes on the socket is ignored. */
bool subscriptions_update(subscriptions_t *self, const uint8_t *data, size_t size);

/* Whether a subscriber's prefix matches topic. */
bool subscriptions_match(const subscriptions_t *self, const char *topic, size_t len);

/* Grows with every subscribe: a held answer that did not match at one
 * generation need not be matched again until it changes. */
uint64_t subscriptions_generation(const subscriptions_t *self);

/* Distinct prefixes held now (a gauge). */
size_t subscriptions_count(const subscriptions_t *self);

#endif
