/* availctl stop [DAEMON...]: stops the daemons of the configuration that
 * run, wherever they came from: a live availctl run is sent SIGTERM (it
 * stops its daemons in order, and would start again one stopped under
 * it); the others, orphans of an availctl run that died, detached ones or
 * daemons started by hand, are asked on their control endpoint (as
 * SIGTERM: they drain) in availctl run's reverse order, intake first, and
 * each stage is waited for until its instance locks are free. Exit 1 when
 * one could not be stopped (its pid is printed, for kill). */
#include "availctl.h"

#include "av_daemon.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <unistd.h>

/* availctl run's own stop takes up to 15 s before it kills what is left. */
#define STOP_RUN_TIMEOUT_MS 30000
/* Past a daemon's drain_ms: its teardown, and a busy machine. */
#define STOP_GRACE_MS 5000
#define STOP_POLL_US 20000

typedef struct {
    char ident[AV_REGISTRY_MAX + 32];
    int stage;             /* stopped together, after every earlier stage */
    size_t order;          /* within a stage, as listed */
    pid_t pid;
    int pidfd;             /* the process asked to stop, to wait for its exit; -1: none */
    bool asked;
    char err[AV_CONFIG_ERR_MAX + 128];
} target_t;

typedef struct {
    target_t *targets;
    size_t n;
    size_t max;
} target_list_t;

/* intake first (no new work while the others drain), then the queriers,
 * the dispatcher, the cache and the error recorder last. */
static int
stage_of(const char *ident)
{
    static const char *const order[] = { "http", "intake", "querier", "dispatcher", "cache", "errors" };
    size_t len = strcspn(ident, "-");
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++)
        if (strlen(order[i]) == len && strncmp(ident, order[i], len) == 0)
            return i;
    return 0;
}

static void
add_target(void *arg, const char *ident)
{
    target_list_t *l = arg;
    if (l->n == l->max)
        return;
    target_t *t = &l->targets[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->ident, sizeof t->ident, "%s", ident);
    t->stage = stage_of(ident);
    t->order = l->n;
    t->pidfd = -1;
}

static int
by_stage(const void *a, const void *b)
{
    const target_t *x = a, *y = b;
    if (x->stage != y->stage)
        return x->stage < y->stage ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int
lock_of(const av_config_t *cfg, const char *ident, pid_t *pid, char *path, size_t size)
{
    if (av_daemon_lock_path(cfg, ident, path, size) < 0)
        return -ENAMETOOLONG;
    return av_lock_holder(path, pid);
}

static uint32_t
drain_ms_of(const av_config_t *cfg, const char *ident)
{
    char kind[32];
    snprintf(kind, sizeof kind, "%.*s", (int)strcspn(ident, "-"), ident);
    const av_process_cfg_t *p = av_config_process(cfg, kind);
    return p ? p->drain_ms : cfg->process.drain_ms;
}

static void
report(ctl_t *ctl, const target_t *t, const char *state)
{
    if (ctl->json) {
        json_t *j = json_pack("{s:s, s:s}", "ident", t->ident, "state", state);
        if (t->pid > 0)
            json_object_set_new(j, "pid", json_integer(t->pid));
        if (t->err[0])
            json_object_set_new(j, "error", json_string(t->err));
        ctl_print_json(j);
    } else if (t->err[0]) {
        printf("%-24s %s: %s\n", t->ident, state, t->err);
    } else if (t->pid > 0) {
        printf("%-24s %s (pid %d)\n", t->ident, state, (int)t->pid);
    } else {
        printf("%-24s %s\n", t->ident, state);
    }
}

/* Asks every running daemon of one stage to stop and waits until their
 * locks are free; returns how many could not be stopped. */
static int
stop_stage(ctl_t *ctl, target_t *targets, size_t n)
{
    char path[PATH_MAX];
    uint32_t wait_ms = 0;
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        target_t *t = &targets[i];
        int held = lock_of(ctl->cfg, t->ident, &t->pid, path, sizeof path);
        if (held <= 0) {
            if (held < 0)
                snprintf(t->err, sizeof t->err, "cannot tell whether it runs: %s: %s", path, strerror(-held));
            failed += held < 0;
            report(ctl, t, held < 0 ? "unknown" : "not running");
            continue;
        }
        ctl_reply_t reply;
        /* No answer is not yet a failure: a stopping daemon may drop its
         * reply (linger 0); its lock says whether it went. */
        if (ctl_call_simple(ctl, t->ident, "stop", &reply) < 0 && strncmp(reply.err, "no answer", 9) != 0) {
            snprintf(t->err, sizeof t->err, "%s; kill %d", reply.err, (int)t->pid);
            report(ctl, t, "NOT stopped");
            failed++;
        } else {
            t->asked = true;
            /* Opened while it holds the lock, so it is that process even if
             * its pid is reused later; ESRCH: it has gone already. */
            t->pidfd = pidfd_open(t->pid, 0);
            uint32_t ms = drain_ms_of(ctl->cfg, t->ident) + STOP_GRACE_MS;
            wait_ms = ms > wait_ms ? ms : wait_ms;
        }
        ctl_reply_release(&reply);
    }
    uint64_t deadline_us = av_mono_us() + (uint64_t)wait_ms * 1000;
    for (size_t i = 0; i < n; i++) {
        target_t *t = &targets[i];
        if (!t->asked)
            continue;
        pid_t pid;
        int held;
        while ((held = lock_of(ctl->cfg, t->ident, &pid, path, sizeof path)) == 1 && av_mono_us() < deadline_us)
            usleep(STOP_POLL_US);
        /* The lock goes before the process does (its teardown, a sanitizer's
         * leak check): "stopped" means it has exited, as `kill -0` sees. */
        if (held == 0 && t->pidfd >= 0) {
            uint64_t now = av_mono_us();
            struct pollfd exited = { .fd = t->pidfd, .events = POLLIN };
            int left_ms = now < deadline_us ? (int)((deadline_us - now) / 1000) : 0;
            while (poll(&exited, 1, left_ms) < 0 && errno == EINTR)
                ;
            if (!(exited.revents & POLLIN))
                held = 1;
        }
        if (t->pidfd >= 0)
            close(t->pidfd);
        t->pidfd = -1;
        if (held == 0) {
            report(ctl, t, "stopped");
        } else {
            snprintf(t->err, sizeof t->err, "still running after %u ms; kill %d", wait_ms, (int)t->pid);
            report(ctl, t, "NOT stopped");
            failed++;
        }
    }
    return failed;
}

/* A live availctl run stops its own daemons, in order, on SIGTERM; asked
 * one by one under it, they would be started again. Returns -1 when there
 * is none, else an exit status. */
static int
stop_runner(ctl_t *ctl, bool named)
{
    char path[PATH_MAX];
    pid_t pid = 0;
    snprintf(path, sizeof path, "%s/availctl-run.lock", ctl->cfg->runtime_dir);
    int held = av_lock_holder(path, &pid);
    if (held <= 0)
        return -1; /* none; or its lock is unreadable, and so are the daemons': they say so */
    if (named) {
        fprintf(stderr, "availctl stop: availctl run (pid %d) supervises them and would start them again; "
                        "availctl stop without names stops it and all\n", (int)pid);
        return EXIT_NEGATIVE;
    }
    if (pid <= 0 || kill(pid, SIGTERM) < 0) {
        fprintf(stderr, "availctl stop: cannot stop availctl run (pid %d): %s\n", (int)pid,
                pid > 0 ? strerror(errno) : "it is starting; try again");
        return EXIT_USAGE;
    }
    uint64_t deadline_us = av_mono_us() + (uint64_t)STOP_RUN_TIMEOUT_MS * 1000;
    while ((held = av_lock_holder(path, &pid)) == 1 && av_mono_us() < deadline_us)
        usleep(STOP_POLL_US);
    if (held != 0) {
        fprintf(stderr, "availctl stop: availctl run (pid %d) did not stop within %d ms\n", (int)pid,
                STOP_RUN_TIMEOUT_MS);
        return EXIT_NEGATIVE;
    }
    if (!ctl->json)
        printf("%-24s stopped, and its daemons with it\n", "availctl run");
    return EXIT_OK;
}

int
cmd_stop(ctl_t *ctl, int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-')
            return ctl_command_usage(argv[0]);
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg)
        return EXIT_USAGE;
    int rc = stop_runner(ctl, argc > 1);
    if (rc > 0)
        return rc;
    target_list_t l = { .max = argc > 1 ? (size_t)argc - 1 : 4 + ctl_querier_count(cfg) };
    l.targets = calloc(l.max, sizeof *l.targets);
    if (!l.targets)
        return EXIT_USAGE;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            add_target(&l, argv[i]);
            l.targets[l.n - 1].stage = i - 1; /* one at a time, in the order named */
        }
    } else {
        ctl_each_daemon(cfg, add_target, &l);
    }
    qsort(l.targets, l.n, sizeof *l.targets, by_stage);
    int failed = 0;
    for (size_t first = 0, next; first < l.n; first = next) {
        for (next = first + 1; next < l.n && l.targets[next].stage == l.targets[first].stage; next++)
            ;
        failed += stop_stage(ctl, &l.targets[first], next - first);
    }
    free(l.targets);
    return failed ? EXIT_NEGATIVE : EXIT_OK;
}
