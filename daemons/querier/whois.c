/* The whois protocol (RFC 3912), also the line protocol of most registry
 * availability services: connect, send one query line, read until the
 * server closes. Non-blocking on the querier's loop; the reply is capped at
 * the registry's max_reply_bytes (what is past it is not read).
 *
 * The registry's address is looked up (c-ares, on the loop) when the first
 * query needs it, not at start: a constellation started with registries
 * nobody asks (the default table) sends nothing anywhere, not even DNS. */
#include "resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* After a failed lookup, queries fail at once for this long before the
 * next try, so an unreachable resolver is not asked once per check. */
#define RESOLVE_RETRY_US (10 * 1000 * 1000ULL)

typedef struct whois whois_t;

/* A lookup of the address under way: c-ares cannot take one back, so its
 * callback gets this ticket, which a reload or the end empties. */
typedef struct {
    whois_t *w;                  /* NULL: no one waits for it any more */
} address_lookup_t;

/* The registry's server, as far as it is known. */
struct whois {
    registry_t *registry;
    resolver_t *resolver;        /* the querier's shared channel, taken when first needed */
    address_lookup_t *lookup;
    bool resolving;
    uint64_t tried_us;           /* last lookup; 0 = not yet */
    bool ready;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char error[160];             /* why there is no address */
};

/* One exchange. */
typedef struct {
    int fd;
    av_poll_handle_t poll;
    char *request;               /* the query line */
    size_t request_len;
    size_t request_sent;
} exchange_t;

static void on_io(void *arg, uint32_t revents);

/* ---- the registry's address ------------------------------------------- */

static void
address_known(whois_t *w, const struct sockaddr *addr, socklen_t len, const char *error)
{
    registry_t *r = w->registry;
    w->resolving = false;
    if (addr) {
        memcpy(&w->addr, addr, len);
        w->addr_len = len;
        w->ready = true;
    } else {
        snprintf(w->error, sizeof w->error, "cannot resolve %s: %s", r->cfg->host, error);
        av_report(r->q->d, AV_LOG_ERR, r->cfg->name, "resolve_failed", "%s", w->error);
    }
    registry_pump(r);
}

static void
on_address(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    address_lookup_t *lookup = arg;
    whois_t *w = lookup->w;
    free(lookup);
    if (!w || status == ARES_EDESTRUCTION) {
        if (res)
            ares_freeaddrinfo(res);
        return; /* a reload or the end came first */
    }
    w->lookup = NULL;
    /* IPv4 first where the host has both: a registry is reachable over it
     * from anywhere, IPv6 not from every network. */
    const struct ares_addrinfo_node *node = status == ARES_SUCCESS && res ? res->nodes : NULL;
    for (const struct ares_addrinfo_node *n = node; n; n = n->ai_next)
        if (n->ai_family == AF_INET) {
            node = n;
            break;
        }
    if (node && node->ai_addrlen <= sizeof w->addr)
        address_known(w, node->ai_addr, (socklen_t)node->ai_addrlen, NULL);
    else
        address_known(w, NULL, 0, status == ARES_SUCCESS ? "no usable address" : ares_strerror(status));
    if (res)
        ares_freeaddrinfo(res);
}

/* Queries may go on when the address is known, or the lookup failed lately
 * (they fail with its reason); otherwise a lookup starts and they wait. */
static bool
whois_ready(registry_t *r, void *self)
{
    whois_t *w = self;
    uint64_t now = av_mono_us();
    if (w->ready)
        return true;
    if (w->resolving)
        return false; /* address_known pumps again */
    if (w->tried_us && now - w->tried_us < RESOLVE_RETRY_US)
        return true;
    w->tried_us = now;
    w->resolving = true;
    /* An address written as one needs no lookup (c-ares would answer it on
     * its next timer tick only). */
    char port[16], who[AV_REGISTRY_MAX + 32];
    struct addrinfo numeric = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM }, *res;
    snprintf(port, sizeof port, "%u", r->cfg->port);
    if (getaddrinfo(r->cfg->host, port, &numeric, &res) == 0) {
        address_known(w, res->ai_addr, res->ai_addrlen, NULL);
        freeaddrinfo(res);
        return !w->resolving;
    }
    snprintf(who, sizeof who, "registry '%s'", r->cfg->name);
    if ((!w->resolver && !(w->resolver = resolver_get(r->q, NULL, who))) ||
        !(w->lookup = malloc(sizeof *w->lookup))) {
        address_known(w, NULL, 0, "cannot set up the resolver");
        return !w->resolving;
    }
    w->lookup->w = w;
    struct ares_addrinfo_hints hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    ares_getaddrinfo(resolver_channel(w->resolver), r->cfg->host, port, &hints, on_address, w->lookup);
    if (w->resolver)
        resolver_kick(w->resolver);
    return !w->resolving;
}

/* ---- one exchange ------------------------------------------------------ */

static int
format_request(const registry_t *r, const query_t *x, exchange_t *ex)
{
    const char *tmpl = r->cfg->query;
    size_t name_len = strlen(x->name);
    /* %l: the label under the registry's suffix; the dispatcher only sends
     * names one label under it, so that is the first label. */
    size_t label_len = strcspn(x->name, ".");
    /* The template was checked at load: one %s or %l, %% as the only escape. */
    ex->request = malloc(strlen(tmpl) + name_len + 1);
    if (!ex->request)
        return -1;
    size_t o = 0;
    for (const char *c = tmpl; *c; c++) {
        if (c[0] == '%' && (c[1] == 's' || c[1] == 'l')) {
            size_t n = c[1] == 's' ? name_len : label_len;
            memcpy(ex->request + o, x->name, n);
            o += n;
            c++;
        } else if (c[0] == '%' && c[1] == '%') {
            ex->request[o++] = '%';
            c++;
        } else {
            ex->request[o++] = *c;
        }
    }
    ex->request[o] = '\0';
    ex->request_len = o;
    return 0;
}

static void
fail_errno(registry_t *r, query_t *x, const char *reason, const char *what, int err)
{
    char why[200];
    snprintf(why, sizeof why, "%s %s:%u: %s", what, r->cfg->host, r->cfg->port, strerror(err));
    registry_fail(r, x, reason, why);
}

static int
bind_source(registry_t *r, int fd, int family)
{
    const char *src = av_daemon_config(r->q->d)->querier.source_address;
    struct sockaddr_storage ss = { 0 };
    socklen_t len;
    if (!src || !*src)
        return 0;
    if (family == AF_INET && inet_pton(AF_INET, src, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
        len = sizeof(struct sockaddr_in);
    } else if (family == AF_INET6 && inet_pton(AF_INET6, src, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ss.ss_family = AF_INET6;
        len = sizeof(struct sockaddr_in6);
    } else {
        errno = EAFNOSUPPORT; /* an IPv4 source for an IPv6 server, or the reverse */
        return -1;
    }
    return bind(fd, (struct sockaddr *)&ss, len);
}

static void
whois_start(registry_t *r, void *self, query_t *x)
{
    whois_t *w = self;
    exchange_t *ex = query_state(x);
    ex->fd = -1;
    ex->poll.fd = -1;
    if (!w->ready) {
        registry_fail(r, x, AV_REASON_DNS_FAILURE, w->error);
        return;
    }
    if (format_request(r, x, ex) < 0) {
        registry_fail(r, x, AV_REASON_QUERIER_ERROR, "out of memory");
        return;
    }
    ex->fd = socket(w->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ex->fd < 0) {
        fail_errno(r, x, AV_REASON_QUERIER_ERROR, "socket for", errno);
        return;
    }
    /* querier.source_address: this querier's own address, for a registry
     * that limits each source address (budget: per_address) */
    if (bind_source(r, ex->fd, w->addr.ss_family) < 0) {
        fail_errno(r, x, AV_REASON_QUERIER_ERROR, "bind querier.source_address for", errno);
        return;
    }
    if (connect(ex->fd, (struct sockaddr *)&w->addr, w->addr_len) < 0 && errno != EINPROGRESS) {
        fail_errno(r, x, AV_REASON_CONNECT_FAILED, "connect to", errno);
        return;
    }
    if (av_poller_add(r->q->poller, &ex->poll, ex->fd, EPOLLOUT, on_io, x) < 0)
        registry_fail(r, x, AV_REASON_QUERIER_ERROR, "cannot watch the connection");
}

static void
whois_abort(registry_t *r, void *self, query_t *x)
{
    (void)self;
    exchange_t *ex = query_state(x);
    if (ex->poll.fd >= 0)
        av_poller_del(r->q->poller, &ex->poll);
    if (ex->fd >= 0)
        close(ex->fd);
    ex->fd = -1;
    ex->poll.fd = -1;
    free(ex->request);
    ex->request = NULL;
}

static void
finish(registry_t *r, query_t *x)
{
    evidence_t e = { .kind = EVIDENCE_TEXT, .body = x->reply, .len = x->reply_len, .dns = x->dns };
    registry_evidence(r, x, &e);
}

static void
on_writable(registry_t *r, query_t *x, exchange_t *ex)
{
    if (ex->request_sent == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(ex->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fail_errno(r, x, AV_REASON_CONNECT_FAILED, "connect to", err);
            return;
        }
    }
    while (ex->request_sent < ex->request_len) {
        ssize_t n = send(ex->fd, ex->request + ex->request_sent, ex->request_len - ex->request_sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fail_errno(r, x, AV_REASON_CONNECTION_LOST, "send to", errno);
            return;
        }
        ex->request_sent += (size_t)n;
    }
    av_poller_mod(r->q->poller, &ex->poll, EPOLLIN);
}

static void
on_readable(registry_t *r, query_t *x, exchange_t *ex)
{
    for (;;) {
        size_t room;
        char *at = query_reply_room(x, &room);
        if (!at) {
            if (x->truncated)
                finish(r, x); /* enough to classify; the rest is not read */
            else
                registry_fail(r, x, AV_REASON_QUERIER_ERROR, "out of memory for the reply");
            return;
        }
        ssize_t n = recv(ex->fd, at, room, 0);
        if (n > 0) {
            x->reply_len += (size_t)n;
            continue;
        }
        if (n == 0) {
            finish(r, x); /* the server closed: the reply is whole */
            return;
        }
        if (errno == EAGAIN)
            return;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET && x->reply_len > 0) {
            finish(r, x); /* some servers reset after writing it all */
            return;
        }
        fail_errno(r, x, AV_REASON_CONNECTION_LOST, "receive from", errno);
        return;
    }
}

static void
on_io(void *arg, uint32_t revents)
{
    query_t *x = arg;
    registry_t *r = x->registry;
    exchange_t *ex = query_state(x);
    if (ex->request_sent < ex->request_len) {
        if (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_writable(r, x, ex);
        return;
    }
    if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(r, x, ex);
}

/* ---- the protocol ------------------------------------------------------ */

static void *
whois_open(registry_t *r, const av_registry_cfg_t *cfg)
{
    (void)cfg;
    whois_t *w = calloc(1, sizeof *w);
    if (w)
        w->registry = r;
    return w;
}

/* A reload: the host may have changed, so it is looked up again when next
 * needed. */
static int
whois_configure(registry_t *r, void *self, const av_registry_cfg_t *next)
{
    (void)r;
    (void)next;
    whois_t *w = self;
    if (w->lookup)
        w->lookup->w = NULL;
    w->lookup = NULL;
    w->resolving = false;
    w->ready = false;
    w->tried_us = 0;
    return 0;
}

static void
whois_close(registry_t *r, void **self_p)
{
    (void)r;
    whois_t *w = *self_p;
    if (!w)
        return;
    *self_p = NULL;
    if (w->lookup)
        w->lookup->w = NULL;
    resolver_put(&w->resolver);
    free(w);
}

/* One exchange on TCP, whatever the registry calls it. */
#define WHOIS_EXCHANGE                                                                                             \
    .query_state_size = sizeof(exchange_t), .open = whois_open, .configure = whois_configure,                      \
    .ready = whois_ready, .start = whois_start, .abort = whois_abort, .close = whois_close

const protocol_t whois_protocol = {
    .name = "whois",
    .source = AV_SOURCE_WHOIS,
    WHOIS_EXCHANGE,
};

/* Registry availability services (EURid's and DNS Belgium's DAS on port
 * 4343, Norid's on 79): the same exchange, a status in the reply, an `RC`
 * code for errors; what the codes mean is in the registry's patterns. */
const protocol_t das_protocol = {
    .name = "das",
    .source = AV_SOURCE_DAS,
    WHOIS_EXCHANGE,
};
