/* The DNS pre-check (c-ares on the querier's loop): before a check spends
 * the registry's quota, ask for the name's NS records. A delegation (NS
 * records owned by the name, in the answer of a resolver or the referral
 * of the TLD's own servers) means the name is registered. No delegation
 * proves nothing (registered names may be undelegated, names in
 * redemption are), so the check then goes to the registry as usual. */
#include "querier.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DNS_SOCKETS_MAX 16

typedef struct {
    av_poll_handle_t poll;
    struct dns *dns;
    ares_socket_t fd;
    bool used;
} dns_socket_t;

struct dns {
    querier_t *q;
    bool library_ready;          /* ares_library_init succeeded: cleanup owed */
    ares_channel channel;
    sd_event_source *timer;
    dns_socket_t sockets[DNS_SOCKETS_MAX];
    uint64_t *delegated;
    uint64_t *not_delegated;
};

static void arm_timer(struct dns *dns);
static void channel_free(querier_t *q, struct dns *dns);

static void
on_socket_ready(void *arg, uint32_t events)
{
    dns_socket_t *s = arg;
    struct dns *dns = s->dns;
    ares_socket_t fd = s->fd;
    ares_process_fd(dns->channel, events & (EPOLLIN | EPOLLERR | EPOLLHUP) ? fd : ARES_SOCKET_BAD,
                    events & EPOLLOUT ? fd : ARES_SOCKET_BAD);
    arm_timer(dns);
}

static void
on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *dns = data;
    dns_socket_t *slot = NULL, *free_slot = NULL;
    for (int i = 0; i < DNS_SOCKETS_MAX; i++) {
        if (dns->sockets[i].used && dns->sockets[i].fd == fd)
            slot = &dns->sockets[i];
        else if (!dns->sockets[i].used && !free_slot)
            free_slot = &dns->sockets[i];
    }
    uint32_t events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    if (!events) {
        if (slot) {
            av_poller_del(dns->q->poller, &slot->poll);
            slot->used = false;
        }
        return;
    }
    if (slot) {
        av_poller_mod(dns->q->poller, &slot->poll, events);
    } else if (free_slot) {
        free_slot->dns = dns;
        free_slot->fd = fd;
        free_slot->used = av_poller_add(dns->q->poller, &free_slot->poll, fd, events, on_socket_ready, free_slot) == 0;
    }
}

static int
on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    struct dns *dns = userdata;
    ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* handles timeouts */
    arm_timer(dns);
    return 0;
}

static void
arm_timer(struct dns *dns)
{
    struct timeval tv, *next = ares_timeout(dns->channel, NULL, &tv);
    if (!next) {
        sd_event_source_set_enabled(dns->timer, SD_EVENT_OFF);
        return;
    }
    sd_event_source_set_time(dns->timer, av_mono_us() + (uint64_t)next->tv_sec * 1000000 + next->tv_usec + 1);
    sd_event_source_set_enabled(dns->timer, SD_EVENT_ONESHOT);
}

/* Does the reply hold NS records owned by name (answer or authority)? */
static bool
delegated(const unsigned char *buf, int len, const char *name)
{
    if (len < NS_HFIXEDSZ)
        return false;
    int qd = (buf[4] << 8) | buf[5], an = (buf[6] << 8) | buf[7], ns = (buf[8] << 8) | buf[9];
    if ((buf[3] & 0x0f) != 0) /* rcode: NXDOMAIN and errors say nothing */
        return false;
    const unsigned char *p = buf + NS_HFIXEDSZ, *end = buf + len;
    char *owner;
    long n;
    for (int i = 0; i < qd; i++) {
        if (ares_expand_name(p, buf, len, &owner, &n) != ARES_SUCCESS)
            return false;
        ares_free_string(owner);
        p += n + NS_QFIXEDSZ;
        if (p > end)
            return false;
    }
    for (int i = 0; i < an + ns; i++) {
        if (ares_expand_name(p, buf, len, &owner, &n) != ARES_SUCCESS)
            return false;
        p += n;
        if (end - p < NS_RRFIXEDSZ) {
            ares_free_string(owner);
            return false;
        }
        int type = (p[0] << 8) | p[1], rdlen = (p[8] << 8) | p[9];
        bool match = type == ns_t_ns && strcasecmp(owner, name) == 0;
        ares_free_string(owner);
        if (match)
            return true;
        p += NS_RRFIXEDSZ + rdlen;
        if (p > end)
            return false;
    }
    return false;
}

static void
on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    query_t *x = arg;
    querier_t *q = x->q;
    struct dns *dns = q->dns;
    /* A referral has no answer records: c-ares calls that ENODATA, and
     * the delegation is in the authority section of abuf. */
    bool yes = (status == ARES_SUCCESS || status == ARES_ENODATA) && abuf && delegated(abuf, alen, x->name);
    (*(yes ? dns->delegated : dns->not_delegated))++;
    querier_dns_done(q, x, yes);
}

int
dns_precheck(querier_t *q, query_t *x)
{
    if (!q->dns)
        return -1;
    x->started_us = av_mono_us();
    ares_query(q->dns->channel, x->name, ns_c_in, ns_t_ns, on_answer, x);
    arm_timer(q->dns);
    return 0;
}

/* A c-ares channel on the querier's loop: servers NULL for the system's
 * resolver. Lookups still pending when it is freed end with
 * ARES_EDESTRUCTION. */
static struct dns *
channel_new(querier_t *q, const av_strlist_t *servers)
{
    const av_registry_cfg_t *r = q->registry;
    struct ares_options opts = { 0 };
    struct dns *dns = calloc(1, sizeof *dns);
    if (!dns)
        return NULL;
    dns->q = q;
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        goto fail;
    dns->library_ready = true;
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = dns;
    opts.timeout = 1000; /* ms per try */
    opts.tries = 2;
    if (ares_init_options(&dns->channel, &opts, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) !=
        ARES_SUCCESS) {
        dns->channel = NULL;
        av_log_err("registry '%s': cannot set up the DNS resolver", r->name);
        goto fail;
    }
    if (servers && servers->count) {
        char csv[1024] = "";
        for (uint32_t i = 0; i < servers->count; i++) {
            if (i)
                strncat(csv, ",", sizeof csv - strlen(csv) - 1);
            strncat(csv, servers->items[i], sizeof csv - strlen(csv) - 1);
        }
        if (ares_set_servers_ports_csv(dns->channel, csv) != ARES_SUCCESS) {
            av_log_err("registry '%s': bad dns_servers '%s'", r->name, csv);
            goto fail;
        }
    }
    if (sd_event_add_time(av_daemon_loop(q->d), &dns->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, dns) < 0)
        goto fail;
    sd_event_source_set_enabled(dns->timer, SD_EVENT_OFF);
    return dns;
fail:
    channel_free(q, dns);
    return NULL;
}

static void
channel_free(querier_t *q, struct dns *dns)
{
    if (!dns)
        return;
    if (dns->channel)
        ares_destroy(dns->channel);
    for (int i = 0; i < DNS_SOCKETS_MAX; i++)
        if (dns->sockets[i].used)
            av_poller_del(q->poller, &dns->sockets[i].poll);
    sd_event_source_disable_unref(dns->timer);
    if (dns->library_ready)
        ares_library_cleanup();
    free(dns);
}

int
dns_open(querier_t *q)
{
    if (!(q->dns = channel_new(q, &q->registry->dns_servers)))
        return -1;
    q->dns->delegated = av_daemon_counter(q->d, "dns_delegated");
    q->dns->not_delegated = av_daemon_counter(q->d, "dns_not_delegated");
    return 0;
}

void
dns_close(querier_t *q)
{
    struct dns *dns = q->dns;
    q->dns = NULL;
    channel_free(q, dns); /* pending lookups end with ARES_EDESTRUCTION: to the registry */
}

/* ---- the registry's own address ----------------------------------------- */

static void
on_address(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    querier_t *q = arg;
    if (status == ARES_EDESTRUCTION)
        return; /* the resolver is going: a reload or the end */
    /* IPv4 first where the host has both: a registry is reachable over it
     * from anywhere, IPv6 not from every network. */
    const struct ares_addrinfo_node *node = status == ARES_SUCCESS && res ? res->nodes : NULL;
    for (const struct ares_addrinfo_node *n = node; n; n = n->ai_next)
        if (n->ai_family == AF_INET) {
            node = n;
            break;
        }
    if (node && node->ai_addrlen <= sizeof q->addr)
        querier_address(q, node->ai_addr, (socklen_t)node->ai_addrlen, NULL);
    else
        querier_address(q, NULL, 0, status == ARES_SUCCESS ? "no usable address" : ares_strerror(status));
    if (res)
        ares_freeaddrinfo(res);
}

int
dns_resolve(querier_t *q, const char *host, uint32_t port)
{
    char service[16];
    struct ares_addrinfo_hints hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    if (!q->resolver && !(q->resolver = channel_new(q, NULL)))
        return -1;
    snprintf(service, sizeof service, "%u", port);
    ares_getaddrinfo(q->resolver->channel, host, service, &hints, on_address, q);
    if (q->resolver)
        arm_timer(q->resolver);
    return 0;
}

void
dns_resolver_close(querier_t *q)
{
    struct dns *resolver = q->resolver;
    q->resolver = NULL;
    channel_free(q, resolver);
}
