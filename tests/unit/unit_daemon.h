/* A daemon for unit tests of the skeleton's parts (batches, error reports,
 * the control endpoint): an av_daemon_t as av_daemon_main holds it once
 * started (a config loaded from the test's directory, an sd-event loop that
 * drains watched sockets after every event, as av_daemon.c's does), without
 * signals, pid file, privileges or sd_notify. Tests drive the loop a turn
 * at a time, or until what they wait for has happened. */
#ifndef UNIT_DAEMON_H
#define UNIT_DAEMON_H

#include "av_daemon_internal.h"
#include "unit_files.h"

#include <limits.h>

typedef struct {
    char *dir;                 /* private temp directory: config, sockets */
    char config_path[PATH_MAX];
    av_daemon_hooks_t hooks;
    av_daemon_t d;
} unit_daemon_t;

/* What av_daemon.c's post and defer sources do: read every watched socket
 * until it has nothing. */
static inline int
unit_daemon_drain(sd_event_source *s, void *userdata)
{
    av_daemon_t *d = userdata;
    (void)s;
    for (uint32_t i = 0; i < d->n_watches; i++) {
        av_watch_t *w = d->watches[i];
        while (!w->dead && w->fn(d, w->sock, w->arg))
            ;
    }
    return 0;
}

/* The config the daemon runs with: runtime_dir and state_dir are the test's
 * directory; `extra` (YAML, may be "") is appended. */
static inline int
unit_daemon_write_config(unit_daemon_t *u, const char *extra)
{
    char *yaml;
    if (asprintf(&yaml,
                 "runtime_dir: %s\n"
                 "state_dir: %s\n"
                 "process:\n"
                 "  log: stderr\n"
                 "  log_level: 2\n"
                 "  drain_ms: 200\n"
                 "%s",
                 u->dir, u->dir, extra) < 0)
        return -1;
    int rc = unit_write_file(u->config_path, yaml);
    free(yaml);
    return rc;
}

/* A daemon named `name` ("cache", "errors"...: its config section). */
static inline unit_daemon_t *
unit_daemon_new(const char *name, const char *extra_yaml)
{
    char err[AV_CONFIG_ERR_MAX];
    unit_daemon_t *u = calloc(1, sizeof *u);
    if (!u || !(u->dir = unit_tmpdir_new(name))) {
        free(u);
        return NULL;
    }
    unit_path(u->config_path, sizeof u->config_path, u->dir, "availd.yaml");
    u->hooks.name = name;
    u->hooks.summary = "a unit test";
    av_daemon_t *d = &u->d;
    d->hooks = &u->hooks;
    d->pid_fd = -1;
    d->ready_fd = -1;
    snprintf(d->ident, sizeof d->ident, "%s", name);
    if (unit_daemon_write_config(u, extra_yaml) < 0 || av_config_load(u->config_path, &d->cfg, err, sizeof err) < 0 ||
        !(d->config_path = strdup(u->config_path)) || sd_event_new(&d->loop) < 0 ||
        sd_event_add_post(d->loop, &d->post, unit_daemon_drain, d) < 0 ||
        sd_event_add_defer(d->loop, &d->defer, unit_daemon_drain, d) < 0) {
        fprintf(stderr, "unit_daemon_new: %s\n", err);
        return NULL; /* the test fails; what leaks with it does not matter */
    }
    sd_event_source_set_enabled(d->defer, SD_EVENT_OFF);
    d->work_done = av_daemon_counter(d, "work_done");
    d->reloads = av_daemon_counter(d, "reloads");
    d->reloads_refused = av_daemon_counter(d, "reloads_refused");
    d->started_mono_us = av_mono_us();
    d->started_ms = av_now_ms();
    return u;
}

static inline void
unit_daemon_destroy(unit_daemon_t **u_p)
{
    unit_daemon_t *u = *u_p;
    if (!u)
        return;
    av_daemon_t *d = &u->d;
    av_control_close(d);
    av_reporter_close(d);
    av_watches_close(d);
    av_daemon_remove_bound_files(d);
    sd_event_source_disable_unref(d->post);
    sd_event_source_disable_unref(d->defer);
    if (d->loop)
        sd_event_unref(d->loop);
    av_config_free(&d->cfg);
    free(d->config_path);
    unit_tmpdir_remove(&u->dir);
    free(u);
    *u_p = NULL;
}

/* The value of counter `name` (0 when the daemon has none). */
static inline uint64_t
unit_daemon_counter(const unit_daemon_t *u, const char *name)
{
    for (uint32_t i = 0; i < u->d.n_counters; i++)
        if (strcmp(u->d.counters[i].name, name) == 0)
            return u->d.counters[i].value;
    return 0;
}

/* Runs the loop until done(arg) or timeout_ms passed; returns done(arg). */
static inline bool
unit_daemon_run_until(unit_daemon_t *u, bool (*done)(void *arg), void *arg, uint64_t timeout_ms)
{
    uint64_t until = (av_mono_us() / 1000) + timeout_ms;
    while (!done(arg) && (av_mono_us() / 1000) < until)
        sd_event_run(u->d.loop, 10 * 1000);
    return done(arg);
}

static inline bool
unit_never(void *arg)
{
    (void)arg;
    return false;
}

/* Runs the loop for ms milliseconds, whatever happens. */
static inline void
unit_daemon_run_for(unit_daemon_t *u, uint64_t ms)
{
    unit_daemon_run_until(u, unit_never, NULL, ms);
}

/* An ipc:// endpoint in the test's directory. */
static inline const char *
unit_daemon_endpoint(const unit_daemon_t *u, char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "ipc://%s/%s", u->dir, name);
    return buf;
}

#endif
