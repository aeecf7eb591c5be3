/* ZeroMQ sockets with availd's defaults, and ROUTER envelope handling. */
#include "av_daemon_internal.h"
#include "av_curve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

/* Queue bound per socket and peer, in messages. Past it a send would block,
 * so every send on the hot path is non-blocking and a full queue is an
 * `overloaded` answer or a dropped event, never a stall. */
#define AV_HWM 100000
/* A PUB's queue per subscriber, in messages. A subscriber that does not
 * read keeps this many (their bytes shared with the other subscribers) and
 * loses what comes past it: the push way is best effort, and 20 subscribers
 * that never read must not hold 20 x AV_HWM answers. */
#define AV_PUB_HWM 1000

/* Every socket refuses a frame past AV_MSG_MAX_BYTES, so no message
 * between the daemons may be larger: what each can hold at most. (The
 * dispatcher's answers to an intake are bounded by bytes as it batches.) */
_Static_assert(AV_BATCH_MAX * (AV_NAME_MAX + 5) + AV_ID_MAX + 512 < AV_MSG_MAX_BYTES,
               "a batch check forwarded by intake fits a message");
_Static_assert(AV_REGISTRIES_MAX * (AV_REGISTRY_MAX + 16) + 512 < AV_MSG_MAX_BYTES,
               "a querier's ready or heartbeat with every registry fits a message");
_Static_assert(AV_HANDBACK_MAX * 9 + 512 < AV_MSG_MAX_BYTES, "a querier's bye fits a message");

static zsock_t *
new_socket(av_daemon_t *d, int type)
{
    zsock_t *s = zsock_new(type);
    if (!s)
        return NULL;
    bool publisher = type == ZMQ_PUB || type == ZMQ_XPUB;
    zsock_set_sndhwm(s, publisher ? AV_PUB_HWM : AV_HWM);
    zsock_set_rcvhwm(s, AV_HWM);
    /* No peer makes us buffer more than one message may be: ZeroMQ drops
     * the connection of a peer whose frame is larger, as its header says,
     * before reading it (ours are checked to stay below). */
    zsock_set_maxmsgsize(s, AV_MSG_MAX_BYTES);
    /* Long enough for a graceful stop to flush what was sent, bounded so a
     * missing peer cannot hold the process. */
    zsock_set_linger(s, (int)(d ? av_daemon_process(d)->drain_ms : 1000));
    if (type == ZMQ_ROUTER)
        zsock_set_router_mandatory(s, 1);
    return s;
}

/* Does the bound address of fd match host (numeric, or "*")? */
static bool
same_host(int fd, const char *host)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char bound[INET6_ADDRSTRLEN] = "";
    if (strcmp(host, "*") == 0)
        return true;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return false;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, bound, sizeof bound);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, bound, sizeof bound);
    char want[INET6_ADDRSTRLEN + 2];
    snprintf(want, sizeof want, "%s", host);
    if (want[0] == '[') {
        memmove(want, want + 1, strlen(want));
        want[strcspn(want, "]")] = '\0';
    }
    return strcmp(bound, want) == 0;
}

int
av_inherited_socket(const char *endpoint)
{
    int n = sd_listen_fds(0);
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
        if (strncmp(endpoint, "ipc://", 6) == 0) {
            if (sd_is_socket_unix(fd, SOCK_STREAM, 1, endpoint + 6, 0) > 0)
                return fd;
        } else if (strncmp(endpoint, "tcp://", 6) == 0) {
            const char *colon = strrchr(endpoint, ':');
            char host[256];
            size_t hlen = (size_t)(colon - (endpoint + 6));
            if (!colon || hlen >= sizeof host)
                return -1;
            memcpy(host, endpoint + 6, hlen);
            host[hlen] = '\0';
            if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, (uint16_t)atoi(colon + 1)) > 0 && same_host(fd, host))
                return fd;
        }
    }
    return -1;
}

/* ---- ZAP: cidr_allow, cidr_deny and CURVE keys on tcp:// endpoints -------
 * ZeroMQ asks a ZAP handler (RFC 27) about every peer of a socket that has
 * a ZAP domain; ours answers from the daemon's cidr lists and, for a CURVE
 * peer, from the allow directory of the endpoint's kind (the domain). */

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

static bool
zap_address_allowed(const av_process_cfg_t *p, const char *address)
{
    struct sockaddr_storage ss = { 0 };
    if (address && inet_pton(AF_INET, address, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (address && inet_pton(AF_INET6, address, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        return false;
    return av_cidr_allowed(&p->cidr_allow, &p->cidr_deny, (struct sockaddr *)&ss);
}

static bool
on_zap(av_daemon_t *d, zsock_t *sock, void *arg)
{
    (void)arg;
    zmsg_t *req = zmsg_recv(sock);
    if (!req)
        return false;
    char *version = zmsg_popstr(req);
    char *request_id = zmsg_popstr(req);
    char *domain = zmsg_popstr(req);
    char *address = zmsg_popstr(req);
    char *identity = zmsg_popstr(req);
    char *mechanism = zmsg_popstr(req);
    zframe_t *credentials = zmsg_pop(req);
    char key[AV_CURVE_KEY_TXT] = "";
    const char *why = NULL;
    if (!zap_address_allowed(av_daemon_process(d), address)) {
        why = "address not allowed (cidr_allow/cidr_deny)";
    } else if (mechanism && strcmp(mechanism, "CURVE") == 0) {
        av_peers_t kind = AV_PEERS_KINDS;
        for (int i = 0; i < AV_PEERS_KINDS; i++)
            if (domain && strcmp(domain, av_peers_name((av_peers_t)i)) == 0)
                kind = (av_peers_t)i;
        if (!d->curve || !credentials ||
            !av_curve_allows(d->curve, kind, zframe_data(credentials), zframe_size(credentials), key))
            why = "key not allowed";
    } else if (!mechanism || strcmp(mechanism, "NULL") != 0) {
        why = "mechanism not allowed";
    }
    if (why) {
        (*d->zap_denied)++;
        av_report(d, AV_LOG_WARNING, NULL, "zap_denied", "refused a ZeroMQ peer on %s endpoints: %s (address %s, key %s)",
                  domain && *domain ? domain : "?", why, address ? address : "?", *key ? key : "none");
    }
    zmsg_t *rep = zmsg_new();
    zmsg_addstr(rep, "1.0");
    zmsg_addstr(rep, request_id ? request_id : "");
    zmsg_addstr(rep, why ? "400" : "200");
    zmsg_addstr(rep, why ? why : "OK");
    zmsg_addstr(rep, "");
    zmsg_addmem(rep, "", 0);
    zmsg_send(&rep, sock);
    free(version);
    free(request_id);
    free(domain);
    free(address);
    free(identity);
    free(mechanism);
    zframe_destroy(&credentials);
    zmsg_destroy(&req);
    return true;
}

static int
zap_start(av_daemon_t *d)
{
    if (d->zap)
        return 0;
    d->zap_denied = av_daemon_counter(d, "zap_denied");
    d->zap = zsock_new_rep("@" ZAP_ENDPOINT);
    if (!d->zap || av_daemon_watch(d, d->zap, on_zap, NULL) < 0) {
        av_log_err("cannot start the ZAP handler for cidr_allow/cidr_deny and CURVE");
        return -1;
    }
    return 0;
}

void
av_zap_close(av_daemon_t *d)
{
    if (d->zap)
        av_daemon_unwatch(d, d->zap);
    zsock_destroy(&d->zap);
    av_curve_destroy(&d->curve);
}

/* The daemon's CURVE keys when endpoint is a tcp:// one that CURVE covers
 * (curve.secret_key set and not insecure), else NULL; *failed on error. */
static av_curve_t *
curve_for(av_daemon_t *d, const char *endpoint, bool *failed)
{
    *failed = false;
    if (!d || !d->cfg->curve.secret_key || strncmp(endpoint, "tcp://", 6) != 0 ||
        av_endpoint_insecure(d->cfg, endpoint))
        return NULL;
    if (!d->curve) {
        char err[AV_CONFIG_ERR_MAX];
        if (!(d->curve = av_curve_new(d->cfg, err, sizeof err))) {
            av_log_err("CURVE: %s", err);
            *failed = true;
        }
    }
    return d->curve;
}

zsock_t *
av_daemon_bind(av_daemon_t *d, int type, const char *endpoint)
{
    zsock_t *s = new_socket(d, type);
    if (!s) {
        av_log_err("cannot create a socket for %s: %s", endpoint, zmq_strerror(zmq_errno()));
        return NULL;
    }
    /* tcp:// reaches beyond this host: peers pass cidr_allow/cidr_deny and,
     * with curve:, hold a key of the endpoint's allow directory. */
    if (d && strncmp(endpoint, "tcp://", 6) == 0) {
        bool failed;
        av_curve_t *curve = curve_for(d, endpoint, &failed);
        if (failed || zap_start(d) < 0) {
            zsock_destroy(&s);
            return NULL;
        }
        if (curve)
            av_curve_server(curve, s, av_endpoint_peers(d->cfg, endpoint));
        else
            zsock_set_zap_domain(s, "availd");
    }
    /* A listening socket inherited from systemd (a socket unit) stays
     * bound while we restart: frontends queue instead of being refused. */
    int inherited = av_inherited_socket(endpoint);
    if (inherited >= 0) {
        zsock_set_use_fd(s, inherited);
        av_log_info("%s: using the listening socket passed by the service manager (fd %d)", endpoint, inherited);
    }
    if (zsock_bind(s, "%s", endpoint) < 0) {
        av_log_err("cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&s);
        return NULL;
    }
    if (d && inherited < 0 && strncmp(endpoint, "ipc://", 6) == 0 && endpoint[6] != '@') {
        /* Peers running as the daemons' user must be able to connect. */
        chmod(endpoint + 6, 0660);
        av_daemon_own(d, endpoint + 6);
        char *file = d->n_bound_files < AV_BOUND_FILES_MAX ? strdup(endpoint + 6) : NULL;
        if (file)
            d->bound_files[d->n_bound_files++] = file;
    }
    return s;
}

zsock_t *
av_daemon_connect(av_daemon_t *d, int type, const char *endpoint)
{
    return av_daemon_connect_as(d, type, endpoint, NULL);
}

zsock_t *
av_daemon_connect_as(av_daemon_t *d, int type, const char *endpoint, const char *routing_id)
{
    zsock_t *s = new_socket(d, type);
    if (!s) {
        av_log_err("cannot create a socket for %s: %s", endpoint, zmq_strerror(zmq_errno()));
        return NULL;
    }
    if (routing_id && zmq_setsockopt(zsock_resolve(s), ZMQ_ROUTING_ID, routing_id, strlen(routing_id)) < 0) {
        av_log_err("cannot set the routing id '%s' for %s: %s", routing_id, endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&s);
        return NULL;
    }
    bool failed;
    av_curve_t *curve = curve_for(d, endpoint, &failed);
    if (failed) {
        zsock_destroy(&s);
        return NULL;
    }
    if (curve)
        av_curve_client(curve, s);
    if (zsock_connect(s, "%s", endpoint) < 0) {
        av_log_err("cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&s);
        return NULL;
    }
    return s;
}

zframe_t *
av_router_recv(zsock_t *router, av_envelope_t *env)
{
    env->identity = NULL;
    env->delimiter = false;
    zmsg_t *msg = zmsg_recv(router);
    if (!msg)
        return NULL;
    env->identity = zmsg_pop(msg);
    zframe_t *body = zmsg_pop(msg);
    if (body && zframe_size(body) == 0 && zmsg_size(msg) > 0) {
        zframe_destroy(&body);
        env->delimiter = true;
        body = zmsg_pop(msg);
    }
    /* A message is one frame, as on a PULL: more is not a message of ours
     * (the frames past the body were never looked at). */
    if (zmsg_size(msg) > 0)
        zframe_destroy(&body);
    zmsg_destroy(&msg);
    return body;
}

int
av_router_send(zsock_t *router, const av_envelope_t *env, const void *body, size_t size)
{
    void *s = zsock_resolve(router);
    if (!env->identity)
        return -1;
    if (zmq_send(s, zframe_data(env->identity), zframe_size(env->identity), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1; /* ROUTER_MANDATORY: peer gone or its queue full */
    if (env->delimiter && zmq_send(s, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    return zmq_send(s, body, size, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

void
av_envelope_clear(av_envelope_t *env)
{
    zframe_destroy(&env->identity);
    env->delimiter = false;
}

int
av_zsock_send_nowait(zsock_t *sock, const void *body, size_t size)
{
    return zmq_send(zsock_resolve(sock), body, size, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

int
av_tcp_listen(const char *endpoint, int backlog, char *why, size_t whylen)
{
    char host[256];
    const char *hostport = strncmp(endpoint, "tcp://", 6) == 0 ? endpoint + 6 : NULL;
    const char *colon = hostport ? strrchr(hostport, ':') : NULL;
    if (!colon) {
        snprintf(why, whylen, "not tcp://HOST:PORT");
        return -1;
    }
    size_t hlen = (size_t)(colon - hostport);
    if (hlen >= sizeof host) {
        snprintf(why, whylen, "host too long");
        return -1;
    }
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 1 && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *res;
    int rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "%s", gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        snprintf(why, whylen, "%s", strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}
