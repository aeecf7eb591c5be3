/* availctl run: the whole constellation in the foreground, for a developer's
 * machine, CI and benchmarks (production uses the systemd units). Starts
 * errors and cache together, then the dispatcher, then the queriers (one
 * per querier group instance) together, then intake, each step once those
 * before said READY=1 on a notify socket of ours, or died before it, or
 * did not say it within READY_WAIT_MS: the others serve without any
 * one of them (a cache in a crash loop costs its hits, not the service);
 * restarts a daemon that dies with a growing delay; on SIGINT/SIGTERM stops
 * them in reverse order and reaps every child.
 *
 * One supervisor per runtime_dir, and no orphans: it refuses to start while
 * another availctl run or any daemon of the config runs there (their locks,
 * av_lock_holder), naming them and `availctl stop`; its daemons get SIGTERM
 * from the kernel when it dies, even by SIGKILL (PR_SET_PDEATHSIG), unless
 * --detach leaves them running once all are up. */
#include "availctl.h"

#include "av_daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AVAILD_SBIN_DIR
#define AVAILD_SBIN_DIR "/usr/sbin"
#endif

extern char **environ;

#define RESTART_DELAY_MIN_MS 500
#define RESTART_DELAY_MAX_MS 30000
#define STOP_TIMEOUT_MS 15000
/* How long the start of the next daemon waits for one that neither says
 * READY=1 nor dies (a hang): then the rest start without it. */
#define READY_WAIT_MS 15000

typedef struct runner runner_t;

typedef struct {
    runner_t *run;
    char kind[32];
    char instance[AV_REGISTRY_MAX + 1];
    char ident[AV_REGISTRY_MAX + 40];
    char binary[PATH_MAX];
    char notify_path[PATH_MAX];
    int notify_fd;
    pid_t pid;
    bool ready;
    bool in_batch;         /* of the batch the next waits for */
    uint32_t restart_delay_ms;
    uint32_t restarts;
    sd_event_source *child_source;
    sd_event_source *notify_source;
    sd_event_source *restart_timer;
} child_t;

struct runner {
    ctl_t *ctl;
    sd_event *loop;
    child_t *children;
    size_t n_children;
    size_t next_to_start;  /* start in order, one after the other is READY */
    child_t *waiting;      /* the one the next waits for (the first of a batch), or NULL */
    size_t waiting_left;   /* of the batch started together (the queriers), not READY yet */
    sd_event_source *ready_timer; /* READY_WAIT_MS of waiting */
    bool stopping;
    uint64_t started_us;
    bool restart;
    bool detach;           /* exit once all are up, leaving them running */
    bool all_up;
    int exit_status;       /* EXIT_NEGATIVE after a daemon that could not run */
};

static int start_child(child_t *c);

static bool
all_ready(const runner_t *r)
{
    for (size_t i = 0; i < r->n_children; i++)
        if (!r->children[i].ready)
            return false;
    return true;
}

/* --detach leaves once every daemon is up, not merely started. */
static void
detach_when_all_ready(runner_t *r)
{
    if (r->detach && r->all_up && !r->stopping && all_ready(r))
        sd_event_exit(r->loop, 0);
}

static int on_ready_wait(sd_event_source *s, uint64_t usec, void *userdata);

/* Daemons that need nothing of one another start together: the error
 * recorder and the cache (the first two), then the dispatcher, then the
 * queriers together, then intake once all of them are READY. */
static int
batch_of(const char *kind)
{
    if (strcmp(kind, "errors") == 0 || strcmp(kind, "cache") == 0)
        return 1;
    return strcmp(kind, "querier") == 0 ? 2 : 0;
}

static void
start_next(runner_t *r)
{
    r->waiting = NULL;
    r->waiting_left = 0;
    for (size_t i = 0; i < r->n_children; i++)
        r->children[i].in_batch = false;
    r->ready_timer = sd_event_source_disable_unref(r->ready_timer);
    while (!r->stopping && r->next_to_start < r->n_children) {
        child_t *c = &r->children[r->next_to_start++];
        if (start_child(c) == 0) {
            c->in_batch = true;
            r->waiting_left++;
            if (!r->waiting)
                r->waiting = c;
        }
        int batch = batch_of(c->kind);
        if (r->waiting && !(batch && r->next_to_start < r->n_children &&
                            batch_of(r->children[r->next_to_start].kind) == batch)) {
            /* Their READY=1 starts the next; so does a death, or a hang. */
            sd_event_add_time_relative(r->loop, &r->ready_timer, CLOCK_MONOTONIC, (uint64_t)READY_WAIT_MS * 1000,
                                       1000, on_ready_wait, r);
            return;
        }
    }
    if (!r->stopping && r->next_to_start == r->n_children) {
        char missing[256] = "";
        size_t up = 0, len = 0;
        r->next_to_start++;
        r->all_up = true;
        for (size_t i = 0; i < r->n_children; i++) {
            if (r->children[i].ready)
                up++;
            else if (len < sizeof missing)
                len += (size_t)snprintf(missing + len, sizeof missing - len, " %s", r->children[i].ident);
        }
        if (up == r->n_children)
            fprintf(stderr, "availctl run: %zu daemons up in %.1f ms (%s)\n", r->n_children,
                    (double)(av_mono_us() - r->started_us) / 1000.0,
                    r->detach ? "detached: availctl stop stops them" : "Ctrl-C stops them");
        else
            fprintf(stderr, "availctl run: %zu of %zu daemons up in %.1f ms, the others serve without:%s "
                            "(restarted until they are up; %s)\n",
                    up, r->n_children, (double)(av_mono_us() - r->started_us) / 1000.0, missing,
                    r->detach ? "detaches once all are up" : "Ctrl-C stops them");
        detach_when_all_ready(r);
    }
}

/* The one waited for did not get ready in time: the rest start. */
static int
on_ready_wait(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    runner_t *r = userdata;
    r->ready_timer = sd_event_source_disable_unref(r->ready_timer);
    if (r->waiting && !r->stopping) {
        fprintf(stderr, "availctl run: %s not ready after %d s: starting the rest without it\n", r->waiting->ident,
                READY_WAIT_MS / 1000);
        start_next(r);
    }
    return 0;
}

static int
on_notify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    (void)s;
    (void)revents;
    child_t *c = userdata;
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT)) > 0) {
        buf[n] = '\0';
        if (!c->ready && (strstr(buf, "READY=1\n") == buf || strstr(buf, "\nREADY=1") ||
                          strcmp(buf, "READY=1") == 0 || strncmp(buf, "READY=1", 7) == 0)) {
            c->ready = true;
            c->restart_delay_ms = RESTART_DELAY_MIN_MS;
            if (c->in_batch && --c->run->waiting_left == 0)
                start_next(c->run);
            else
                detach_when_all_ready(c->run); /* a late one, or one restarted */
        }
    }
    return 0;
}

static int on_child(sd_event_source *s, const siginfo_t *si, void *userdata);

static int
on_restart(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    child_t *c = userdata;
    c->restart_timer = sd_event_source_disable_unref(c->restart_timer);
    if (!c->run->stopping)
        start_child(c);
    return 0;
}

/* The child's side of spawn, between fork and exec: only async-signal-safe
 * calls. Tells the parent exec's errno through errfd when exec fails. */
static void __attribute__((noreturn))
exec_child(const child_t *c, char **argv, char **env, pid_t parent, int errfd)
{
    /* The default dispositions, not ours, and a process group of its own:
     * Ctrl-C reaches availctl only, which then stops them in order. */
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for KILL, STOP and the reserved ones */
    setpgid(0, 0);
    /* No orphan: SIGTERM (a graceful stop) when availctl run dies, even by
     * SIGKILL. If it died before the prctl, we are someone else's already. */
    int err = 0;
    if (!c->run->detach && (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) < 0 || getppid() != parent))
        err = ECHILD;
    if (!err) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(c->binary, argv, env);
        err = errno;
    }
    ssize_t n = write(errfd, &err, sizeof err);
    (void)n;
    _exit(127);
}

/* fork and exec, and exec's failure as a return value (as posix_spawn
 * gives it, which cannot set the parent-death signal): pid or -errno. */
static pid_t
spawn(const child_t *c, char **argv, char **env)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        return -err;
    }
    if (pid == 0) {
        close(pipefd[0]);
        exec_child(c, argv, env, parent, pipefd[1]);
    }
    close(pipefd[1]);
    int err = 0;
    ssize_t n;
    do
        n = read(pipefd[0], &err, sizeof err); /* EOF: exec closed it */
    while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof err) {
        waitpid(pid, NULL, 0);
        return -err;
    }
    return pid;
}

static int
start_child(child_t *c)
{
    runner_t *r = c->run;
    char *argv[8];
    int argc = 0;
    argv[argc++] = c->binary;
    argv[argc++] = "-f";
    argv[argc++] = "-c";
    argv[argc++] = (char *)r->ctl->config_path;
    if (c->instance[0]) {
        argv[argc++] = "--registry";
        argv[argc++] = c->instance;
    }
    argv[argc] = NULL;

    /* The child's environment: ours, with NOTIFY_SOCKET pointing at us. */
    size_t n_env = 0;
    while (environ[n_env])
        n_env++;
    char **env = calloc(n_env + 2, sizeof *env);
    char notify[PATH_MAX + 16];
    if (!env)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "NOTIFY_SOCKET=", 14) != 0 && strncmp(environ[i], "WATCHDOG_", 9) != 0 &&
            strncmp(environ[i], "LISTEN_", 7) != 0)
            env[k++] = environ[i];
    snprintf(notify, sizeof notify, "NOTIFY_SOCKET=%s", c->notify_path);
    env[k++] = notify;
    env[k] = NULL;

    pid_t pid = spawn(c, argv, env);
    free(env);
    if (pid < 0) {
        fprintf(stderr, "availctl run: cannot start %s: %s\n", c->binary, strerror((int)-pid));
        return -1;
    }
    c->pid = pid;
    c->ready = false;
    sd_event_source_disable_unref(c->child_source);
    c->child_source = NULL;
    sd_event_add_child(r->loop, &c->child_source, c->pid, WEXITED, on_child, c);
    return 0;
}

static bool
all_exited(runner_t *r)
{
    for (size_t i = 0; i < r->n_children; i++)
        if (r->children[i].pid > 0)
            return false;
    return true;
}

static void stop_next(runner_t *r);

static int
on_child(sd_event_source *s, const siginfo_t *si, void *userdata)
{
    (void)s;
    child_t *c = userdata;
    runner_t *r = c->run;
    bool was_ready = c->ready;
    c->pid = 0;
    c->ready = false;
    if (r->stopping) {
        stop_next(r);
        return 0;
    }
    if (si->si_code == CLD_EXITED)
        fprintf(stderr, "availctl run: %s exited with status %d\n", c->ident, si->si_status);
    else
        fprintf(stderr, "availctl run: %s killed by signal %d\n", c->ident, si->si_status);
    if (si->si_code == CLD_EXITED && si->si_status == AV_EXIT_RUNNING)
        fprintf(stderr, "availctl run: another %s already runs with this runtime_dir (its message above)\n",
                c->ident);
    if (!r->restart || (si->si_code == CLD_EXITED &&
                        (si->si_status == AV_EXIT_CONFIG || si->si_status == AV_EXIT_RUNNING))) {
        fprintf(stderr, "availctl run: not restarting %s; stopping the others\n", c->ident);
        r->exit_status = EXIT_NEGATIVE;
        r->stopping = true;
        stop_next(r);
        return 0;
    }
    c->restarts++;
    /* A recycling daemon (max_requests) asked to be started again: now. */
    bool recycled = si->si_code == CLD_EXITED && si->si_status == AV_EXIT_RECYCLE;
    uint32_t delay_ms = recycled ? 0 : c->restart_delay_ms;
    fprintf(stderr, "availctl run: restarting %s in %u ms\n", c->ident, delay_ms);
    sd_event_add_time_relative(r->loop, &c->restart_timer, CLOCK_MONOTONIC, (uint64_t)delay_ms * 1000, 1000,
                               on_restart, c);
    if (!recycled)
        c->restart_delay_ms = c->restart_delay_ms * 2 > RESTART_DELAY_MAX_MS ? RESTART_DELAY_MAX_MS
                                                                             : c->restart_delay_ms * 2;
    /* One that died before its READY=1 holds the rest back no more: they
     * serve without it while it is restarted (a damaged database, a crash
     * loop). */
    if (!was_ready && c->in_batch) {
        c->in_batch = false;
        /* Said whether or not it was the last of its batch: which of them
         * gets ready or dies first is up to the machine. */
        fprintf(stderr, "availctl run: %s did not start: starting the rest without it\n", c->ident);
        if (--r->waiting_left == 0)
            start_next(r);
    }
    return 0;
}

static int
on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    runner_t *r = userdata;
    for (size_t i = 0; i < r->n_children; i++)
        if (r->children[i].pid > 0) {
            fprintf(stderr, "availctl run: %s did not stop in time: SIGKILL\n", r->children[i].ident);
            kill(r->children[i].pid, SIGKILL);
        }
    return 0;
}

/* Stops the last running child; its exit stops the one before. Intake goes
 * first, so no new work comes in while the others drain. */
static void
stop_next(runner_t *r)
{
    for (size_t i = r->n_children; i-- > 0;) {
        child_t *c = &r->children[i];
        if (c->restart_timer)
            c->restart_timer = sd_event_source_disable_unref(c->restart_timer);
        if (c->pid > 0) {
            kill(c->pid, SIGTERM);
            return;
        }
    }
    if (all_exited(r))
        sd_event_exit(r->loop, 0);
}

static int
on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
    (void)s;
    runner_t *r = userdata;
    if (si->ssi_signo == SIGHUP) {
        for (size_t i = 0; i < r->n_children; i++)
            if (r->children[i].pid > 0)
                kill(r->children[i].pid, SIGHUP);
        return 0;
    }
    if (r->stopping)
        return 0;
    fprintf(stderr, "availctl run: stopping\n");
    r->stopping = true;
    sd_event_add_time_relative(r->loop, NULL, CLOCK_MONOTONIC, (uint64_t)STOP_TIMEOUT_MS * 1000, 1000,
                               on_stop_timeout, r);
    stop_next(r);
    return 0;
}

static int
find_binary(const char *name, char *out, size_t size)
{
    char self[PATH_MAX];
    struct stat st;
    const char *dir = getenv("AVAILD_SBIN_DIR");
    if (dir) {
        snprintf(out, size, "%s/availd-%s", dir, name);
        return stat(out, &st) == 0 ? 0 : -1;
    }
    /* In a build tree availctl is build/tools/availctl/availctl and the
     * daemons are build/daemons/availd-NAME. */
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(out, size, "%s/../../daemons/availd-%s", self, name);
            if (stat(out, &st) == 0)
                return 0;
            snprintf(out, size, "%s/../sbin/availd-%s", self, name);
            if (stat(out, &st) == 0)
                return 0;
        }
    }
    snprintf(out, size, "%s/availd-%s", AVAILD_SBIN_DIR, name);
    return stat(out, &st) == 0 ? 0 : -1;
}

static int
add_child(runner_t *r, const char *kind, const char *instance)
{
    child_t *c = &r->children[r->n_children];
    memset(c, 0, sizeof *c);
    c->run = r;
    c->notify_fd = -1;
    c->restart_delay_ms = RESTART_DELAY_MIN_MS;
    snprintf(c->kind, sizeof c->kind, "%s", kind);
    snprintf(c->instance, sizeof c->instance, "%s", instance ? instance : "");
    snprintf(c->ident, sizeof c->ident, "%s%s%s", kind, instance ? "-" : "", instance ? instance : "");
    if (find_binary(kind, c->binary, sizeof c->binary) < 0) {
        fprintf(stderr, "availctl run: availd-%s not found (set AVAILD_SBIN_DIR); skipping %s\n", kind, c->ident);
        return 0;
    }
    snprintf(c->notify_path, sizeof c->notify_path, "%s/run-notify-%s", r->ctl->cfg->runtime_dir, c->ident);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(c->notify_path) >= sizeof sa.sun_path) {
        fprintf(stderr, "availctl run: %s: path too long\n", c->notify_path);
        return -1;
    }
    strcpy(sa.sun_path, c->notify_path);
    unlink(c->notify_path);
    c->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->notify_fd < 0 || bind(c->notify_fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "availctl run: cannot bind %s: %s\n", c->notify_path, strerror(errno));
        return -1;
    }
    sd_event_add_io(r->loop, &c->notify_source, c->notify_fd, EPOLLIN, on_notify, c);
    r->n_children++;
    return 0;
}

typedef struct {
    runner_t *r;
    int rc;
} add_walk_t;

static void
add_querier(void *arg, const char *registry, const char *instance)
{
    (void)registry;
    add_walk_t *w = arg;
    if (w->rc == 0)
        w->rc = add_child(w->r, "querier", instance);
}

static int
mkdirs(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *s = buf + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        mkdir(buf, 0750);
        *s = '/';
    }
    return mkdir(buf, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

/* ---- one supervisor per runtime_dir ------------------------------------ */

typedef struct {
    const av_config_t *cfg;
    pid_t *pids;           /* of the daemons found running */
    size_t n_running;
    size_t max;
    int unknown;           /* daemons whose lock could not be read */
} running_walk_t;

static void
find_running(void *arg, const char *ident)
{
    running_walk_t *w = arg;
    char path[PATH_MAX];
    pid_t pid = 0;
    int held = av_daemon_lock_path(w->cfg, ident, path, sizeof path) < 0 ? -ENAMETOOLONG
                                                                          : av_lock_holder(path, &pid);
    if (held < 0) {
        fprintf(stderr, "availctl run: cannot tell whether availd-%s runs: %s: %s\n", ident, path, strerror(-held));
        w->unknown++;
    } else if (held) {
        if (w->n_running == 0)
            fprintf(stderr, "availctl run: daemons of %s already run with runtime_dir %s (orphans of an availctl "
                            "run that died, or started by hand):\n",
                    w->cfg->path ? w->cfg->path : "this configuration", w->cfg->runtime_dir);
        if (pid > 0)
            fprintf(stderr, "  %-24s pid %d\n", ident, (int)pid);
        else
            fprintf(stderr, "  %-24s pid ? (starting)\n", ident);
        if (w->n_running < w->max)
            w->pids[w->n_running++] = pid;
    }
}

/* Refuses (1) when another availctl run or a daemon of the config runs with
 * the runtime_dir: adopting processes that are not our children would give
 * a supervisor that can neither reap nor restart them. Else takes the run
 * lock, held until we exit, into *lock_fd and returns 0. */
static int
refuse_if_running(ctl_t *ctl, size_t n_daemons, int *lock_fd)
{
    const av_config_t *cfg = ctl->cfg;
    char path[PATH_MAX];
    pid_t holder = 0;
    snprintf(path, sizeof path, "%s/availctl-run.lock", cfg->runtime_dir);
    *lock_fd = av_lock_take(path, &holder);
    if (*lock_fd == -EEXIST) {
        fprintf(stderr, "availctl run: another availctl run (pid %d) supervises runtime_dir %s\n"
                        "availctl run: stop it first: availctl -c %s stop (or Ctrl-C it, or kill %d)\n",
                (int)holder, cfg->runtime_dir, ctl->config_path, (int)holder);
        return EXIT_NEGATIVE;
    }
    if (*lock_fd < 0) {
        fprintf(stderr, "availctl run: cannot lock %s: %s\n", path, strerror(-*lock_fd));
        return EXIT_USAGE;
    }
    running_walk_t w = { .cfg = cfg, .pids = calloc(n_daemons, sizeof(pid_t)), .max = n_daemons };
    if (!w.pids)
        return EXIT_USAGE;
    ctl_each_daemon(cfg, find_running, &w);
    int rc = w.unknown ? EXIT_USAGE : EXIT_OK;
    if (w.n_running) {
        fprintf(stderr, "availctl run: not starting duplicates; stop them first: availctl -c %s stop (or: kill",
                ctl->config_path);
        for (size_t i = 0; i < w.n_running; i++)
            if (w.pids[i] > 0)
                fprintf(stderr, " %d", (int)w.pids[i]);
        fprintf(stderr, ")\n");
        rc = EXIT_NEGATIVE;
    }
    free(w.pids);
    if (rc != EXIT_OK)
        av_lock_release(lock_fd);
    return rc;
}

int
cmd_run(ctl_t *ctl, int argc, char **argv)
{
    runner_t r = { .ctl = ctl, .restart = true };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-restart") == 0)
            r.restart = false;
        else if (strcmp(argv[i], "--detach") == 0)
            r.detach = true;
        else
            return ctl_command_usage(argv[0]);
    }
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg)
        return EXIT_NEGATIVE;
    if (mkdirs(cfg->runtime_dir) < 0) {
        fprintf(stderr, "availctl run: cannot create %s: %s\n", cfg->runtime_dir, strerror(errno));
        return EXIT_USAGE;
    }
    size_t n_queriers = ctl_querier_count(cfg);
    int lock_fd = -1;
    int refused = refuse_if_running(ctl, 4 + n_queriers, &lock_fd);
    if (refused != EXIT_OK)
        return refused;
    ctl_current_set(ctl->config_path); /* availctl without -c finds this run */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    if (sd_event_new(&r.loop) < 0) {
        av_lock_release(&lock_fd);
        return EXIT_USAGE;
    }
    sd_event_add_signal(r.loop, NULL, SIGINT, on_signal, &r);
    sd_event_add_signal(r.loop, NULL, SIGTERM, on_signal, &r);
    sd_event_add_signal(r.loop, NULL, SIGHUP, on_signal, &r);
    r.children = calloc(5 + n_queriers, sizeof *r.children);
    int rc = r.children ? 0 : -1;
    rc = rc ? rc : add_child(&r, "errors", NULL);
    rc = rc ? rc : add_child(&r, "cache", NULL);
    rc = rc ? rc : add_child(&r, "dispatcher", NULL);
    if (rc == 0) {
        add_walk_t walk = { &r, 0 };
        ctl_each_querier(cfg, add_querier, &walk);
        rc = walk.rc;
    }
    rc = rc ? rc : add_child(&r, "intake", NULL);
    if (cfg->http.enabled)
        rc = rc ? rc : add_child(&r, "http", NULL); /* after intake, whose client it is */
    if (rc == 0) {
        r.started_us = av_mono_us();
        start_next(&r);
        rc = sd_event_loop(r.loop);
    }
    bool detached = r.detach && r.all_up;
    for (size_t i = 0; i < r.n_children; i++) {
        child_t *c = &r.children[i];
        if (c->pid > 0 && !detached) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, NULL, 0);
        }
        sd_event_source_disable_unref(c->child_source);
        sd_event_source_disable_unref(c->notify_source);
        sd_event_source_disable_unref(c->restart_timer);
        if (c->notify_fd >= 0) {
            close(c->notify_fd);
            unlink(c->notify_path);
        }
    }
    sd_event_source_disable_unref(r.ready_timer);
    free(r.children);
    sd_event_unref(r.loop);
    if (!detached) {
        /* All stopped: what one killed left behind would only mislead. */
        ctl_remove_stale_sockets(cfg->runtime_dir);
        ctl_current_clear(ctl->config_path);
    }
    av_lock_release(&lock_fd);
    if (rc < 0)
        return EXIT_USAGE;
    return r.detach && !detached ? EXIT_NEGATIVE : r.exit_status;
}
