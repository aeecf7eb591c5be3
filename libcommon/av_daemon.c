/* The lifecycle of an availd daemon: arguments, config, logging, daemonize,
 * pid file, signals (SIGTERM/SIGINT drain, SIGHUP reload, SIGCHLD reap),
 * privilege drop, sd_notify and the sd-event loop with ZeroMQ sockets. */
#include "av_daemon_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#ifndef AVAILD_VERSION
#define AVAILD_VERSION "0"
#endif
#ifndef AVAILD_DEFAULT_CONFIG
#define AVAILD_DEFAULT_CONFIG "/etc/availd/availd.yaml"
#endif

/* Messages read from one socket before the loop looks at its other work. */
#define WATCH_BATCH 512

uint64_t
av_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
av_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- accessors ---------------------------------------------------------- */

const av_config_t *
av_daemon_config(const av_daemon_t *d)
{
    return d->cfg;
}

const av_process_cfg_t *
av_daemon_process(const av_daemon_t *d)
{
    return av_config_process(d->cfg, d->hooks->name);
}

const char *
av_daemon_instance(const av_daemon_t *d)
{
    return d->instance[0] ? d->instance : NULL;
}

sd_event *
av_daemon_loop(const av_daemon_t *d)
{
    return d->loop;
}

void *
av_daemon_state(const av_daemon_t *d)
{
    return d->state;
}

void
av_daemon_set_state(av_daemon_t *d, void *state)
{
    d->state = state;
}

bool
av_daemon_stopping(const av_daemon_t *d)
{
    return d->stopping;
}

uint64_t *
av_daemon_counter(av_daemon_t *d, const char *name)
{
    for (uint32_t i = 0; i < d->n_counters; i++)
        if (strcmp(d->counters[i].name, name) == 0)
            return &d->counters[i].value;
    if (d->n_counters == AV_COUNTERS_MAX) {
        /* A programming error, not an input: every daemon's counters are a
         * fixed list. Count into a spare slot rather than crash. */
        av_log_err("too many counters, '%s' shares the last slot", name);
        return &d->counters[AV_COUNTERS_MAX - 1].value;
    }
    av_counter_t *c = &d->counters[d->n_counters++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->value = 0;
    return &c->value;
}

int
av_daemon_gauge(av_daemon_t *d, const char *name, av_gauge_fn fn)
{
    if (d->n_gauges == AV_GAUGES_MAX)
        return -1;
    av_gauge_t *g = &d->gauges[d->n_gauges++];
    snprintf(g->name, sizeof g->name, "%s", name);
    g->fn = fn;
    return 0;
}

int
av_daemon_command(av_daemon_t *d, const char *cmd, av_command_fn fn)
{
    if (d->n_commands == AV_COMMANDS_MAX)
        return -1;
    av_command_t *c = &d->commands[d->n_commands++];
    snprintf(c->name, sizeof c->name, "%s", cmd);
    c->fn = fn;
    return 0;
}

void
av_daemon_status_text(av_daemon_t *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->status_text, sizeof d->status_text, fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", d->status_text);
}

/* ---- ZeroMQ sockets on the sd-event loop --------------------------------
 * A ZeroMQ socket's ZMQ_FD only says "something may have changed" and is
 * reset by any operation on the socket, sends included. So each socket is
 * drained when its fd fires, and again after every dispatch of any other
 * event (a post source): a send in a timer can swallow a read signal. */

static bool drain_watch(av_daemon_t *d, av_watch_t *w);

static void
compact_watches(av_daemon_t *d)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < d->n_watches; i++) {
        av_watch_t *w = d->watches[i];
        if (w->dead) {
            sd_event_source_disable_unref(w->io);
            free(w);
        } else {
            d->watches[kept++] = w;
        }
    }
    d->n_watches = kept;
}

/* Reads until the socket has nothing (each read is non-blocking, so no
 * ZMQ_EVENTS call, and its syscalls, per message), then asks ZMQ_EVENTS
 * once: that re-arms ZMQ_FD. Returns true when the socket still had
 * messages after a full batch. */
static bool
drain_watch(av_daemon_t *d, av_watch_t *w)
{
    for (int n = 0; n < WATCH_BATCH; n++) {
        if (w->dead || !w->fn(d, w->sock, w->arg))
            return !w->dead && (zsock_events(w->sock) & ZMQ_POLLIN);
    }
    return !w->dead && (zsock_events(w->sock) & ZMQ_POLLIN);
}

static void
drain_all(av_daemon_t *d)
{
    bool more = false;
    for (uint32_t i = 0; i < d->n_watches; i++)
        more |= drain_watch(d, d->watches[i]);
    compact_watches(d);
    if (more && d->defer)
        sd_event_source_set_enabled(d->defer, SD_EVENT_ONESHOT);
}

static int
on_watch_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    (void)s;
    (void)fd;
    (void)revents;
    (void)userdata;
    return 0; /* the post source drains every socket after any dispatch */
}

static int
on_post(sd_event_source *s, void *userdata)
{
    (void)s;
    drain_all(userdata);
    return 0;
}

int
av_daemon_watch(av_daemon_t *d, zsock_t *sock, av_zsock_fn fn, void *arg)
{
    if (d->n_watches == AV_WATCHES_MAX)
        return -1;
    av_watch_t *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->sock = sock;
    w->fn = fn;
    w->arg = arg;
    zsock_set_rcvtimeo(sock, 0); /* fn's reads never wait */
    if (sd_event_add_io(d->loop, &w->io, zsock_fd(sock), EPOLLIN, on_watch_io, d) < 0) {
        free(w);
        return -1;
    }
    d->watches[d->n_watches++] = w;
    if (d->defer)
        sd_event_source_set_enabled(d->defer, SD_EVENT_ONESHOT); /* it may already hold messages */
    return 0;
}

void
av_daemon_unwatch(av_daemon_t *d, zsock_t *sock)
{
    for (uint32_t i = 0; i < d->n_watches; i++)
        if (d->watches[i]->sock == sock)
            d->watches[i]->dead = true;
}

void
av_watches_close(av_daemon_t *d)
{
    for (uint32_t i = 0; i < d->n_watches; i++)
        d->watches[i]->dead = true;
    compact_watches(d);
}

/* ---- timers ------------------------------------------------------------- */

typedef struct {
    av_daemon_t *d;
    av_timer_fn fn;
    void *arg;
    uint64_t interval_us;
} av_timer_t;

static int
on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
    av_timer_t *t = userdata;
    sd_event_source_set_time(s, usec + t->interval_us);
    sd_event_source_set_enabled(s, SD_EVENT_ON);
    t->fn(t->d, t->arg);
    return 0;
}

static void
free_timer(void *userdata)
{
    free(userdata);
}

sd_event_source *
av_daemon_every(av_daemon_t *d, uint64_t interval_ms, av_timer_fn fn, void *arg)
{
    sd_event_source *s = NULL;
    av_timer_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    *t = (av_timer_t){ d, fn, arg, interval_ms * 1000 };
    if (sd_event_add_time_relative(d->loop, &s, CLOCK_MONOTONIC, t->interval_us, 1000, on_timer, t) < 0) {
        free(t);
        return NULL;
    }
    sd_event_source_set_destroy_callback(s, free_timer);
    return s;
}

/* ---- stopping ----------------------------------------------------------- */

void
av_daemon_drained(av_daemon_t *d)
{
    if (d->stopping)
        sd_event_exit(d->loop, 0);
}

static int
on_drain_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
    (void)s;
    (void)usec;
    av_daemon_t *d = userdata;
    av_log_warning("drain not finished within %u ms; stopping anyway", av_daemon_process(d)->drain_ms);
    sd_event_exit(d->loop, 0);
    return 0;
}

static void
begin_stop(av_daemon_t *d, const char *why)
{
    if (d->stopping) {
        av_log_notice("%s again while draining: stopping now", why);
        sd_event_exit(d->loop, 0);
        return;
    }
    d->stopping = true;
    av_log_notice("%s: stopping", why);
    sd_notify(0, "STOPPING=1");
    int done = d->hooks->on_stop ? d->hooks->on_stop(d) : 1;
    if (done) {
        sd_event_exit(d->loop, 0);
        return;
    }
    sd_event_add_time_relative(d->loop, &d->drain_timer, CLOCK_MONOTONIC,
                               (uint64_t)av_daemon_process(d)->drain_ms * 1000, 1000, on_drain_timeout, d);
}

static int
on_stop_requested(sd_event_source *s, void *userdata)
{
    (void)s;
    begin_stop(userdata, "stop asked on the control endpoint");
    return 0;
}

/* `availctl stop`: a graceful stop, as SIGTERM, for whoever may use the
 * control endpoint (also when signals cannot reach us: another user, a
 * PID namespace). It starts in the next loop turn, after the reply is out. */
static int
control_stop(av_daemon_t *d, const msgpack_object *request, msgpack_packer *reply, char *err, size_t errlen)
{
    (void)request;
    if (sd_event_add_defer(d->loop, NULL, on_stop_requested, d) < 0) {
        snprintf(err, errlen, "cannot schedule the stop");
        return -1;
    }
    av_pack_ctl_reply_begin(reply, true, NULL, 1);
    av_pack_kv_uint(reply, "pid", (uint64_t)getpid());
    return 0;
}

void
av_daemon_count_work(av_daemon_t *d, uint64_t n)
{
    uint64_t max = av_daemon_process(d)->max_requests;
    *d->work_done += n;
    if (max && *d->work_done >= max && !d->stopping) {
        d->exit_status = AV_EXIT_RECYCLE;
        begin_stop(d, "max_requests reached, recycling");
    }
}

/* ---- signals ------------------------------------------------------------ */

static int
on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
    (void)s;
    av_daemon_t *d = userdata;
    char err[AV_CONFIG_ERR_MAX];
    switch (si->ssi_signo) {
    case SIGTERM:
    case SIGINT:
        begin_stop(d, si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    case SIGHUP:
        sd_notify(0, "RELOADING=1");
        av_daemon_reload(d, err, sizeof err);
        sd_notify(0, "READY=1");
        break;
    case SIGCHLD:
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ; /* no zombies, whoever the child was */
        break;
    }
    return 0;
}

/* ---- privileges, pid file, daemonize ----------------------------------- */

static int
resolve_user(av_daemon_t *d)
{
    const av_process_cfg_t *p = av_daemon_process(d);
    d->uid = getuid();
    d->gid = getgid();
    if (!p->user && !p->group)
        return 0;
    if (p->user) {
        struct passwd *pw = getpwnam(p->user);
        if (!pw) {
            av_log_err("user '%s' does not exist", p->user);
            return -1;
        }
        d->uid = pw->pw_uid;
        d->gid = pw->pw_gid;
    }
    if (p->group) {
        struct group *gr = getgrnam(p->group);
        if (!gr) {
            av_log_err("group '%s' does not exist", p->group);
            return -1;
        }
        d->gid = gr->gr_gid;
    }
    if (geteuid() == 0)
        d->drop_privileges = d->uid != 0 || d->gid != 0;
    else if (d->uid != geteuid())
        av_log_notice("not started as root: staying uid %d instead of user '%s'", (int)geteuid(),
                      p->user ? p->user : "?");
    return 0;
}

void
av_daemon_own(av_daemon_t *d, const char *path)
{
    if (d->drop_privileges && chown(path, d->uid, d->gid) < 0)
        av_log_warning("cannot give %s to uid %d: %s", path, (int)d->uid, strerror(errno));
}

static int
drop_privileges(av_daemon_t *d)
{
    if (!d->drop_privileges)
        return 0;
    const av_process_cfg_t *p = av_daemon_process(d);
    /* A new uid or gid clears the parent-death signal that availctl run
     * sets: set it again, and stop if the parent died meanwhile. */
    int pdeathsig = 0;
    pid_t parent = getppid();
    prctl(PR_GET_PDEATHSIG, &pdeathsig, 0, 0, 0);
    if ((p->user ? initgroups(p->user, d->gid) : setgroups(0, NULL)) < 0 || setgid(d->gid) < 0 ||
        setuid(d->uid) < 0) {
        av_log_err("cannot drop privileges to uid %d gid %d: %s", (int)d->uid, (int)d->gid, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        av_log_err("privileges not dropped: could regain root");
        return -1;
    }
    if (pdeathsig > 0 && (prctl(PR_SET_PDEATHSIG, pdeathsig, 0, 0, 0) < 0 || getppid() != parent))
        kill(getpid(), pdeathsig); /* blocked: the loop's signalfd reads it */
    av_log_info("running as uid %d gid %d", (int)getuid(), (int)getgid());
    return 0;
}

static int
mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return -1;
    for (char *s = buf + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(buf, mode) < 0 && errno != EEXIST ? -1 : 0;
}

static int
prepare_dirs(av_daemon_t *d)
{
    const char *dirs[] = { d->cfg->runtime_dir, d->cfg->state_dir };
    for (int i = 0; i < 2; i++) {
        if (mkdir_p(dirs[i], 0750) < 0) {
            av_log_err("cannot create %s: %s", dirs[i], strerror(errno));
            return -1;
        }
        av_daemon_own(d, dirs[i]);
    }
    return 0;
}

/* ---- the instance lock ---------------------------------------------------
 * A daemon whose supervisor died (a SIGKILLed availctl run) or a copy
 * started by hand beside a running one would share the runtime_dir's ipc
 * files, databases and ports with it: the copy refuses to start instead.
 * The lock file is never removed: a removed file would let two instances
 * each lock a file of the same name. */

int
av_daemon_lock_path(const av_config_t *cfg, const char *ident, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/availd-%s.lock", cfg->runtime_dir, ident);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* The pid a lock file holds, or 0. */
static pid_t
lock_file_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && pid < INT32_MAX && (*end == '\n' || *end == '\0') ? (pid_t)pid : 0;
}

int
av_lock_take(const char *path, pid_t *holder)
{
    *holder = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    struct flock whole = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    if (fcntl(fd, F_OFD_SETLK, &whole) < 0) {
        int err = errno == EAGAIN || errno == EACCES ? EEXIST : errno;
        *holder = lock_file_pid(fd);
        close(fd);
        return -err;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int err = errno ? errno : EIO;
        close(fd);
        return -err;
    }
    return fd;
}

int
av_lock_holder(const char *path, pid_t *holder)
{
    *holder = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    /* F_OFD_GETLK only looks: it says who would block us, and takes nothing. */
    struct flock whole = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    int rc = fcntl(fd, F_OFD_GETLK, &whole) < 0 ? -errno : whole.l_type != F_UNLCK;
    if (rc == 1)
        *holder = lock_file_pid(fd);
    close(fd);
    return rc;
}

void
av_lock_release(int *fd)
{
    if (*fd < 0)
        return;
    if (ftruncate(*fd, 0) < 0)
        av_log_warning("cannot empty a lock file: %s", strerror(errno));
    close(*fd);
    *fd = -1;
}

/* Returns 0, AV_EXIT_RUNNING when another instance holds the lock, or -1. */
static int
take_instance_lock(av_daemon_t *d)
{
    char path[4096];
    pid_t holder;
    if (av_daemon_lock_path(d->cfg, d->ident, path, sizeof path) < 0) {
        av_log_err("lock file path for %s too long", d->ident);
        return -1;
    }
    int fd = av_lock_take(path, &holder);
    if (fd == -EEXIST) {
        char pid[16] = "?";
        if (holder > 0)
            snprintf(pid, sizeof pid, "%d", (int)holder);
        av_log_err("availd-%s is already running with runtime_dir %s: pid %s holds %s (stop it first: "
                   "availctl stop %s, or kill %s)",
                   d->ident, d->cfg->runtime_dir, pid, path, d->ident, pid);
        return AV_EXIT_RUNNING;
    }
    if (fd < 0) {
        av_log_err("cannot lock %s: %s", path, strerror(-fd));
        return -1;
    }
    av_daemon_own(d, path);
    d->lock_fd = fd;
    return 0;
}

/* Returns 0, AV_EXIT_RUNNING when another instance holds the pid file, or -1. */
static int
write_pid_file(av_daemon_t *d)
{
    const char *path = av_daemon_process(d)->pid_file;
    d->pid_fd = -1;
    if (!path || !*path)
        return 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        av_log_err("cannot open pid file %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char buf[32] = "";
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        av_log_err("already running (pid file %s is locked by pid %s)", path, buf[0] ? buf : "?");
        close(fd);
        return AV_EXIT_RUNNING;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        av_log_err("cannot write pid file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    av_daemon_own(d, path);
    d->pid_fd = fd;
    return 0;
}

static void
remove_pid_file(av_daemon_t *d)
{
    if (d->pid_fd < 0)
        return;
    const char *path = av_daemon_process(d)->pid_file;
    if (unlink(path) < 0)
        av_log_warning("cannot remove pid file %s: %s", path, strerror(errno));
    close(d->pid_fd);
    d->pid_fd = -1;
}

/* Forks twice with setsid between, so the daemon is no session leader and
 * cannot regain a terminal. The first parent waits until the daemon says it
 * is up (or failed), so its exit status means something to a script. */
static int
daemonize(av_daemon_t *d)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        char status = 1;
        close(pipefd[1]);
        ssize_t n;
        do
            n = read(pipefd[0], &status, 1);
        while (n < 0 && errno == EINTR);
        waitpid(pid, NULL, 0);
        _exit(n == 1 ? status : 1);
    }
    close(pipefd[0]);
    if (setsid() < 0)
        _exit(1);
    pid = fork();
    if (pid < 0)
        _exit(1);
    if (pid > 0)
        _exit(0);
    if (chdir("/") < 0)
        _exit(1);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        bool stderr_logs = false;
        const av_process_cfg_t *p = av_daemon_process(d);
        for (uint32_t i = 0; i < p->n_log; i++)
            stderr_logs |= p->log[i].kind == AV_LOG_STDERR;
        if (!stderr_logs)
            dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO)
            close(null);
    }
    d->ready_fd = pipefd[1];
    return 0;
}

static void
tell_parent(av_daemon_t *d, char status)
{
    if (d->ready_fd < 0)
        return;
    ssize_t n = write(d->ready_fd, &status, 1);
    (void)n;
    close(d->ready_fd);
    d->ready_fd = -1;
}

/* ---- main --------------------------------------------------------------- */

static void
usage(const av_daemon_hooks_t *h, FILE *out)
{
    fprintf(out,
            "usage: availd-%s [-c FILE] [-n] [-f]%s%s%s\n"
            "%s\n\n"
            "  -c, --config FILE   configuration (default $AVAILD_CONFIG or %s)\n"
            "  -n, --check         check the configuration, print 'configuration OK' or the error, exit\n"
            "  -f, --foreground    stay in the foreground even when process.daemonize is set\n",
            h->name, h->instance_required ? " --" : "", h->instance_required ? h->instance_option : "",
            h->instance_required ? " NAME" : "", h->summary, AVAILD_DEFAULT_CONFIG);
    if (h->instance_required)
        fprintf(out, "  -r, --%s NAME     the instance to run\n", h->instance_option);
    fprintf(out, "  -V, --version       print the version\n"
                 "  -h, --help          this text\n\n"
                 "Signals: TERM/INT drain and stop, HUP reloads the configuration.\n");
}

static void
make_ident(av_daemon_t *d)
{
    if (d->instance[0])
        snprintf(d->ident, sizeof d->ident, "%s-%s", d->hooks->name, d->instance);
    else
        snprintf(d->ident, sizeof d->ident, "%s", d->hooks->name);
}

static int
setup_loop(av_daemon_t *d)
{
    int rc = sd_event_new(&d->loop);
    if (rc < 0)
        return rc;
    const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if ((rc = sd_event_add_signal(d->loop, NULL, sigs[i], on_signal, d)) < 0)
            return rc;
    if ((rc = sd_event_add_post(d->loop, &d->post, on_post, d)) < 0)
        return rc;
    if ((rc = sd_event_add_defer(d->loop, &d->defer, on_post, d)) < 0)
        return rc;
    sd_event_source_set_enabled(d->defer, SD_EVENT_OFF);
    /* Pings the service manager from the loop itself when WatchdogSec= is
     * set: a hung loop stops the pings and systemd restarts the daemon. */
    return sd_event_set_watchdog(d->loop, true);
}

/* A socket file left behind reads as a daemon that died ("stale socket" in
 * availctl status). Removed while the instance lock is still held, so never
 * a file that a next instance has bound. */
void
av_daemon_remove_bound_files(av_daemon_t *d)
{
    for (uint32_t i = 0; i < d->n_bound_files; i++) {
        if (unlink(d->bound_files[i]) < 0 && errno != ENOENT)
            av_log_info("cannot remove %s: %s", d->bound_files[i], strerror(errno));
        free(d->bound_files[i]);
    }
    d->n_bound_files = 0;
}

static void
teardown(av_daemon_t *d)
{
    av_watches_close(d);
    sd_event_source_disable_unref(d->post);
    sd_event_source_disable_unref(d->defer);
    sd_event_source_disable_unref(d->drain_timer);
    av_control_close(d);
    av_reporter_close(d);
    av_zap_close(d);
    if (d->loop)
        sd_event_unref(d->loop);
    remove_pid_file(d);
    av_daemon_remove_bound_files(d);
    av_lock_release(&d->lock_fd);
    av_config_free(&d->cfg);
    free(d->config_path);
}

int
av_daemon_main(int argc, char **argv, const av_daemon_hooks_t *hooks)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' }, { "check", no_argument, NULL, 'n' },
        { "foreground", no_argument, NULL, 'f' },  { "registry", required_argument, NULL, 'r' },
        { "group", required_argument, NULL, 'r' },
        { "version", no_argument, NULL, 'V' },     { "help", no_argument, NULL, 'h' },
        { "restart-keys", no_argument, NULL, 'K' },
        { NULL, 0, NULL, 0 },
    };
    av_daemon_t daemon = { .hooks = hooks, .pid_fd = -1, .ready_fd = -1, .lock_fd = -1 };
    av_daemon_t *d = &daemon;
    const char *config_path = getenv("AVAILD_CONFIG") ? getenv("AVAILD_CONFIG") : AVAILD_DEFAULT_CONFIG;
    bool check_only = false, foreground = false;
    int opt;

    while ((opt = getopt_long(argc, argv, "c:nfr:Vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'n': check_only = true; break;
        case 'f': foreground = true; break;
        case 'r':
            if (!hooks->instance_required || strlen(optarg) >= sizeof d->instance) {
                usage(hooks, stderr);
                return 2;
            }
            snprintf(d->instance, sizeof d->instance, "%s", optarg);
            break;
        case 'V': printf("availd-%s %s\n", hooks->name, AVAILD_VERSION); return 0;
        case 'h': usage(hooks, stdout); return 0;
        case 'K': av_daemon_print_restart_keys(hooks, stdout); return 0;
        default: usage(hooks, stderr); return 2;
        }
    }
    if (optind != argc || (hooks->instance_required && !d->instance[0])) {
        usage(hooks, stderr);
        return 2;
    }
    make_ident(d);

    char err[AV_CONFIG_ERR_MAX];
    if (av_config_load(config_path, &d->cfg, err, sizeof err) < 0) {
        fprintf(stderr, "availd-%s: %s\n", hooks->name, err);
        return AV_EXIT_CONFIG;
    }
    if (hooks->instance_check && hooks->instance_check(d->cfg, d->instance, err, sizeof err) < 0) {
        fprintf(stderr, "availd-%s: %s\n", hooks->name, err);
        av_config_free(&d->cfg);
        return AV_EXIT_CONFIG;
    }
    if (check_only) {
        printf("configuration OK\n");
        av_config_free(&d->cfg);
        return 0;
    }
    d->config_path = strdup(config_path);
    d->work_done = av_daemon_counter(d, "work_done");
    d->reloads = av_daemon_counter(d, "reloads");
    d->reloads_refused = av_daemon_counter(d, "reloads_refused");
    d->started_mono_us = av_mono_us();
    d->started_ms = av_now_ms();
    av_daemon_apply_logging(d);
    const av_process_cfg_t *p = av_daemon_process(d);
    if (p->daemon_name)
        prctl(PR_SET_NAME, p->daemon_name, 0, 0, 0);

    /* Signals are blocked before the first ZeroMQ socket starts its I/O
     * threads, so they inherit the mask and every signal reaches the loop's
     * signalfd; CZMQ's own handlers would fight ours. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    zsys_handler_set(NULL);

    int status = 1;
    if (p->daemonize && !foreground && daemonize(d) < 0) {
        av_log_err("cannot daemonize: %s", strerror(errno));
        goto out;
    }
    if (resolve_user(d) < 0 || prepare_dirs(d) < 0)
        goto out;
    /* Before any socket is bound or database opened: a second instance
     * must not touch the first one's. */
    int rc = take_instance_lock(d);
    if (rc == 0)
        rc = write_pid_file(d);
    if (rc != 0) {
        status = rc == AV_EXIT_RUNNING ? AV_EXIT_RUNNING : 1;
        goto out;
    }
    rc = setup_loop(d);
    if (rc < 0) {
        av_log_err("cannot set up the event loop: %s", strerror(-rc));
        goto out;
    }
    if (av_reporter_open(d) < 0 || av_control_open(d) < 0 || av_daemon_command(d, "stop", control_stop) < 0)
        goto out;
    d->initialised = true; /* fini runs even after a failed init */
    if (hooks->init && hooks->init(d) < 0) {
        av_log_err("start failed");
        goto out;
    }
    if (drop_privileges(d) < 0)
        goto out;
    av_log_notice("availd-%s %s started (pid %d, config %s)", d->ident, AVAILD_VERSION, (int)getpid(),
                  d->config_path);
    if (!d->status_text[0])
        snprintf(d->status_text, sizeof d->status_text, "running");
    sd_notifyf(0, "READY=1\nSTATUS=%s\nMAINPID=%d", d->status_text, (int)getpid());
    tell_parent(d, 0);
    rc = sd_event_loop(d->loop);
    status = rc < 0 ? 1 : d->exit_status;
    if (rc < 0)
        av_log_err("event loop failed: %s", strerror(-rc));
out:
    tell_parent(d, (char)status);
    if (d->initialised && hooks->fini)
        hooks->fini(d);
    if (status == 0)
        av_log_notice("stopped");
    teardown(d);
    av_log_close();
    zsys_shutdown();
    return status;
}
