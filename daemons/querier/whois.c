/* The whois protocol (RFC 3912), also the line protocol of most registry
 * availability services: connect, send one query line, read until the
 * server closes. Non-blocking on the daemon's loop; the reply is capped at
 * the registry's max_reply_bytes (what is past it is not read). */
#include "querier.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REPLY_INITIAL_BYTES 1024

static void on_io(void *arg, uint32_t revents);

static int
format_request(querier_t *q, query_t *x)
{
    const char *tmpl = q->registry->query;
    size_t name_len = strlen(x->name);
    /* %l: the label under the registry's suffix; the dispatcher only sends
     * names one label under it, so that is the first label. */
    size_t label_len = strcspn(x->name, ".");
    size_t len = strlen(tmpl) + name_len;
    /* The template was checked at load: one %s or %l, %% as the only escape. */
    x->request = malloc(len + 1);
    if (!x->request)
        return -1;
    size_t o = 0;
    for (const char *c = tmpl; *c; c++) {
        if (c[0] == '%' && (c[1] == 's' || c[1] == 'l')) {
            size_t n = c[1] == 's' ? name_len : label_len;
            memcpy(x->request + o, x->name, n);
            o += n;
            c++;
        } else if (c[0] == '%' && c[1] == '%') {
            x->request[o++] = '%';
            c++;
        } else {
            x->request[o++] = *c;
        }
    }
    x->request[o] = '\0';
    x->request_len = o;
    return 0;
}

static int
whois_start(querier_t *q, query_t *x)
{
    char why[128];
    if (format_request(q, x) < 0) {
        querier_fail(q, x, AV_REASON_REGISTRY_ERROR, "out of memory");
        return -1;
    }
    x->fd = socket(q->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (x->fd < 0) {
        snprintf(why, sizeof why, "socket: %s", strerror(errno));
        querier_fail(q, x, AV_REASON_REGISTRY_ERROR, why);
        return -1;
    }
    if (connect(x->fd, (struct sockaddr *)&q->addr, q->addr_len) < 0 && errno != EINPROGRESS) {
        snprintf(why, sizeof why, "connect to %s:%u: %s", q->registry->host, q->registry->port, strerror(errno));
        querier_fail(q, x, AV_REASON_REGISTRY_ERROR, why);
        return -1;
    }
    if (av_poller_add(q->poller, &x->poll, x->fd, EPOLLOUT, on_io, x) < 0) {
        querier_fail(q, x, AV_REASON_REGISTRY_ERROR, "cannot watch the connection");
        return -1;
    }
    return 0;
}

static void
whois_abort(querier_t *q, query_t *x)
{
    if (x->poll.fd >= 0)
        av_poller_del(q->poller, &x->poll);
    if (x->fd >= 0)
        close(x->fd);
    x->fd = -1;
}

static void
fail_errno(querier_t *q, query_t *x, const char *what, int err)
{
    char why[160];
    snprintf(why, sizeof why, "%s %s:%u: %s", what, q->registry->host, q->registry->port, strerror(err));
    querier_fail(q, x, AV_REASON_REGISTRY_ERROR, why);
}

static void
on_writable(querier_t *q, query_t *x)
{
    if (x->request_sent == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(x->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fail_errno(q, x, "connect to", err);
            return;
        }
    }
    while (x->request_sent < x->request_len) {
        ssize_t n = send(x->fd, x->request + x->request_sent, x->request_len - x->request_sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fail_errno(q, x, "send to", errno);
            return;
        }
        x->request_sent += (size_t)n;
    }
    av_poller_mod(q->poller, &x->poll, EPOLLIN);
}

static void
on_readable(querier_t *q, query_t *x)
{
    size_t cap = q->registry->max_reply_bytes;
    for (;;) {
        if (x->reply_len == cap) {
            x->truncated = true; /* enough to classify; the rest is not read */
            querier_finish(q, x);
            return;
        }
        if (x->reply_len == x->reply_cap) {
            size_t grown = x->reply_cap ? x->reply_cap * 2 : REPLY_INITIAL_BYTES;
            if (grown > cap)
                grown = cap;
            char *buf = realloc(x->reply, grown);
            if (!buf) {
                querier_fail(q, x, AV_REASON_REGISTRY_ERROR, "out of memory for the reply");
                return;
            }
            x->reply = buf;
            x->reply_cap = grown;
        }
        ssize_t n = recv(x->fd, x->reply + x->reply_len, x->reply_cap - x->reply_len, 0);
        if (n > 0) {
            x->reply_len += (size_t)n;
            continue;
        }
        if (n == 0) {
            querier_finish(q, x); /* the server closed: the reply is whole */
            return;
        }
        if (errno == EAGAIN)
            return;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET && x->reply_len > 0) {
            querier_finish(q, x); /* some servers reset after writing it all */
            return;
        }
        fail_errno(q, x, "receive from", errno);
        return;
    }
}

static void
on_io(void *arg, uint32_t revents)
{
    query_t *x = arg;
    querier_t *q = x->q;
    if (x->request_sent < x->request_len) {
        if (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_writable(q, x);
        return;
    }
    if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(q, x);
}

const protocol_t whois_protocol = {
    .name = "whois",
    .source = AV_SOURCE_WHOIS,
    .start = whois_start,
    .abort = whois_abort,
};

/* Registry availability services (EURid's and DNS Belgium's DAS on port
 * 4343, Norid's on 79): the same exchange, a status in the reply, an
 * `RC` code for errors; what the codes mean is in the registry's patterns. */
const protocol_t das_protocol = {
    .name = "das",
    .source = AV_SOURCE_DAS,
    .start = whois_start,
    .abort = whois_abort,
};
