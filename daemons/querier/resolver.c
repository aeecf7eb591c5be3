/* c-ares on the querier's loop (see resolver.h). */
#include "resolver.h"

#include <stdlib.h>
#include <string.h>

#define RESOLVER_SOCKETS_MAX 16

typedef struct {
    av_poll_handle_t poll;
    resolver_t *owner;
    ares_socket_t fd;
    bool used;
} resolver_socket_t;

struct resolver {
    querier_t *q;
    uint32_t refs;
    char key[1024];              /* its servers, as one string: q->resolvers' key */
    bool library_ready;          /* ares_library_init succeeded: cleanup owed */
    ares_channel channel;
    sd_event_source *timer;
    resolver_socket_t sockets[RESOLVER_SOCKETS_MAX];
};

void
resolver_kick(resolver_t *self)
{
    struct timeval tv, *next = ares_timeout(self->channel, NULL, &tv);
    if (!next) {
        sd_event_source_set_enabled(self->timer, SD_EVENT_OFF);
        return;
    }
    sd_event_source_set_time(self->timer, av_mono_us() + (uint64_t)next->tv_sec * 1000000 + next->tv_usec + 1);
    sd_event_source_set_enabled(self->timer, SD_EVENT_ONESHOT);
}

static void
on_socket_ready(void *arg, uint32_t events)
{
    resolver_socket_t *s = arg;
    resolver_t *self = s->owner;
    ares_socket_t fd = s->fd;
    ares_process_fd(self->channel, events & (EPOLLIN | EPOLLERR | EPOLLHUP) ? fd : ARES_SOCKET_BAD,
                    events & EPOLLOUT ? fd : ARES_SOCKET_BAD);
    resolver_kick(self);
}

static void
on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    resolver_t *self = data;
    resolver_socket_t *slot = NULL, *free_slot = NULL;
    for (int i = 0; i < RESOLVER_SOCKETS_MAX; i++) {
        if (self->sockets[i].used && self->sockets[i].fd == fd)
            slot = &self->sockets[i];
        else if (!self->sockets[i].used && !free_slot)
            free_slot = &self->sockets[i];
    }
    uint32_t events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    if (!events) {
        if (slot) {
            av_poller_del(self->q->poller, &slot->poll);
            slot->used = false;
        }
        return;
    }
    if (slot) {
        av_poller_mod(self->q->poller, &slot->poll, events);
    } else if (free_slot) {
        free_slot->owner = self;
        free_slot->fd = fd;
        free_slot->used =
            av_poller_add(self->q->poller, &free_slot->poll, fd, events, on_socket_ready, free_slot) == 0;
    }
}

static int
on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    resolver_t *self = userdata;
    ares_process_fd(self->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* handles timeouts */
    resolver_kick(self);
    return 0;
}

ares_channel
resolver_channel(resolver_t *self)
{
    return self->channel;
}

static void resolver_destroy(resolver_t *self);

static void
servers_key(const av_strlist_t *servers, char *out, size_t size)
{
    out[0] = '\0';
    for (uint32_t i = 0; servers && i < servers->count; i++)
        snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? "," : "", servers->items[i]);
}

static resolver_t *
resolver_new(querier_t *q, const char *key, const char *for_whom)
{
    struct ares_options opts = { 0 };
    resolver_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->q = q;
    snprintf(self->key, sizeof self->key, "%s", key);
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        goto fail;
    self->library_ready = true;
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = self;
    opts.timeout = 1000; /* ms per try */
    opts.tries = 2;
    if (ares_init_options(&self->channel, &opts, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) !=
        ARES_SUCCESS) {
        self->channel = NULL;
        av_log_err("%s: cannot set up the DNS resolver", for_whom);
        goto fail;
    }
    if (key[0] && ares_set_servers_ports_csv(self->channel, key) != ARES_SUCCESS) {
        av_log_err("%s: bad dns_servers '%s'", for_whom, key);
        goto fail;
    }
    if (sd_event_add_time(av_daemon_loop(q->d), &self->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, self) < 0)
        goto fail;
    sd_event_source_set_enabled(self->timer, SD_EVENT_OFF);
    return self;
fail:
    resolver_destroy(self);
    return NULL;
}

resolver_t *
resolver_get(querier_t *q, const av_strlist_t *servers, const char *for_whom)
{
    char key[sizeof((resolver_t *)0)->key];
    servers_key(servers, key, sizeof key);
    resolver_t *self = q->resolvers ? zhashx_lookup(q->resolvers, key) : NULL;
    if (!self) {
        if (!q->resolvers && !(q->resolvers = zhashx_new()))
            return NULL;
        if (!(self = resolver_new(q, key, for_whom)))
            return NULL;
        zhashx_insert(q->resolvers, self->key, self);
    }
    self->refs++;
    return self;
}

static void
resolver_destroy(resolver_t *self)
{
    if (self->channel)
        ares_destroy(self->channel); /* pending lookups call back now */
    for (int i = 0; i < RESOLVER_SOCKETS_MAX; i++)
        if (self->sockets[i].used)
            av_poller_del(self->q->poller, &self->sockets[i].poll);
    sd_event_source_disable_unref(self->timer);
    if (self->library_ready)
        ares_library_cleanup();
    free(self);
}

void
resolver_put(resolver_t **self_p)
{
    resolver_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    *self_p = NULL;
    if (--self->refs)
        return;
    zhashx_delete(self->q->resolvers, self->key);
    resolver_destroy(self);
}

void
resolvers_close(querier_t *q)
{
    resolver_t *self;
    while (q->resolvers && (self = zhashx_first(q->resolvers))) {
        zhashx_delete(q->resolvers, self->key);
        resolver_destroy(self);
    }
    zhashx_destroy(&q->resolvers);
}
