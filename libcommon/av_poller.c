/* The nested epoll set behind av_poller. */
#include "av_poller.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define POLL_BATCH 512

struct av_poller {
    int epfd;
    sd_event_source *source;
    struct epoll_event batch[POLL_BATCH];
    int batch_len;   /* >= 0 while dispatching: entries still to call */
    int batch_pos;
};

static int
on_ready(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    (void)s;
    (void)fd;
    (void)revents;
    av_poller_t *self = userdata;
    int n = epoll_wait(self->epfd, self->batch, POLL_BATCH, 0);
    self->batch_len = n > 0 ? n : 0;
    for (self->batch_pos = 0; self->batch_pos < self->batch_len; self->batch_pos++) {
        av_poll_handle_t *h = self->batch[self->batch_pos].data.ptr;
        if (h) /* NULL: deleted by an earlier callback of this batch */
            h->fn(h->arg, self->batch[self->batch_pos].events);
    }
    self->batch_len = 0;
    return 0;
}

av_poller_t *
av_poller_new(sd_event *loop)
{
    av_poller_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0 || sd_event_add_io(loop, &self->source, self->epfd, EPOLLIN, on_ready, self) < 0) {
        if (self->epfd >= 0)
            close(self->epfd);
        free(self);
        return NULL;
    }
    return self;
}

void
av_poller_destroy(av_poller_t **self_p)
{
    av_poller_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    sd_event_source_disable_unref(self->source);
    close(self->epfd);
    free(self);
    *self_p = NULL;
}

int
av_poller_add(av_poller_t *self, av_poll_handle_t *h, int fd, uint32_t events, av_poll_fn fn, void *arg)
{
    struct epoll_event ev = { .events = events, .data.ptr = h };
    h->fn = fn;
    h->arg = arg;
    h->fd = fd;
    return epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int
av_poller_mod(av_poller_t *self, av_poll_handle_t *h, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = h };
    return epoll_ctl(self->epfd, EPOLL_CTL_MOD, h->fd, &ev);
}

void
av_poller_del(av_poller_t *self, av_poll_handle_t *h)
{
    if (h->fd < 0)
        return;
    epoll_ctl(self->epfd, EPOLL_CTL_DEL, h->fd, NULL);
    for (int i = self->batch_pos + 1; i < self->batch_len; i++)
        if (self->batch[i].data.ptr == h)
            self->batch[i].data.ptr = NULL;
    h->fd = -1;
}
