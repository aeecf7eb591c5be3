/* The skeleton every availd daemon runs in (after Postfix's *_server_main):
 * the daemon supplies its job as hooks; config, logging, signals, the event
 * loop, privileges, pid file, systemd notification, the control endpoint,
 * counters and error reporting live here once. */
#ifndef AV_DAEMON_H
#define AV_DAEMON_H

#include "av_config.h"
#include "av_log.h"
#include "av_proto.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#define AV_COUNTERS_MAX 64
#define AV_GAUGES_MAX   32
#define AV_COMMANDS_MAX 16
#define AV_WATCHES_MAX  16

/* Exit status for a refused configuration (sysexits' EX_CONFIG), so a
 * service manager can tell it from a crash and not restart in a loop. */
#define AV_EXIT_CONFIG 78
/* Exit status after max_requests (EX_TEMPFAIL): a clean stop that asks to
 * be started again (Restart=on-failure does; so does availctl run). */
#define AV_EXIT_RECYCLE 75
/* Exit status when another instance of the daemon already runs with the
 * same runtime_dir, i.e. holds its instance lock (EX_CANTCREAT): not
 * restarted in a loop by systemd (RestartPreventExitStatus) nor by
 * availctl run. */
#define AV_EXIT_RUNNING 73

typedef struct av_daemon av_daemon_t;

/* A setting of availd.yaml by where it lives in av_config_t, for the
 * skeleton to compare the running and a reloaded configuration. */
typedef enum {
    AV_SETTING_STR = 1,  /* char * */
    AV_SETTING_U32,
    AV_SETTING_U64,
    AV_SETTING_BOOL,
} av_setting_kind_t;

typedef struct {
    const char *key;     /* as written in availd.yaml: "cache.path" */
    size_t offset;       /* of the field in av_config_t */
    av_setting_kind_t kind;
} av_setting_t;

#define AV_SETTING(key, field, kind) { (key), offsetof(av_config_t, field), (kind) }

typedef struct {
    const char *name;        /* "errors", "querier"... the config section */
    const char *summary;     /* one line for --help */
    /* An instance name is required (the querier's --registry NAME). */
    bool instance_required;
    const char *instance_option; /* "registry" */
    /* Does the config know this instance? Asked by -n and at start, so a
     * unit for a name the file lacks fails with AV_EXIT_CONFIG (systemd
     * does not restart it in a loop). May be NULL. */
    int (*instance_check)(const av_config_t *cfg, const char *instance, char *err, size_t errlen);
    /* Open sockets and build state; called before privileges are dropped. */
    int (*init)(av_daemon_t *d);
    /* SIGHUP or `availctl reload`: `next` has been loaded and validated;
     * adopt it (return 0) or refuse it (<0, after saying why), in which case
     * the old one stays. After 0 the old config is freed: keep no pointer
     * into it. May be NULL: every setting then needs a restart. */
    int (*on_reload)(av_daemon_t *d, const av_config_t *next);
    /* The settings this daemon applies only at start (its endpoints, its
     * database paths...), ended by { NULL }. On a reload that changes one
     * it keeps the running value and says "needs restart: KEY" (the
     * skeleton does this for its own: the control and errors endpoints,
     * pid_file, user, group, daemonize). */
    const av_setting_t *restart_settings;
    /* Keys its on_reload compares itself and keeps running ("registries.NAME.protocol"),
     * for --restart-keys and availd.yaml(5); NULL-ended, may be NULL. */
    const char *const *restart_keys_own;
    /* SIGTERM: stop taking work, finish or hand back what is in flight.
     * Return 1 when nothing is left, 0 to keep running until the daemon
     * calls av_daemon_drained or process.drain_ms passes. */
    int (*on_stop)(av_daemon_t *d);
    /* After the loop: release everything. */
    void (*fini)(av_daemon_t *d);
} av_daemon_hooks_t;

int av_daemon_main(int argc, char **argv, const av_daemon_hooks_t *hooks);

/* Accessors. */
const av_config_t *av_daemon_config(const av_daemon_t *d);
const av_process_cfg_t *av_daemon_process(const av_daemon_t *d);
const char *av_daemon_instance(const av_daemon_t *d);  /* "verisign", or NULL */
sd_event *av_daemon_loop(const av_daemon_t *d);
void *av_daemon_state(const av_daemon_t *d);
void av_daemon_set_state(av_daemon_t *d, void *state);
bool av_daemon_stopping(const av_daemon_t *d);

/* Named counters, reported by `status`; the pointer stays valid. */
uint64_t *av_daemon_counter(av_daemon_t *d, const char *name);
/* Named values computed when asked (queue depths, in-flight). */
typedef uint64_t (*av_gauge_fn)(av_daemon_t *d);
int av_daemon_gauge(av_daemon_t *d, const char *name, av_gauge_fn fn);

/* Extra control commands. The handler packs a whole reply (use
 * av_pack_ctl_reply_begin) and returns 0, or returns <0 with err set, and
 * the skeleton answers {ok: false, error: err}. */
typedef int (*av_command_fn)(av_daemon_t *d, const msgpack_object *request, msgpack_packer *reply, char *err,
                             size_t errlen);
int av_daemon_command(av_daemon_t *d, const char *cmd, av_command_fn fn);

/* Calls fn whenever sock may have a message to read. fn reads one message
 * without waiting (watched sockets have a receive timeout of 0) and returns
 * false when there was none. */
typedef bool (*av_zsock_fn)(av_daemon_t *d, zsock_t *sock, void *arg);
int av_daemon_watch(av_daemon_t *d, zsock_t *sock, av_zsock_fn fn, void *arg);
void av_daemon_unwatch(av_daemon_t *d, zsock_t *sock);

/* Timers on the daemon's loop. An `every` timer keeps firing until its
 * source is unref'd with sd_event_source_disable_unref. */
typedef void (*av_timer_fn)(av_daemon_t *d, void *arg);
sd_event_source *av_daemon_every(av_daemon_t *d, uint64_t interval_ms, av_timer_fn fn, void *arg);

/* From on_reload: a setting of `next` the daemon does not apply until a
 * restart (and keeps its running value of), shown by `availctl reload` and
 * `availctl status` as "needs restart: KEY". */
void av_daemon_needs_restart(av_daemon_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Graceful stop is complete (see on_stop). */
void av_daemon_drained(av_daemon_t *d);
/* Counts n units of work (checks, requests) against process.max_requests:
 * past it the daemon stops gracefully and exits AV_EXIT_RECYCLE, to be
 * started afresh (the old daemon's recycling of its children). */
void av_daemon_count_work(av_daemon_t *d, uint64_t n);

/* sd_notify STATUS= line, also shown by `availctl status`. */
void av_daemon_status_text(av_daemon_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs and sends an error event to availd-errors without ever blocking:
 * when the queue is full or availd-errors is down the event is dropped and
 * counted (counter `events_dropped`). The same code about the same
 * registry is reported at most once a second; the next report says how
 * many were held back (counter `events_repeated`). registry may be NULL. */
void av_report(av_daemon_t *d, int level, const char *registry, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Sockets with availd's defaults: bounded queues, a linger that lets a
 * graceful stop flush, ROUTER_MANDATORY on routers, ipc files owned by the
 * daemon's user. The endpoint is logged on failure. */
zsock_t *av_daemon_bind(av_daemon_t *d, int type, const char *endpoint);
/* The listening socket for endpoint (ipc://PATH or tcp://HOST:PORT) that a
 * service manager passed (LISTEN_FDS), or -1. */
int av_inherited_socket(const char *endpoint);
/* A listening TCP socket (non-blocking, SO_REUSEADDR) on tcp://HOST:PORT
 * (HOST may be *, a name or a [v6] literal), or -1 with why. */
int av_tcp_listen(const char *endpoint, int backlog, char *why, size_t whylen);
zsock_t *av_daemon_connect(av_daemon_t *d, int type, const char *endpoint);
/* The same with a fixed routing id (up to 255 bytes), set before it
 * connects: a ROUTER peer then knows it again after a reconnect. */
zsock_t *av_daemon_connect_as(av_daemon_t *d, int type, const char *endpoint, const char *routing_id);
/* chown a file the daemon created while root to its configured user. */
void av_daemon_own(av_daemon_t *d, const char *path);


/* Envelope handling for ROUTER sockets: route frames kept as they came. */
typedef struct {
    zframe_t *identity;
    bool delimiter;          /* REQ peers put an empty frame before the body */
} av_envelope_t;
/* Reads one message from a ROUTER: fills env and returns the body frame
 * (caller destroys), or NULL when the message has no body or frames past
 * it (a message is one frame, after the identity and a REQ's delimiter). */
zframe_t *av_router_recv(zsock_t *router, av_envelope_t *env);
/* Sends body (copied) along env; returns 0 or -1 (peer gone, queue full). */
int av_router_send(zsock_t *router, const av_envelope_t *env, const void *body, size_t size);
void av_envelope_clear(av_envelope_t *env);

/* Sends one frame without blocking; -1 when it would block. */
int av_zsock_send_nowait(zsock_t *sock, const void *body, size_t size);

/* Instance locks: one daemon instance per runtime_dir. Each daemon holds
 * the lock of RUNTIME_DIR/availd-IDENT.lock ("intake", "querier-verisign")
 * from before it binds a socket or opens a database until it exits; the
 * file holds its pid. The locks are open file description locks (fcntl
 * F_OFD_SETLK), so a probe never takes them and cannot make a starting
 * daemon refuse. */
int av_daemon_lock_path(const av_config_t *cfg, const char *ident, char *out, size_t size);
/* Takes path's lock (creating the file) and writes our pid into it. Returns
 * the descriptor that holds it; -EEXIST when another process holds it, with
 * *holder its pid (0 while the holder has not written it yet); or -errno. */
int av_lock_take(const char *path, pid_t *holder);
/* Without taking it: 1 when someone holds path's lock (*holder its pid, or
 * 0), 0 when nobody does or there is no file, -errno when it cannot be told
 * (-EACCES: the runtime_dir is not ours to read). */
int av_lock_holder(const char *path, pid_t *holder);
/* Empties the file (no stale pid) and closes *fd, which becomes -1. */
void av_lock_release(int *fd);

uint64_t av_now_ms(void);   /* wall clock, unix ms */
uint64_t av_mono_us(void);  /* monotonic */

#endif
