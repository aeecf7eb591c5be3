/* The daemon skeleton's insides, shared by its files (lifecycle, control,
 * reporting, sockets) and by nothing else. */
#ifndef AV_DAEMON_INTERNAL_H
#define AV_DAEMON_INTERNAL_H

#include "av_daemon.h"

#include <stdio.h>
#include <sys/types.h>

#define AV_NAME_LEN 48
#define AV_RESTART_MAX 16
#define AV_RESTART_KEY_MAX 160
#define AV_BOUND_FILES_MAX 16 /* a daemon binds at most five endpoints and its control */

typedef struct {
    char name[AV_NAME_LEN];
    uint64_t value;
} av_counter_t;

typedef struct {
    char name[AV_NAME_LEN];
    av_gauge_fn fn;
} av_gauge_t;

typedef struct {
    char name[AV_NAME_LEN];
    av_command_fn fn;
} av_command_t;

typedef struct {
    zsock_t *sock;
    av_zsock_fn fn;
    void *arg;
    sd_event_source *io;
    bool dead;
} av_watch_t;

struct av_daemon {
    const av_daemon_hooks_t *hooks;
    av_config_t *cfg;
    char *config_path;
    char instance[AV_NAME_LEN + 16];
    char ident[2 * AV_NAME_LEN + 16];
    sd_event *loop;
    void *state;
    bool stopping;
    bool initialised;
    sd_event_source *drain_timer;
    uint64_t started_mono_us;
    uint64_t started_ms;
    char status_text[256];

    av_counter_t counters[AV_COUNTERS_MAX];
    uint32_t n_counters;
    av_gauge_t gauges[AV_GAUGES_MAX];
    uint32_t n_gauges;
    av_command_t commands[AV_COMMANDS_MAX];
    uint32_t n_commands;

    av_watch_t *watches[AV_WATCHES_MAX];
    uint32_t n_watches;
    sd_event_source *post;
    sd_event_source *defer;

    zsock_t *control;
    zsock_t *zap;            /* ZAP handler, once a tcp:// endpoint is bound */
    uint64_t *zap_denied;
    struct av_curve *curve;  /* CURVE keys, once a tcp:// endpoint needs them */

    zsock_t *reporter;
    uint64_t *events_sent;
    uint64_t *events_dropped;
    uint64_t *events_suppressed;
    double report_tokens;
    uint64_t report_refill_us;

    bool drop_privileges;
    uid_t uid;
    gid_t gid;
    int pid_fd;
    int ready_fd;            /* daemonize: tells the waiting parent we are up */
    uint64_t *work_done;
    int exit_status;         /* after a graceful stop */
    uint64_t *reloads;
    uint64_t *reloads_refused;
    /* Settings the file changed that apply only at a restart (av_reload.c). */
    char needs_restart[AV_RESTART_MAX][AV_RESTART_KEY_MAX];
    uint32_t n_needs_restart;
    int lock_fd;             /* the instance lock (av_lock_take), -1 when none */
    /* ipc:// socket files this process bound (not those systemd passed):
     * removed at the stop, under the instance lock (libzmq leaves them). */
    char *bound_files[AV_BOUND_FILES_MAX];
    uint32_t n_bound_files;
};

int av_control_open(av_daemon_t *d);
void av_control_close(av_daemon_t *d);
int av_reporter_open(av_daemon_t *d);
void av_reporter_close(av_daemon_t *d);
/* Tests: the monotonic clock (us) av_report reads; NULL restores av_mono_us. */
void av_report_set_clock(uint64_t (*mono_us)(void));
int av_daemon_reload(av_daemon_t *d, char *err, size_t errlen);
/* The stop: removes the ipc:// files the daemon bound (bound_files). */
void av_daemon_remove_bound_files(av_daemon_t *d);
void av_daemon_apply_logging(av_daemon_t *d);
/* `needs_restart`: [KEY...], one map pair of a control reply. */
void av_daemon_pack_needs_restart(const av_daemon_t *d, msgpack_packer *pk);
/* --restart-keys: the keys this daemon applies only at start, one a line
 * (its process keys as DAEMON.KEY and process.KEY), for availd.yaml(5). */
void av_daemon_print_restart_keys(const av_daemon_hooks_t *h, FILE *out);
void av_watches_close(av_daemon_t *d);
void av_zap_close(av_daemon_t *d);

#endif
