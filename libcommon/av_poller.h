/* Many file descriptors on the daemon's loop at the cost of one: an epoll
 * set of our own, watched by sd-event as a single source. sd-event
 * dispatches one source per loop iteration and re-polls every ready
 * descriptor each time, which costs O(ready) per dispatch with thousands of
 * sockets; here one dispatch serves up to a batch of ready sockets. */
#ifndef AV_POLLER_H
#define AV_POLLER_H

#include <stdint.h>
#include <sys/epoll.h>
#include <systemd/sd-event.h>

typedef struct av_poller av_poller_t;

typedef void (*av_poll_fn)(void *arg, uint32_t events);

/* Lives in the caller's object (no allocation per descriptor). */
typedef struct {
    av_poll_fn fn;
    void *arg;
    int fd;
} av_poll_handle_t;

av_poller_t *av_poller_new(sd_event *loop);
void av_poller_destroy(av_poller_t **self_p);
/* events: EPOLLIN, EPOLLOUT (level-triggered). */
int av_poller_add(av_poller_t *self, av_poll_handle_t *h, int fd, uint32_t events, av_poll_fn fn, void *arg);
int av_poller_mod(av_poller_t *self, av_poll_handle_t *h, uint32_t events);
/* Safe from inside a callback, for any handle (also one still due in the
 * batch being dispatched). Does not close the descriptor. */
void av_poller_del(av_poller_t *self, av_poll_handle_t *h);

#endif
