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
#include <stdio.h>

enum { EXIT_OK = 0, EXIT_NEGATIVE = 1, EXIT_USAGE = 2 };

typedef struct {
    const char *config_path;
    av_config_t *cfg;     /* loaded on demand by ctl_config */
    bool json;
    int timeout_ms;
    bool timeout_set; /* --timeout given: commands keep it as it is */
    bool endpoints_only; /* the command needs only the endpoints: a broken
                          * config is read partially, with a warning */
} ctl_t;

/* Loads the configuration once; prints the error and returns NULL. */
const av_config_t *ctl_config(ctl_t *ctl);

/* A socket of type connected to one of the config's endpoints, with
 * CURVE where the config secures that tcp:// endpoint (av_curve.h) and
 * linger 0; NULL after printing "availctl: why" on stderr. */
zsock_t *ctl_connect(ctl_t *ctl, int type, const char *endpoint);

/* A daemon's reply to a control request. body points into bytes the reply
 * holds until ctl_reply_release. A failed request holds nothing but err
 * (releasing it anyway is harmless, as is releasing twice). */
typedef struct {
    const msgpack_object *body;        /* the reply's body map; NULL on failure */
    char err[AV_CONFIG_ERR_MAX + 128]; /* why the request failed */
    av_msg_t msg;
    zframe_t *frame;
} ctl_reply_t;

/* A control request to a daemon instance ("errors", "querier-verisign"):
 * the encoded request, or for ctl_call_simple one without arguments beyond
 * cmd. Returns 0 with reply->body, or -1 with reply->err when the daemon is
 * not running, does not answer within the timeout, refuses the request or
 * replies garbage. */
int ctl_call(ctl_t *ctl, const char *ident, const msgpack_sbuffer *request, ctl_reply_t *reply);
int ctl_call_simple(ctl_t *ctl, const char *ident, const char *cmd, ctl_reply_t *reply);
/* ctl_call in two halves, to ask several daemons at once: send returns the
 * socket the reply will come on (NULL with reply->err when the daemon is
 * plainly not there: no socket file, a stale one, permission denied);
 * recv, once that socket is readable, decodes the reply and destroys the
 * socket. */
zsock_t *ctl_call_send(ctl_t *ctl, const char *ident, const msgpack_sbuffer *request, ctl_reply_t *reply);
int ctl_call_recv(zsock_t **sp, const char *ident, ctl_reply_t *reply);
void ctl_reply_release(ctl_reply_t *reply);

/* Sends request to ident and hands the reply's body to show, whose return
 * (an exit status) it returns; for the commands that print one daemon's
 * reply. When the daemon cannot answer, prints "availctl: availd-IDENT:
 * why" on stderr and returns EXIT_USAGE. */
typedef int ctl_show_fn(ctl_t *ctl, const msgpack_object *body, void *arg);
int ctl_show(ctl_t *ctl, const char *ident, const msgpack_sbuffer *request, ctl_show_fn *show, void *arg);

/* The querier instances of the config: GROUP, and GROUP.2 ... for groups
 * with several (control idents querier-INSTANCE). Calls fn for each. */
void ctl_each_querier(const av_config_t *cfg, void (*fn)(void *arg, const char *group, const char *instance),
                      void *arg);
/* How many querier processes the config runs. */
uint32_t ctl_querier_count(const av_config_t *cfg);

/* Every daemon instance of the config, as control idents: intake,
 * dispatcher, cache, errors, then querier-NAME[.N]. */
void ctl_each_daemon(const av_config_t *cfg, void (*fn)(void *arg, const char *ident), void *arg);

/* The settings a daemon's reply lists under needs_restart, as
 * "needs restart: KEY, KEY" into out ("" when none). */
void ctl_needs_restart(const msgpack_object *body, char *out, size_t size);

/* msgpack object -> JSON (jansson), for --json output. */
json_t *ctl_to_json(const msgpack_object *o);
void ctl_print_json(json_t *j); /* one line, then frees j */

/* Field readers for printing replies. */
void ctl_str(const msgpack_object *map, const char *key, char *out, size_t size);
uint64_t ctl_uint(const msgpack_object *map, const char *key);

/* A command's handler (cmd_NAME.c): argv[0] is the command's name, as a
 * program's, so getopt works on argv as it is; it returns the exit status. */
typedef int ctl_command_fn(ctl_t *ctl, int argc, char **argv);

typedef struct {
    const char *name;    /* "check" */
    const char *args;    /* its synopsis after the name */
    ctl_command_fn *run;
    const char *summary; /* one line, for the usage */
    const char *help;    /* NULL, or what else help COMMAND and the man page say */
} ctl_command_t;

/* Every command, up to the one whose name is NULL (commands.c). */
extern const ctl_command_t ctl_commands[];

const ctl_command_t *ctl_command_find(const char *name);
/* availctl's usage: its options and every command with its summary. */
void ctl_usage(FILE *out);
/* "usage: availctl NAME ARGS" on stderr; returns EXIT_USAGE. */
int ctl_command_usage(const char *name);
/* The man page's COMMANDS section, in roff (availctl --man-commands). */
void ctl_man_commands(FILE *out);

/* The running constellation's config (current.c): `availctl run` sets a
 * link to it for this user and clears it when it stops; availctl without
 * -c and $AVAILD_CONFIG, and no default config file, reads it. */
int ctl_current_path(char *out, size_t size);
const char *ctl_current_config(char *out, size_t size);
void ctl_current_set(const char *config_path);
void ctl_current_clear(const char *config_path);
/* Removes the *.sock files of runtime_dir that nothing listens on; returns
 * how many. */
int ctl_remove_stale_sockets(const char *runtime_dir);

int cmd_config(ctl_t *ctl, int argc, char **argv);
int cmd_status(ctl_t *ctl, int argc, char **argv);
int cmd_errors(ctl_t *ctl, int argc, char **argv);
int cmd_run(ctl_t *ctl, int argc, char **argv);
int cmd_stop(ctl_t *ctl, int argc, char **argv);
int cmd_check(ctl_t *ctl, int argc, char **argv);
int cmd_cache(ctl_t *ctl, int argc, char **argv);
int cmd_reload(ctl_t *ctl, int argc, char **argv);
int cmd_registries(ctl_t *ctl, int argc, char **argv);
int cmd_metrics(ctl_t *ctl, int argc, char **argv);
int cmd_classify(ctl_t *ctl, int argc, char **argv);
int cmd_journal(ctl_t *ctl, int argc, char **argv);
int cmd_keys(ctl_t *ctl, int argc, char **argv); /* keys.c */

#endif
