/* Topic prefixes of the results socket's subscribers (see subscriptions.h). */
#include "subscriptions.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>

struct subscriptions {
    zhashx_t *by_prefix;       /* hex of the prefix -> subscribers holding it (uintptr_t) */
    bool overflow;             /* a subscribe was not tracked: match everything */
    uint64_t generation;       /* subscribes seen */
};

static void
hex_of(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
}

subscriptions_t *
subscriptions_new(void)
{
    subscriptions_t *self = calloc(1, sizeof *self);
    if (!self || !(self->by_prefix = zhashx_new())) {
        free(self);
        return NULL;
    }
    return self;
}

void
subscriptions_destroy(subscriptions_t **self_p)
{
    if (!*self_p)
        return;
    zhashx_destroy(&(*self_p)->by_prefix);
    free(*self_p);
    *self_p = NULL;
}

bool
subscriptions_update(subscriptions_t *self, const uint8_t *data, size_t size)
{
    if (size < 1 || data[0] > 1)
        return false;
    bool subscribe = data[0] == 1;
    size_t len = size - 1;
    self->generation += subscribe;
    if (len > SUBSCRIPTION_PREFIX_MAX) {
        self->overflow |= subscribe;
        return subscribe;
    }
    char key[2 * SUBSCRIPTION_PREFIX_MAX + 1];
    hex_of(data + 1, len, key);
    uintptr_t n = (uintptr_t)zhashx_lookup(self->by_prefix, key);
    if (subscribe) {
        if (n == 0 && zhashx_size(self->by_prefix) >= SUBSCRIPTIONS_MAX) {
            self->overflow = true;
            return true;
        }
        if (n == 0)
            zhashx_insert(self->by_prefix, key, (void *)(uintptr_t)1);
        else
            zhashx_update(self->by_prefix, key, (void *)(n + 1));
        return true;
    }
    if (n <= 1)
        zhashx_delete(self->by_prefix, key);
    else
        zhashx_update(self->by_prefix, key, (void *)(n - 1));
    return false;
}

bool
subscriptions_match(const subscriptions_t *self, const char *topic, size_t len)
{
    if (self->overflow)
        return true;
    if (zhashx_size(self->by_prefix) == 0)
        return false;
    char key[2 * SUBSCRIPTION_PREFIX_MAX + 1];
    if (len > SUBSCRIPTION_PREFIX_MAX)
        len = SUBSCRIPTION_PREFIX_MAX;
    /* every prefix of the topic, the empty one (subscribed to all) first,
     * its hex grown by one byte a step */
    key[0] = '\0';
    for (size_t i = 0;; i++) {
        if (zhashx_lookup(self->by_prefix, key))
            return true;
        if (i == len)
            return false;
        hex_of((const uint8_t *)topic + i, 1, key + 2 * i);
    }
}

uint64_t
subscriptions_generation(const subscriptions_t *self)
{
    return self->generation;
}

size_t
subscriptions_count(const subscriptions_t *self)
{
    return zhashx_size(self->by_prefix);
}
