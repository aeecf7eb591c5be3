/* A c-ares channel on the querier's loop: its sockets in the querier's
 * poller, its timeouts an sd-event timer. The DNS pre-check asks it for
 * delegations, whois for its registry's address. */
#ifndef RESOLVER_H
#define RESOLVER_H

#include "querier.h"

#include <ares.h>

typedef struct resolver resolver_t;

/* servers: "IP" or "IP:PORT" entries, or NULL/empty for the system's
 * resolvers. NULL on failure (logged, with who it was for). */
resolver_t *resolver_new(querier_t *q, const av_strlist_t *servers, const char *for_whom);
/* Lookups still pending end with ARES_EDESTRUCTION. */
void resolver_destroy(resolver_t **self_p);
ares_channel resolver_channel(resolver_t *self);
/* After queueing a lookup on the channel: arm the timer for its timeout. */
void resolver_kick(resolver_t *self);

#endif
