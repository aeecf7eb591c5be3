/* Unit tests of av_poller: descriptors on one sd-event source, their
 * callbacks called for readiness, many of them in one dispatch, events
 * changed with av_poller_mod, av_poller_del safe from inside a callback of
 * the same batch, and a destroy that gives back every descriptor. */
#include "av_poller.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- fixture and helpers ------------------------------------------------ */

#define MAX_FDS 800

typedef struct {
    sd_event *loop;
    av_poller_t *poller;
    int fds[MAX_FDS];   /* descriptors the test opened, closed at teardown */
    size_t n_fds;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || sd_event_new(&f->loop) < 0 || !(f->poller = av_poller_new(f->loop))) {
        if (f)
            sd_event_unref(f->loop);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    av_poller_destroy(&f->poller);
    sd_event_unref(f->loop);
    for (size_t i = 0; i < f->n_fds; i++)
        close(f->fds[i]);
    free(f);
    return 0;
}

static int
keep_fd(fixture_t *f, int fd)
{
    assert_true(fd >= 0);
    assert_true(f->n_fds < MAX_FDS);
    f->fds[f->n_fds++] = fd;
    return fd;
}

/* A connected pair of stream sockets: [0] is watched, [1] is the peer. */
static void
socket_pair(fixture_t *f, int pair[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair), 0);
    keep_fd(f, pair[0]);
    keep_fd(f, pair[1]);
}

/* An eventfd that is readable (counter 1) until read. */
static int
ready_eventfd(fixture_t *f)
{
    return keep_fd(f, eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));
}

/* Runs the loop once without waiting; returns how many sources it
 * dispatched (0 or 1). */
static int
run_once(fixture_t *f)
{
    int rc = sd_event_run(f->loop, 0);
    assert_true(rc >= 0);
    return rc;
}

/* What a callback saw. */
typedef struct {
    int calls;
    uint32_t events;    /* of the last call */
} seen_t;

static void
record(void *arg, uint32_t events)
{
    seen_t *s = arg;
    s->calls++;
    s->events = events;
}

/* Reads the eventfd it is called for, so it is ready no more. */
typedef struct {
    av_poll_handle_t h;
    int calls;
} drained_t;

static void
drain(void *arg, uint32_t events)
{
    drained_t *d = arg;
    uint64_t value;
    (void)events;
    d->calls++;
    assert_int_equal(read(d->h.fd, &value, sizeof value), sizeof value);
}

static size_t
open_fd_count(void)
{
    size_t n = 0;
    DIR *dir = opendir("/proc/self/fd");
    assert_non_null(dir);
    while (readdir(dir))
        n++;
    closedir(dir);
    return n;
}

/* ---- callbacks ---------------------------------------------------------- */

static void
test_ready_descriptor_calls_its_callback_with_its_events(void **state)
{
    fixture_t *f = *state;
    int ready[2], idle[2];
    socket_pair(f, ready);
    socket_pair(f, idle);
    av_poll_handle_t h_ready, h_idle;
    seen_t s_ready = { 0 }, s_idle = { 0 };
    assert_int_equal(av_poller_add(f->poller, &h_ready, ready[0], EPOLLIN, record, &s_ready), 0);
    assert_int_equal(av_poller_add(f->poller, &h_idle, idle[0], EPOLLIN, record, &s_idle), 0);
    assert_int_equal(h_ready.fd, ready[0]);

    assert_int_equal(write(ready[1], "x", 1), 1);
    assert_int_equal(run_once(f), 1);
    assert_int_equal(s_ready.calls, 1);
    assert_true(s_ready.events & EPOLLIN);
    assert_false(s_ready.events & EPOLLOUT); /* not asked for */
    assert_int_equal(s_idle.calls, 0);

    /* A hang-up is reported too, without asking. */
    assert_int_equal(shutdown(idle[1], SHUT_RDWR), 0);
    assert_int_equal(run_once(f), 1);
    assert_int_equal(s_idle.calls, 1);
    assert_true(s_idle.events & EPOLLHUP);
}

static void
test_nothing_ready_calls_nothing(void **state)
{
    fixture_t *f = *state;
    int pair[2];
    socket_pair(f, pair);
    av_poll_handle_t h;
    seen_t s = { 0 };
    assert_int_equal(av_poller_add(f->poller, &h, pair[0], EPOLLIN, record, &s), 0);
    assert_int_equal(run_once(f), 0);
    assert_int_equal(s.calls, 0);
}

static void
test_callback_repeats_while_the_descriptor_stays_ready(void **state)
{
    fixture_t *f = *state;
    /* Level-triggered: data left unread is reported again. */
    int pair[2];
    socket_pair(f, pair);
    av_poll_handle_t h;
    seen_t s = { 0 };
    assert_int_equal(av_poller_add(f->poller, &h, pair[0], EPOLLIN, record, &s), 0);
    assert_int_equal(write(pair[1], "xyz", 3), 3);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(run_once(f), 1);
        assert_int_equal(s.calls, i);
    }
    char buf[8];
    assert_int_equal(read(pair[0], buf, sizeof buf), 3);
    assert_int_equal(run_once(f), 0);
    assert_int_equal(s.calls, 3);
}

static void
test_many_ready_descriptors_are_served_in_one_dispatch(void **state)
{
    fixture_t *f = *state;
    enum { N = 300 };
    drained_t *d = calloc(N, sizeof *d);
    assert_non_null(d);
    for (int i = 0; i < N; i++)
        assert_int_equal(av_poller_add(f->poller, &d[i].h, ready_eventfd(f), EPOLLIN, drain, &d[i]), 0);
    /* One sd-event dispatch, not one per descriptor. */
    assert_int_equal(run_once(f), 1);
    for (int i = 0; i < N; i++)
        if (d[i].calls != 1)
            fail_msg("descriptor %d: %d calls after one dispatch", i, d[i].calls);
    assert_int_equal(run_once(f), 0);
    free(d);
}

static void
test_more_ready_descriptors_than_a_batch_are_all_served_once(void **state)
{
    fixture_t *f = *state;
    enum { N = 700 }; /* more than a batch, within a 1024-descriptor limit */
    drained_t *d = calloc(N, sizeof *d);
    assert_non_null(d);
    for (int i = 0; i < N; i++)
        assert_int_equal(av_poller_add(f->poller, &d[i].h, ready_eventfd(f), EPOLLIN, drain, &d[i]), 0);
    /* The rest of a full batch stays ready and comes in the next ones. */
    int dispatches = 0;
    while (run_once(f) == 1)
        assert_true(++dispatches <= N);
    assert_true(dispatches >= 1);
    assert_true(dispatches < N / 2); /* batches, not one by one */
    for (int i = 0; i < N; i++)
        if (d[i].calls != 1)
            fail_msg("descriptor %d: %d calls", i, d[i].calls);
    free(d);
}

/* ---- changing the events ------------------------------------------------ */

static void
test_mod_changes_the_events_watched(void **state)
{
    fixture_t *f = *state;
    int pair[2];
    socket_pair(f, pair);
    av_poll_handle_t h;
    seen_t s = { 0 };
    /* Writable from the start, but only input is watched. */
    assert_int_equal(av_poller_add(f->poller, &h, pair[0], EPOLLIN, record, &s), 0);
    assert_int_equal(run_once(f), 0);

    assert_int_equal(av_poller_mod(f->poller, &h, EPOLLOUT), 0);
    assert_int_equal(run_once(f), 1);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.events & (EPOLLIN | EPOLLOUT), EPOLLOUT);

    /* Back to input only: writable no longer calls. */
    assert_int_equal(av_poller_mod(f->poller, &h, EPOLLIN), 0);
    assert_int_equal(run_once(f), 0);
    assert_int_equal(s.calls, 1);

    assert_int_equal(av_poller_mod(f->poller, &h, EPOLLIN | EPOLLOUT), 0);
    assert_int_equal(write(pair[1], "x", 1), 1);
    assert_int_equal(run_once(f), 1);
    assert_int_equal(s.events & (EPOLLIN | EPOLLOUT), EPOLLIN | EPOLLOUT);

    /* Nothing watched: not even readable input calls. */
    assert_int_equal(av_poller_mod(f->poller, &h, 0), 0);
    assert_int_equal(run_once(f), 0);
    assert_int_equal(s.calls, 2);
}

static void
test_mod_and_add_report_errors(void **state)
{
    fixture_t *f = *state;
    int pair[2];
    socket_pair(f, pair);
    av_poll_handle_t h, twice;
    seen_t s = { 0 };
    assert_true(av_poller_add(f->poller, &h, -1, EPOLLIN, record, &s) < 0);
    assert_int_equal(av_poller_add(f->poller, &h, pair[0], EPOLLIN, record, &s), 0);
    assert_true(av_poller_add(f->poller, &twice, pair[0], EPOLLIN, record, &s) < 0); /* already there */
    av_poller_del(f->poller, &h);
    assert_true(av_poller_mod(f->poller, &h, EPOLLOUT) < 0); /* deleted */
}

/* ---- deleting ----------------------------------------------------------- */

static void
test_del_stops_callbacks_and_leaves_the_descriptor_open(void **state)
{
    fixture_t *f = *state;
    int pair[2];
    socket_pair(f, pair);
    av_poll_handle_t h;
    seen_t s = { 0 };
    assert_int_equal(av_poller_add(f->poller, &h, pair[0], EPOLLIN, record, &s), 0);
    assert_int_equal(write(pair[1], "x", 1), 1);
    av_poller_del(f->poller, &h);
    assert_int_equal(h.fd, -1);
    assert_int_equal(run_once(f), 0);
    assert_int_equal(s.calls, 0);
    assert_true(fcntl(pair[0], F_GETFD) >= 0); /* still ours to close */
    av_poller_del(f->poller, &h); /* a second del is harmless */

    /* The descriptor can be watched again. */
    assert_int_equal(av_poller_add(f->poller, &h, pair[0], EPOLLIN, record, &s), 0);
    assert_int_equal(run_once(f), 1);
    assert_int_equal(s.calls, 1);
}

/* Handles that delete (and free) each other from their callbacks. */
typedef struct peer peer_t;
typedef struct {
    av_poller_t *poller;
    peer_t **peers;     /* NULL once freed */
    int n;
    int calls;
    bool free_self;     /* a callback also deletes and frees itself */
} peers_t;

struct peer {
    av_poll_handle_t h;
    peers_t *all;
    int index;
};

static void
delete_the_others(void *arg, uint32_t events)
{
    peer_t *me = arg;
    peers_t *all = me->all;
    (void)events;
    all->calls++;
    for (int i = 0; i < all->n; i++) {
        if (i == me->index || !all->peers[i])
            continue;
        av_poller_del(all->poller, &all->peers[i]->h);
        /* Freed at once: a call on it after this would be a use after free. */
        free(all->peers[i]);
        all->peers[i] = NULL;
    }
    if (all->free_self) {
        int index = me->index;
        av_poller_del(all->poller, &me->h);
        free(me);
        all->peers[index] = NULL;
    }
}

static void
make_peers(fixture_t *f, peers_t *all, int n, bool free_self)
{
    all->poller = f->poller;
    all->n = n;
    all->free_self = free_self;
    all->peers = calloc((size_t)n, sizeof *all->peers);
    assert_non_null(all->peers);
    for (int i = 0; i < n; i++) {
        peer_t *p = calloc(1, sizeof *p);
        assert_non_null(p);
        p->all = all;
        p->index = i;
        all->peers[i] = p;
        assert_int_equal(av_poller_add(f->poller, &p->h, ready_eventfd(f), EPOLLIN, delete_the_others, p), 0);
    }
}

static void
free_peers(peers_t *all)
{
    for (int i = 0; i < all->n; i++) {
        if (all->peers[i]) {
            av_poller_del(all->poller, &all->peers[i]->h);
            free(all->peers[i]);
        }
    }
    free(all->peers);
}

static void
test_del_from_another_callback_prevents_that_handles_pending_call(void **state)
{
    fixture_t *f = *state;
    /* Two ready in the same batch, each deleting the other: one call. */
    peers_t two = { 0 };
    make_peers(f, &two, 2, false);
    assert_int_equal(run_once(f), 1);
    assert_int_equal(two.calls, 1);
    free_peers(&two);
}

static void
test_del_of_many_pending_handles_from_one_callback_prevents_every_call(void **state)
{
    fixture_t *f = *state;
    peers_t many = { 0 };
    make_peers(f, &many, 100, false);
    assert_int_equal(run_once(f), 1);
    assert_int_equal(many.calls, 1);
    int left = 0;
    for (int i = 0; i < many.n; i++)
        left += many.peers[i] != NULL;
    assert_int_equal(left, 1);
    free_peers(&many);
}

static void
test_del_and_free_of_its_own_handle_inside_its_callback(void **state)
{
    fixture_t *f = *state;
    peers_t all = { 0 };
    make_peers(f, &all, 3, true);
    assert_int_equal(run_once(f), 1);
    assert_int_equal(all.calls, 1);
    for (int i = 0; i < all.n; i++)
        assert_null(all.peers[i]);
    assert_int_equal(run_once(f), 0);
    free_peers(&all);
}

/* ---- destroying --------------------------------------------------------- */

static void
test_destroy_gives_back_its_descriptor_and_its_loop_source(void **state)
{
    fixture_t *f = *state;
    av_poller_destroy(&f->poller); /* the fixture's; counted from here */
    size_t before = open_fd_count();
    f->poller = av_poller_new(f->loop);
    assert_non_null(f->poller);
    assert_int_equal(open_fd_count(), before + 1); /* its epoll set */

    int pair[2];
    socket_pair(f, pair);
    av_poll_handle_t h;
    seen_t s = { 0 };
    assert_int_equal(av_poller_add(f->poller, &h, pair[0], EPOLLIN, record, &s), 0);
    assert_int_equal(write(pair[1], "x", 1), 1);

    /* Destroyed with a handle still in it and its descriptor ready. */
    av_poller_destroy(&f->poller);
    assert_null(f->poller);
    assert_int_equal(open_fd_count(), before + 2); /* just the pair, left open */
    /* The loop no longer watches anything of the poller's. */
    assert_int_equal(run_once(f), 0);
    assert_int_equal(s.calls, 0);
    av_poller_destroy(&f->poller); /* a second destroy is harmless */
    av_poller_destroy(NULL);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_ready_descriptor_calls_its_callback_with_its_events),
        T(test_nothing_ready_calls_nothing),
        T(test_callback_repeats_while_the_descriptor_stays_ready),
        T(test_many_ready_descriptors_are_served_in_one_dispatch),
        T(test_more_ready_descriptors_than_a_batch_are_all_served_once),
        T(test_mod_changes_the_events_watched),
        T(test_mod_and_add_report_errors),
        T(test_del_stops_callbacks_and_leaves_the_descriptor_open),
        T(test_del_from_another_callback_prevents_that_handles_pending_call),
        T(test_del_of_many_pending_handles_from_one_callback_prevents_every_call),
        T(test_del_and_free_of_its_own_handle_inside_its_callback),
        T(test_destroy_gives_back_its_descriptor_and_its_loop_source),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
