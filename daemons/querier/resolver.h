/* A c-ares channel on the querier's loop: its sockets in the querier's
 * poller, its timeouts an sd-event timer. The DNS pre-check asks it for
 * delegations, whois for its registry's address. The registries of a
 * querier share one channel per set of DNS servers (a channel costs tens
 * of kilobytes; a querier may serve hundreds of registries). */
#ifndef RESOLVER_H
#define RESOLVER_H

#include "querier.h"

#include <ares.h>

typedef struct resolver resolver_t;

/* The querier's channel for servers ("IP" or "IP:PORT" entries, or
 * NULL/empty for the system's resolvers), made when first asked for. NULL
 * on failure (logged, with who it was for). Each get takes a reference. */
resolver_t *resolver_get(querier_t *q, const av_strlist_t *servers, const char *for_whom);
/* Gives the reference back; the last one destroys the channel, and its
 * lookups still pending end with ARES_EDESTRUCTION. */
void resolver_put(resolver_t **self_p);
/* Destroys every channel of q (at its end). */
void resolvers_close(querier_t *q);
ares_channel resolver_channel(resolver_t *self);
/* After queueing a lookup on the channel: arm the timer for its timeout. */
void resolver_kick(resolver_t *self);

#endif
