/* CURVE across hosts: the host's key pair, the server's public key, and the
 * allow directories per kind of endpoint, read once per daemon; plus the
 * config checks that refuse a tcp:// endpoint beyond loopback without it. */
#include "av_curve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NO_SECRET "0000000000000000000000000000000000000000"

struct av_curve {
    zcert_t *cert;                          /* our key pair */
    char server_txt[AV_CURVE_KEY_TXT];      /* public key of the host we connect to */
    zcertstore_t *allow[AV_PEERS_KINDS];    /* NULL: only our own key */
};

static const char *const peers_names[AV_PEERS_KINDS] = { "frontends", "queriers", "monitoring", "control", "core" };

static const char *const kind_names[AV_RUNS_KINDS] = { "intake", "dispatcher", "cache", "errors", "querier" };

const char *
av_daemon_kind_name(av_daemon_kind_t kind)
{
    return kind < AV_RUNS_KINDS ? kind_names[kind] : "?";
}

bool
av_config_runs(const av_config_t *cfg, av_daemon_kind_t kind)
{
    return cfg->runs == 0 || (cfg->runs & (1u << kind));
}

const char *
av_peers_name(av_peers_t kind)
{
    return kind < AV_PEERS_KINDS ? peers_names[kind] : "?";
}

av_peers_t
av_endpoint_peers(const av_config_t *cfg, const char *ep)
{
    const av_endpoints_cfg_t *e = &cfg->endpoints;
    struct {
        const char *ep;
        av_peers_t kind;
    } map[] = {
        { e->intake_pull, AV_PEERS_FRONTENDS },   { e->intake_router, AV_PEERS_FRONTENDS },
        { e->intake_results, AV_PEERS_FRONTENDS }, { e->dispatcher_workers, AV_PEERS_QUERIERS },
        { e->errors_events, AV_PEERS_QUERIERS },  { e->errors_publish, AV_PEERS_MONITORING },
        { e->dispatcher, AV_PEERS_CORE },         { e->cache_puts, AV_PEERS_CORE },
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].ep && strcmp(map[i].ep, ep) == 0)
            return map[i].kind;
    return AV_PEERS_CONTROL;
}

bool
av_endpoint_insecure(const av_config_t *cfg, const char *endpoint)
{
    for (uint32_t i = 0; i < cfg->n_endpoint_notes; i++)
        if (cfg->endpoint_notes[i].insecure && strcmp(cfg->endpoint_notes[i].endpoint, endpoint) == 0)
            return true;
    return false;
}

bool
av_endpoint_beyond_host(const char *ep)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    char host[256];
    const char *h = ep + 6, *colon = strrchr(h, ':');
    size_t len = colon ? (size_t)(colon - h) : strlen(h);
    if (len >= sizeof host)
        return true;
    memcpy(host, h, len);
    host[len] = '\0';
    if (host[0] == '[' && len >= 2 && host[len - 1] == ']') {
        memmove(host, host + 1, len - 2);
        host[len - 2] = '\0';
    }
    /* tcp://eth0:PORT or tcp://NAME: ZeroMQ takes interface and host names;
     * only what surely is loopback counts as staying here. */
    if (strcmp(host, "localhost") == 0 || strcmp(host, "lo") == 0)
        return false;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) != 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return !IN6_IS_ADDR_LOOPBACK(&a6);
    return true;
}

int
av_curve_path_check(const char *key, const char *path, char *why, size_t whylen)
{
    if (strcmp(key, "allow directory") == 0) {
        struct stat st;
        if (stat(path, &st) < 0)
            return snprintf(why, whylen, "curve.allow: %s: %s", path, strerror(errno)), -1;
        if (!S_ISDIR(st.st_mode))
            return snprintf(why, whylen, "curve.allow: %s is not a directory of public keys", path), -1;
        return 0;
    }
    /* zcert_load reads FILE_secret when there is one, else FILE. */
    zcert_t *cert = zcert_load(path);
    if (!cert)
        return snprintf(why, whylen, "curve.%s: cannot read a certificate from %s (or %s_secret): make one "
                        "with availctl keys new NAME", key, path, path), -1;
    bool secret = strcmp(zcert_secret_txt(cert), NO_SECRET) != 0;
    zcert_destroy(&cert);
    if (strcmp(key, "secret_key") == 0 && !secret)
        return snprintf(why, whylen, "curve.secret_key: %s holds only a public key (name the file that "
                        "availctl keys new wrote, NAME or NAME_secret)", path), -1;
    return 0;
}

int
av_curve_config_check(const av_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->curve.secret_key)
        return 0;
    for (uint32_t i = 0; i < cfg->n_endpoint_notes; i++) {
        const av_endpoint_note_t *n = &cfg->endpoint_notes[i];
        /* intake's whois gateway is plain TCP by its protocol: cidr rules only */
        if (n->insecure || !av_endpoint_beyond_host(n->endpoint) ||
            (cfg->endpoints.intake_gateway && strcmp(n->endpoint, cfg->endpoints.intake_gateway) == 0))
            continue;
        snprintf(err, errlen, "%s: '%s' is reachable from other hosts without CURVE: give curve.secret_key "
                 "and curve.allow, or write {endpoint: %s, insecure: true}", n->at, n->endpoint, n->endpoint);
        return -1;
    }
    return 0;
}

void
av_curve_config_clear(av_config_t *cfg)
{
    free(cfg->curve.secret_key);
    free(cfg->curve.server_key);
    for (int i = 0; i < AV_PEERS_KINDS; i++)
        free(cfg->curve.allow[i]);
    free(cfg->curve.at);
    memset(&cfg->curve, 0, sizeof cfg->curve);
    for (uint32_t i = 0; i < cfg->n_endpoint_notes; i++) {
        free(cfg->endpoint_notes[i].endpoint);
        free(cfg->endpoint_notes[i].at);
    }
    free(cfg->endpoint_notes);
    cfg->endpoint_notes = NULL;
    cfg->n_endpoint_notes = 0;
}

av_curve_t *
av_curve_new(const av_config_t *cfg, char *err, size_t errlen)
{
    const av_curve_cfg_t *cv = &cfg->curve;
    av_curve_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!cv->secret_key || !(self->cert = zcert_load(cv->secret_key)) ||
        strcmp(zcert_secret_txt(self->cert), NO_SECRET) == 0) {
        snprintf(err, errlen, "cannot read the key pair %s", cv->secret_key ? cv->secret_key : "(none)");
        av_curve_destroy(&self);
        return NULL;
    }
    snprintf(self->server_txt, sizeof self->server_txt, "%s", zcert_public_txt(self->cert));
    if (cv->server_key) {
        zcert_t *server = zcert_load(cv->server_key);
        if (!server) {
            snprintf(err, errlen, "cannot read the server's public key %s", cv->server_key);
            av_curve_destroy(&self);
            return NULL;
        }
        snprintf(self->server_txt, sizeof self->server_txt, "%s", zcert_public_txt(server));
        zcert_destroy(&server);
    }
    for (int i = 0; i < AV_PEERS_KINDS; i++) {
        if (cv->allow[i] && !(self->allow[i] = zcertstore_new(cv->allow[i]))) {
            snprintf(err, errlen, "cannot read the public keys in %s", cv->allow[i]);
            av_curve_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void
av_curve_destroy(av_curve_t **self_p)
{
    av_curve_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    zcert_destroy(&self->cert);
    for (int i = 0; i < AV_PEERS_KINDS; i++)
        zcertstore_destroy(&self->allow[i]);
    free(self);
    *self_p = NULL;
}

const char *
av_curve_public_txt(const av_curve_t *self)
{
    return zcert_public_txt(self->cert);
}

void
av_curve_server(av_curve_t *self, zsock_t *sock, av_peers_t kind)
{
    zcert_apply(self->cert, sock);
    zsock_set_curve_server(sock, 1);
    zsock_set_zap_domain(sock, av_peers_name(kind));
}

void
av_curve_client(av_curve_t *self, zsock_t *sock)
{
    zcert_apply(self->cert, sock);
    zsock_set_curve_serverkey(sock, self->server_txt);
}

bool
av_curve_allows(av_curve_t *self, av_peers_t kind, const uint8_t *key, size_t len, char z85[AV_CURVE_KEY_TXT])
{
    z85[0] = '\0';
    if (len != 32 || !zmq_z85_encode(z85, key, 32))
        return false;
    if (strcmp(z85, zcert_public_txt(self->cert)) == 0)
        return true;
    /* zcertstore_lookup reloads the directory first when it changed */
    return kind < AV_PEERS_KINDS && self->allow[kind] && zcertstore_lookup(self->allow[kind], z85) != NULL;
}

int
av_curve_client_setup(zsock_t *sock, const av_config_t *cfg, const char *endpoint, char *err, size_t errlen)
{
    if (!cfg->curve.secret_key || strncmp(endpoint, "tcp://", 6) != 0 || av_endpoint_insecure(cfg, endpoint))
        return 0;
    av_curve_t *curve = av_curve_new(cfg, err, errlen);
    if (!curve)
        return -1;
    av_curve_client(curve, sock);
    av_curve_destroy(&curve);
    return 0;
}
