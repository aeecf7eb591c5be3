/* The TCP line gateway, as the old daemon's port: a client sends `NAME\r\n`
 * and reads `NAME STATUS [reason]\r\n`, then the server closes (so
 * `whois -h HOST -p PORT NAME` works). Clients are checked against
 * cidr_allow/cidr_deny, counted against intake.gateway_clients, and must
 * send their line within intake.gateway_timeout_ms. A flood of connections
 * that say nothing cannot keep others out: one address holds at most a
 * share of the slots, silent ones are closed sooner when slots run low,
 * and a newcomer takes the slot of the oldest silent one when all are
 * taken. */
#include "intake.h"

#include "av_poller.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINE_MAX_BYTES 1024
#define OUT_MAX_BYTES (AV_NAME_MAX + AV_REASON_MAX + 64)
/* One address (an IPv6 client: its /64) holds at most this part of
 * intake.gateway_clients: 256 of 1,024. */
#define ADDRESS_SHARE_DIVISOR 4
/* Once this part of the slots is taken (768 of 1,024), a connection that
 * has not sent its line within SILENT_WHEN_BUSY_MS is closed: a whois
 * client sends it as it connects. */
#define BUSY_PERCENT 75
#define SILENT_WHEN_BUSY_MS 1000
#define ADDRESS_KEY_MAX (INET6_ADDRSTRLEN + 4)

struct gateway_conn {
    TAILQ_ENTRY(gateway_conn) entry;
    gateway_t *gw;
    int fd;
    av_poll_handle_t poll;
    uint64_t deadline_us;      /* for the query line, then for writing */
    request_t *request;
    char in[LINE_MAX_BYTES];
    size_t in_len;
    char out[OUT_MAX_BYTES];
    size_t out_len;
    size_t out_sent;
    bool answered;
    uint64_t accepted_us;
    char address[ADDRESS_KEY_MAX]; /* what it counts against in per_address */
};

struct gateway {
    intake_t *in;
    int fd;
    sd_event_source *io;       /* the listening socket */
    av_poller_t *poller;       /* the clients */
    TAILQ_HEAD(, gateway_conn) conns; /* in accept order, so in deadline order */
    uint32_t count;
    zhashx_t *per_address;     /* address key -> its connections (a count, not a pointer) */
    uint64_t *accepted;
    uint64_t *refused;
    uint64_t *timeouts;
    uint64_t *refused_address; /* past one address's share */
    uint64_t *evicted;         /* silent, closed for a newcomer */
};

/* A client's address as its share is counted: IPv4 (also mapped in IPv6)
 * whole, IPv6 by its /64, which one client usually has to itself. */
static void
address_key(const struct sockaddr *sa, char *key, size_t size)
{
    snprintf(key, size, "?");
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, key, (socklen_t)size);
    } else if (sa->sa_family == AF_INET6) {
        struct in6_addr a = ((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&a)) {
            inet_ntop(AF_INET, &a.s6_addr[12], key, (socklen_t)size);
            return;
        }
        memset(&a.s6_addr[8], 0, 8);
        inet_ntop(AF_INET6, &a, key, (socklen_t)size);
        strncat(key, "/64", size - strlen(key) - 1);
    }
}

static uint32_t
address_count(gateway_t *gw, const char *key)
{
    return (uint32_t)(uintptr_t)zhashx_lookup(gw->per_address, key);
}

static void
address_add(gateway_t *gw, const char *key, int delta)
{
    uint32_t n = address_count(gw, key) + (uint32_t)delta;
    if (n == 0)
        zhashx_delete(gw->per_address, key);
    else
        zhashx_update(gw->per_address, key, (void *)(uintptr_t)n);
}

/* Has not sent its line: neither a request nor an answer on the way. */
static bool
silent(const gateway_conn_t *c)
{
    return !c->request && !c->answered;
}

uint32_t
gateway_clients(const gateway_t *gw)
{
    return gw ? gw->count : 0;
}

void
gateway_stop_listening(gateway_t *gw)
{
    if (!gw || gw->fd < 0)
        return;
    gw->io = sd_event_source_disable_unref(gw->io);
    close(gw->fd);
    gw->fd = -1;
}

static void
conn_close(gateway_conn_t *c)
{
    gateway_t *gw = c->gw;
    TAILQ_REMOVE(&gw->conns, c, entry);
    gw->count--;
    address_add(gw, c->address, -1);
    if (c->request)
        request_forget_conn(c->request);
    av_poller_del(gw->poller, &c->poll);
    /* Closing with unread bytes sends a reset, and a reset can make the
     * client lose what it was just told (a refusal sent as it sent its
     * line): read what has come, bounded, before closing. */
    char sink[1024];
    for (int i = 0; i < 4 && recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
        ;
    close(c->fd);
    free(c);
}

void
request_forget_conn(request_t *req)
{
    if (req->conn)
        req->conn->request = NULL;
    req->conn = NULL;
}

static void
conn_flush(gateway_conn_t *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            av_poller_mod(c->gw->poller, &c->poll, EPOLLOUT);
            return;
        }
        if (n <= 0)
            break; /* the client left */
        c->out_sent += (size_t)n;
    }
    conn_close(c);
}

/* Writes what a client gets when it gets no answer (refused, too long). */
static void
conn_say(gateway_conn_t *c, const char *text)
{
    size_t n = strlen(text);
    memcpy(c->out, text, n < sizeof c->out ? n : sizeof c->out);
    c->out_len = n < sizeof c->out ? n : sizeof c->out;
    c->answered = true;
    conn_flush(c);
}

void
gateway_conn_bind(gateway_conn_t *c, request_t *r)
{
    c->request = r;
}

void
gateway_answer(gateway_conn_t *c, const char *line, size_t len)
{
    c->request = NULL;
    c->deadline_us = av_mono_us() + (uint64_t)av_daemon_config(c->gw->in->d)->intake.gateway_timeout_ms * 1000;
    memcpy(c->out, line, len < sizeof c->out ? len : sizeof c->out);
    c->out_len = len < sizeof c->out ? len : sizeof c->out;
    c->answered = true;
    conn_flush(c);
}

gateway_line_t
gateway_read_line(const char *in, size_t len, size_t seen, size_t cap, size_t *start, size_t *end)
{
    const char *lf = memchr(in + seen, '\n', len - seen);
    if (!lf)
        return len >= cap ? GATEWAY_LINE_TOO_LONG : GATEWAY_LINE_PARTIAL;
    /* The name: the line without its end and surrounding blanks. */
    size_t s = 0, e = (size_t)(lf - in) + 1;
    while (s < e && (in[s] == ' ' || in[s] == '\t'))
        s++;
    while (e > s && (in[e - 1] == '\r' || in[e - 1] == '\n' || in[e - 1] == ' ' || in[e - 1] == '\t'))
        e--;
    *start = s;
    *end = e;
    return e == s ? GATEWAY_LINE_EMPTY : GATEWAY_LINE_NAME;
}

static void
take_line(gateway_conn_t *c, size_t start, size_t end)
{
    char *owned = malloc(end - start);
    if (!owned) {
        conn_say(c, "% server error\r\n");
        return;
    }
    memcpy(owned, c->in + start, end - start);
    av_check_t check = {
        .id = AV_STR("gateway"),
        .name = { owned, (uint32_t)(end - start) },
    };
    av_poller_mod(c->gw->poller, &c->poll, 0); /* nothing more to read */
    /* request_accept binds the request to c; when it answers at once, c is
     * closed by the time it returns and must not be touched here. */
    request_accept(c->gw->in, ORIGIN_GATEWAY, NULL, owned, &check, NULL, c);
}

static void
on_readable(gateway_conn_t *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_close(c); /* left before asking */
            return;
        }
        size_t seen = c->in_len, start = 0, end = 0;
        c->in_len += (size_t)n;
        switch (gateway_read_line(c->in, c->in_len, seen, sizeof c->in, &start, &end)) {
        case GATEWAY_LINE_PARTIAL:
            continue;
        case GATEWAY_LINE_NAME:
            take_line(c, start, end);
            return;
        case GATEWAY_LINE_EMPTY:
            conn_say(c, "% empty query: send NAME\\r\\n\r\n");
            return;
        case GATEWAY_LINE_TOO_LONG:
            conn_say(c, "% query too long\r\n");
            return;
        }
    }
}

static void
on_conn_io(void *arg, uint32_t revents)
{
    gateway_conn_t *c = arg;
    if (c->answered) {
        if (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_flush(c);
        return;
    }
    if (c->request) {
        if (revents & (EPOLLERR | EPOLLHUP))
            conn_close(c); /* gone while its answer was on the way */
        return;
    }
    if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(c);
}

/* All slots taken: the oldest connection that has not sent its line (the
 * list is in accept order) makes room for the newcomer. */
static bool
evict_silent(gateway_t *gw, const gateway_conn_t *newcomer)
{
    gateway_conn_t *c;
    TAILQ_FOREACH(c, &gw->conns, entry) {
        if (c != newcomer && silent(c)) {
            (*gw->evicted)++;
            conn_close(c);
            return true;
        }
    }
    return false;
}

static int
on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    (void)s;
    (void)revents;
    gateway_t *gw = userdata;
    const av_config_t *cfg = av_daemon_config(gw->in->d);
    const av_process_cfg_t *p = &cfg->intake.process;
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int cfd = accept4(fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                av_report(gw->in->d, AV_LOG_ERR, NULL, "accept_failed", "gateway accept: %s", strerror(errno));
            return 0;
        }
        if (!av_cidr_allowed(&p->cidr_allow, &p->cidr_deny, (struct sockaddr *)&peer)) {
            char host[INET6_ADDRSTRLEN] = "?";
            getnameinfo((struct sockaddr *)&peer, len, host, sizeof host, NULL, 0, NI_NUMERICHOST);
            (*gw->refused)++;
            av_log_info("gateway: refused %s (cidr_allow/cidr_deny)", host);
            close(cfd); /* refused: not even a greeting */
            continue;
        }
        gateway_conn_t *c = calloc(1, sizeof *c);
        if (!c) {
            close(cfd);
            continue;
        }
        c->gw = gw;
        c->fd = cfd;
        c->poll.fd = -1;
        c->accepted_us = av_mono_us();
        c->deadline_us = c->accepted_us + (uint64_t)cfg->intake.gateway_timeout_ms * 1000;
        address_key((struct sockaddr *)&peer, c->address, sizeof c->address);
        uint32_t share = cfg->intake.gateway_clients / ADDRESS_SHARE_DIVISOR;
        bool over_share = address_count(gw, c->address) >= (share ? share : 1);
        TAILQ_INSERT_TAIL(&gw->conns, c, entry);
        gw->count++;
        address_add(gw, c->address, 1);
        (*gw->accepted)++;
        if (av_poller_add(gw->poller, &c->poll, cfd, EPOLLIN, on_conn_io, c) < 0) {
            conn_close(c);
            continue;
        }
        if (over_share) {
            (*gw->refused)++;
            (*gw->refused_address)++;
            conn_say(c, "% too many connections from your address, try again\r\n");
        } else if (gw->count > cfg->intake.gateway_clients && !evict_silent(gw, c)) {
            (*gw->refused)++;
            conn_say(c, "% too many connections, try again\r\n");
        }
    }
    return 0;
}

void
gateway_scan(gateway_t *gw, uint64_t now_us)
{
    if (!gw)
        return;
    /* A connection waiting for its answer is the request's business (its
     * deadline answers it); only silent clients and stuck writes go here.
     * The list is at most intake.gateway_clients long. When slots run low
     * the silent ones get SILENT_WHEN_BUSY_MS, not the whole timeout. */
    const av_config_t *cfg = av_daemon_config(gw->in->d);
    bool busy = (uint64_t)gw->count * 100 >= (uint64_t)cfg->intake.gateway_clients * BUSY_PERCENT;
    gateway_conn_t *c, *next;
    for (c = TAILQ_FIRST(&gw->conns); c; c = next) {
        next = TAILQ_NEXT(c, entry);
        bool expired = c->deadline_us <= now_us ||
                       (busy && silent(c) && c->accepted_us + SILENT_WHEN_BUSY_MS * 1000 <= now_us);
        if (!c->request && expired) {
            (*gw->timeouts)++;
            conn_close(c);
        }
    }
}


gateway_t *
gateway_open(intake_t *in, const char *endpoint)
{
    char why[128];
    gateway_t *gw = calloc(1, sizeof *gw);
    if (!gw)
        return NULL;
    gw->in = in;
    TAILQ_INIT(&gw->conns);
    gw->accepted = av_daemon_counter(in->d, "gateway_accepted");
    gw->refused = av_daemon_counter(in->d, "gateway_refused");
    gw->timeouts = av_daemon_counter(in->d, "gateway_timeouts");
    gw->refused_address = av_daemon_counter(in->d, "gateway_refused_address");
    gw->evicted = av_daemon_counter(in->d, "gateway_evicted");
    if (!(gw->per_address = zhashx_new())) {
        free(gw);
        return NULL;
    }
    gw->fd = av_inherited_socket(endpoint);
    if (gw->fd >= 0) {
        /* From a socket unit: it stays listening while we restart. */
        int flags = fcntl(gw->fd, F_GETFL);
        fcntl(gw->fd, F_SETFL, flags | O_NONBLOCK);
        fcntl(gw->fd, F_SETFD, FD_CLOEXEC);
        av_log_info("%s: using the listening socket passed by the service manager", endpoint);
    } else {
        gw->fd = av_tcp_listen(endpoint, 4096, why, sizeof why);
    }
    if (gw->fd < 0) {
        av_log_err("cannot listen on %s: %s", endpoint, why);
        zhashx_destroy(&gw->per_address);
        free(gw);
        return NULL;
    }
    if (!(gw->poller = av_poller_new(av_daemon_loop(in->d)))) {
        close(gw->fd);
        zhashx_destroy(&gw->per_address);
        free(gw);
        return NULL;
    }
    if (sd_event_add_io(av_daemon_loop(in->d), &gw->io, gw->fd, EPOLLIN, on_accept, gw) < 0) {
        av_poller_destroy(&gw->poller);
        close(gw->fd);
        zhashx_destroy(&gw->per_address);
        free(gw);
        return NULL;
    }
    return gw;
}

void
gateway_close(gateway_t **self_p)
{
    gateway_t *gw = self_p ? *self_p : NULL;
    if (!gw)
        return;
    gateway_conn_t *c;
    while ((c = TAILQ_FIRST(&gw->conns)))
        conn_close(c);
    gateway_stop_listening(gw);
    av_poller_destroy(&gw->poller);
    zhashx_destroy(&gw->per_address);
    free(gw);
    *self_p = NULL;
}
