/* CURVE on tcp:// endpoints (libzmq's CurveZMQ through CZMQ's zcert and
 * zcertstore): every daemon's sockets get it from av_daemon_bind and
 * av_daemon_connect; the ZAP handler (av_socket.c) asks av_curve_allows. */
#ifndef AV_CURVE_H
#define AV_CURVE_H

#include "av_config.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AV_CURVE_KEY_TXT 41  /* a Z85 key and its NUL */

typedef struct av_curve av_curve_t;

/* The keys of cfg->curve (which must have a secret_key); NULL with err
 * set when a file cannot be read. */
av_curve_t *av_curve_new(const av_config_t *cfg, char *err, size_t errlen);
void av_curve_destroy(av_curve_t **self_p);
/* A socket that binds: our key pair, the CURVE server role, and the ZAP
 * domain that tells the handler which allow directory applies. */
void av_curve_server(av_curve_t *self, zsock_t *sock, av_peers_t kind);
/* A socket that connects: our key pair and the server's public key. */
void av_curve_client(av_curve_t *self, zsock_t *sock);
/* Is a peer with this 32-byte public key allowed on an endpoint of kind?
 * Our own key always is (the core's daemons share the host's key pair);
 * else the kind's allow directory must hold its public certificate (read
 * again when the directory changes: a new querier host needs no restart).
 * z85 gets the key as text, for the messages. */
bool av_curve_allows(av_curve_t *self, av_peers_t kind, const uint8_t *key, size_t len,
                     char z85[AV_CURVE_KEY_TXT]);
const char *av_curve_public_txt(const av_curve_t *self);

/* For tools (availctl): CURVE client setup of sock when endpoint is a
 * tcp:// endpoint of cfg's that CURVE covers. 0, or -1 with err. */
int av_curve_client_setup(zsock_t *sock, const av_config_t *cfg, const char *endpoint, char *err, size_t errlen);

/* Config loading (av_config.c): a key file or allow directory is usable;
 * every endpoint that reaches beyond this host has CURVE or says
 * insecure; curve's memory. */
int av_curve_path_check(const char *key, const char *path, char *why, size_t whylen);
int av_curve_config_check(const av_config_t *cfg, char *err, size_t errlen);
void av_curve_config_clear(av_config_t *cfg);

#endif
