/* The TCP line gateway way into intake: one connection per check, sending
 * "NAME\r\n" and reading "NAME STATUS [reason]\r\n" until the server
 * closes. Non-blocking sockets on one epoll, so thousands of connections
 * are in flight at once from one thread. */
#include "load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONN_NONE        UINT32_MAX
#define EVENTS_MAX       1024
/* intake's longest line is NAME (1024) + status + reason (256) + 64; ours
 * are far shorter, and anything longer is a bug worth reporting. */
#define LINE_MAX_BYTES   (AV_NAME_MAX + AV_REASON_MAX + 64)
/* Connections beyond the slots: an answered one lingers until the server's
 * close arrives, while its slot already carries the next check. */
#define LINGER_EXTRA(n)  ((n) / 4 + 16)
/* intake closes right after its answer; one still open this long after is
 * counted (unclosed) and closed by us, so connections cannot pile up. */
#define LINGER_MAX_US    1000000

typedef struct {
    int fd;                      /* -1 when free */
    uint32_t slot;
    uint64_t seq;
    bool connected;
    bool answered;
    uint32_t prev, next;         /* answered, waiting for the close: oldest first */
    uint64_t linger_until_us;
    uint16_t out_len, out_sent;
    uint16_t in_len;
    char out[LOAD_NAME_BYTES + 2];
    char in[LINE_MAX_BYTES];
} gw_conn_t;

typedef struct {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int epfd;
    gw_conn_t *conns;
    uint32_t n_conns;
    uint32_t *free_conns;
    uint32_t n_free;
    uint32_t *conn_of_slot;
    uint32_t n_slots;
    uint32_t linger_head, linger_tail;
} mode_gw_t;

/* tcp://HOST:PORT (or HOST:PORT, [V6]:PORT) to an address. */
static int
resolve(mode_gw_t *g, const char *endpoint)
{
    char host[256];
    const char *hostport = strncmp(endpoint, "tcp://", 6) == 0 ? endpoint + 6 : endpoint;
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host || colon == hostport) {
        fprintf(stderr, "availd-load: gateway endpoint %s: want tcp://HOST:PORT\n", endpoint);
        return -1;
    }
    size_t hlen = (size_t)(colon - hostport);
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "availd-load: gateway endpoint %s: %s\n", endpoint, gai_strerror(rc));
        return -1;
    }
    memcpy(&g->addr, res->ai_addr, res->ai_addrlen);
    g->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

void *
mode_gateway_open(const load_mode_cfg_t *cfg)
{
    mode_gw_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->epfd = -1;
    g->n_slots = cfg->slots;
    g->n_conns = cfg->slots + LINGER_EXTRA(cfg->slots);
    g->conns = calloc(g->n_conns, sizeof *g->conns);
    g->free_conns = calloc(g->n_conns, sizeof *g->free_conns);
    g->conn_of_slot = calloc(g->n_slots, sizeof *g->conn_of_slot);
    if (!g->conns || !g->free_conns || !g->conn_of_slot || resolve(g, cfg->endpoint) < 0 ||
        (g->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        void *self = g;
        mode_gateway_close(&self);
        return NULL;
    }
    for (uint32_t i = 0; i < g->n_conns; i++) {
        g->conns[i].fd = -1;
        g->free_conns[g->n_free++] = g->n_conns - 1 - i;
    }
    for (uint32_t i = 0; i < g->n_slots; i++)
        g->conn_of_slot[i] = CONN_NONE;
    g->linger_head = g->linger_tail = CONN_NONE;
    return g;
}

static void
linger_push(mode_gw_t *g, uint32_t ci)
{
    gw_conn_t *c = &g->conns[ci];
    c->linger_until_us = load_now_us() + LINGER_MAX_US;
    c->prev = g->linger_tail;
    c->next = CONN_NONE;
    if (g->linger_tail != CONN_NONE)
        g->conns[g->linger_tail].next = ci;
    else
        g->linger_head = ci;
    g->linger_tail = ci;
}

static void
linger_remove(mode_gw_t *g, uint32_t ci)
{
    gw_conn_t *c = &g->conns[ci];
    if (c->prev != CONN_NONE)
        g->conns[c->prev].next = c->next;
    else
        g->linger_head = c->next;
    if (c->next != CONN_NONE)
        g->conns[c->next].prev = c->prev;
    else
        g->linger_tail = c->prev;
    c->prev = c->next = CONN_NONE;
}

static void
conn_close(mode_gw_t *g, uint32_t ci)
{
    gw_conn_t *c = &g->conns[ci];
    if (c->fd < 0)
        return;
    if (c->answered)
        linger_remove(g, ci);
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    if (c->slot < g->n_slots && g->conn_of_slot[c->slot] == ci)
        g->conn_of_slot[c->slot] = CONN_NONE;
    g->free_conns[g->n_free++] = ci;
}

void
mode_gateway_close(void **self_p)
{
    mode_gw_t *g = self_p ? *self_p : NULL;
    if (!g)
        return;
    if (g->conns)
        for (uint32_t i = 0; i < g->n_conns; i++)
            if (g->conns[i].fd >= 0)
                close(g->conns[i].fd);
    if (g->epfd >= 0)
        close(g->epfd);
    free(g->conns);
    free(g->free_conns);
    free(g->conn_of_slot);
    free(g);
    *self_p = NULL;
}

/* The request failed for a transport reason: count it once, free it. */
static void
conn_fail(mode_gw_t *g, load_engine_t *e, uint32_t ci, uint64_t *kind)
{
    gw_conn_t *c = &g->conns[ci];
    if (!c->answered) {
        load_stats_t *st = load_engine_stats(e);
        st->errors++;
        (*kind)++;
        if (load_engine_seq(e, c->slot) == c->seq)
            load_engine_failed(e, c->slot);
    }
    conn_close(g, ci);
}

/* A reply we cannot read: the request failed if it had no answer yet. */
static void
conn_garbled(mode_gw_t *g, load_engine_t *e, uint32_t ci)
{
    load_stats_t *st = load_engine_stats(e);
    st->undecodable++;
    conn_fail(g, e, ci, &st->error_closed);
}

static int
gw_issue(void *mode, load_engine_t *e, uint32_t slot)
{
    mode_gw_t *g = mode;
    load_stats_t *st = load_engine_stats(e);
    if (g->n_free == 0)
        return 1; /* every connection lingers; the next close frees one */
    uint32_t ci = g->free_conns[g->n_free - 1];
    gw_conn_t *c = &g->conns[ci];
    int fd = socket(g->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        st->errors++;
        st->error_connect++;
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&g->addr, g->addr_len) < 0 && errno != EINPROGRESS) {
        close(fd);
        st->errors++;
        st->error_connect++;
        return -1;
    }
    struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u32 = ci };
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        st->errors++;
        st->error_connect++;
        return -1;
    }
    g->n_free--;
    size_t len = load_engine_name(e, slot, 0, c->out, sizeof c->out - 2);
    c->out[len++] = '\r';
    c->out[len++] = '\n';
    c->fd = fd;
    c->slot = slot;
    c->seq = load_engine_seq(e, slot);
    c->connected = false;
    c->answered = false;
    c->out_len = (uint16_t)len;
    c->out_sent = 0;
    c->in_len = 0;
    g->conn_of_slot[slot] = ci;
    return 0;
}

static void
gw_cancel(void *mode, load_engine_t *e, uint32_t slot)
{
    (void)e;
    mode_gw_t *g = mode;
    if (slot < g->n_slots && g->conn_of_slot[slot] != CONN_NONE)
        conn_close(g, g->conn_of_slot[slot]);
}

/* One line from the server: the answer, or a refusal ("% ..."). A line
 * after the answer is a second answer for the same check. Returns false
 * when the connection is done with. */
static bool
take_line(mode_gw_t *g, load_engine_t *e, uint32_t ci, char *line, size_t len)
{
    gw_conn_t *c = &g->conns[ci];
    load_stats_t *st = load_engine_stats(e);
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    if (!c->answered && len && line[0] == '%') {
        conn_fail(g, e, ci, &st->error_refused);
        return false;
    }
    /* NAME STATUS [reason] */
    char *sp1 = memchr(line, ' ', len);
    if (!sp1) {
        conn_garbled(g, e, ci);
        return false;
    }
    char *status = sp1 + 1;
    char *end = line + len;
    char *sp2 = memchr(status, ' ', (size_t)(end - status));
    av_str_t status_s = { status, (uint32_t)((sp2 ? sp2 : end) - status) };
    int parsed = av_status_parse(status_s);
    if (parsed < 0) {
        conn_garbled(g, e, ci);
        return false;
    }
    load_answer_t a = {
        .status = (av_status_t)parsed,
        .source = -1,
        .reason = sp2 ? (av_str_t){ sp2 + 1, (uint32_t)(end - sp2 - 1) } : (av_str_t){ "", 0 },
        .query = { line, (uint32_t)(sp1 - line) },
        .name = { line, (uint32_t)(sp1 - line) },
    };
    if (!c->answered) {
        c->answered = true;
        linger_push(g, ci);
        if (g->conn_of_slot[c->slot] == ci)
            g->conn_of_slot[c->slot] = CONN_NONE; /* the slot moves on; we wait for the close */
    }
    load_engine_answer_seq(e, c->slot, c->seq, 0, &a);
    return true;
}

static void
on_readable(mode_gw_t *g, load_engine_t *e, uint32_t ci)
{
    gw_conn_t *c = &g->conns[ci];
    load_stats_t *st = load_engine_stats(e);
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            /* Closed: an unterminated last line still counts. */
            if (c->in_len && !take_line(g, e, ci, c->in, c->in_len))
                return;
            if (c->answered)
                conn_close(g, ci);
            else
                conn_fail(g, e, ci, &st->error_closed);
            return;
        }
        c->in_len += (uint16_t)n;
        char *lf;
        while ((lf = memchr(c->in, '\n', c->in_len))) {
            size_t len = (size_t)(lf - c->in) + 1;
            if (!take_line(g, e, ci, c->in, len))
                return;
            memmove(c->in, c->in + len, c->in_len - len);
            c->in_len = (uint16_t)(c->in_len - len);
        }
        if (c->in_len == sizeof c->in) {
            conn_garbled(g, e, ci);
            return;
        }
    }
}

static void
on_writable(mode_gw_t *g, load_engine_t *e, uint32_t ci)
{
    gw_conn_t *c = &g->conns[ci];
    load_stats_t *st = load_engine_stats(e);
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            conn_fail(g, e, ci, &st->error_connect);
            return;
        }
        c->connected = true;
    }
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_fail(g, e, ci, &st->error_closed);
            return;
        }
        c->out_sent = (uint16_t)(c->out_sent + n);
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = ci };
    epoll_ctl(g->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* epoll_pwait2 has a timespec timeout; before Linux 5.11 fall back to
 * epoll_wait's milliseconds, rounded up so we never spin. */
static int
epoll_wait_us(int epfd, struct epoll_event *events, int max, uint64_t timeout_us)
{
    static bool no_pwait2;
    if (!no_pwait2) {
        struct timespec ts = { .tv_sec = (time_t)(timeout_us / 1000000u),
                               .tv_nsec = (long)(timeout_us % 1000000u) * 1000 };
        int n = epoll_pwait2(epfd, events, max, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        no_pwait2 = true;
    }
    return epoll_wait(epfd, events, max, (int)((timeout_us + 999) / 1000));
}

static int
gw_wait(void *mode, load_engine_t *e, uint64_t timeout_us, bool want_write)
{
    (void)want_write; /* a blocked issue waits for a close, which is a read */
    mode_gw_t *g = mode;
    struct epoll_event events[EVENTS_MAX];
    if (g->linger_head != CONN_NONE) {
        uint64_t now_us = load_now_us(), until_us = g->conns[g->linger_head].linger_until_us;
        uint64_t linger_us = until_us > now_us ? until_us - now_us : 0;
        if (linger_us < timeout_us)
            timeout_us = linger_us;
    }
    int n = epoll_wait_us(g->epfd, events, EVENTS_MAX, timeout_us);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    uint64_t now_us = load_now_us();
    while (g->linger_head != CONN_NONE && g->conns[g->linger_head].linger_until_us <= now_us) {
        load_engine_stats(e)->unclosed++;
        conn_close(g, g->linger_head);
    }
    for (int i = 0; i < n; i++) {
        uint32_t ci = events[i].data.u32;
        if (ci >= g->n_conns || g->conns[ci].fd < 0)
            continue; /* closed earlier in this batch */
        gw_conn_t *c = &g->conns[ci];
        uint32_t ev = events[i].events;
        if (!c->connected && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            on_writable(g, e, ci);
            if (c->fd < 0 || !c->connected)
                continue;
        } else if (ev & EPOLLOUT) {
            on_writable(g, e, ci);
            if (c->fd < 0)
                continue;
        }
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            on_readable(g, e, ci);
    }
    return 0;
}

const load_mode_ops_t load_mode_gateway = {
    .name = "gateway",
    .issue = gw_issue,
    .wait = gw_wait,
    .cancel = gw_cancel,
};
