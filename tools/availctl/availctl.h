/* availctl: the operator's and frontend developer's tool. Each command is a
 * file; this header holds what they share. Exit status: 0 success, 1 the
 * thing asked about is not as wanted (a bad config, a daemon down, an
 * unknown answer), 2 usage or connection errors. */
#ifndef AVAILCTL_H
#define AVAILCTL_H

#include "av_config.h"
#include "av_proto.h"

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>

enum { EXIT_OK = 0, EXIT_NEGATIVE = 1, EXIT_USAGE = 2 };

typedef struct {
    const char *config_path;
    av_config_t *cfg;     /* loaded on demand by ctl_config */
    bool json;
    int timeout_ms;
} ctl_t;

/* Loads the configuration once; prints the error and returns NULL. */
const av_config_t *ctl_config(ctl_t *ctl);

/* A control request to a daemon instance ("errors", "querier-verisign").
 * On success returns 0 and *reply (decoded, a ctl_reply) with *frame, which
 * holds its bytes; release both. Returns -1 with err set when the daemon is
 * not running, does not answer within the timeout, or replies garbage. */
int ctl_request(ctl_t *ctl, const char *ident, const msgpack_sbuffer *request, av_msg_t *reply, zframe_t **frame,
                char *err, size_t errlen);

/* The control idents of every querier of the config: querier-NAME, and
 * querier-NAME.2 ... for registries with several. Calls fn for each. */
void ctl_each_querier(const av_config_t *cfg, void (*fn)(void *arg, const char *registry, const char *instance),
                      void *arg);

/* Every daemon instance of the config, as control idents: intake,
 * dispatcher, cache, errors, then querier-NAME[.N]. */
void ctl_each_daemon(const av_config_t *cfg, void (*fn)(void *arg, const char *ident), void *arg);

/* One request without arguments beyond cmd; the reply as ctl_request. */
int ctl_simple(ctl_t *ctl, const char *ident, const char *cmd, av_msg_t *reply, zframe_t **frame, char *err,
               size_t errlen);

/* msgpack object -> JSON (jansson), for --json output. */
json_t *ctl_to_json(const msgpack_object *o);
void ctl_print_json(json_t *j); /* one line, then frees j */

/* Field readers for printing replies. */
void ctl_str(const msgpack_object *map, const char *key, char *out, size_t size);
uint64_t ctl_uint(const msgpack_object *map, const char *key);

int cmd_config(ctl_t *ctl, int argc, char **argv);
int cmd_status(ctl_t *ctl, int argc, char **argv);
int cmd_errors(ctl_t *ctl, int argc, char **argv);
int cmd_run(ctl_t *ctl, int argc, char **argv);
int cmd_check(ctl_t *ctl, int argc, char **argv);
int cmd_cache(ctl_t *ctl, int argc, char **argv);
int cmd_reload(ctl_t *ctl, int argc, char **argv);
int cmd_registries(ctl_t *ctl, int argc, char **argv);
int cmd_metrics(ctl_t *ctl, int argc, char **argv);
int cmd_classify(ctl_t *ctl, int argc, char **argv);

#endif
