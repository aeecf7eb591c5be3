/* The logger. One per process, like stderr; reset by av_log_close. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include "av_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

typedef struct {
    av_log_kind_t kind;
    char *path;
    int fd;
} target_t;

static struct {
    char ident[64];
    target_t targets[AV_LOG_TARGETS_MAX];
    uint32_t n_targets;
    int level;
    bool syslog_open;
    bool under_systemd; /* stderr goes to the journal: use <N> prefixes */
} logger = { "availd", { { AV_LOG_STDERR, NULL, -1 } }, 1, AV_LOG_NOTICE, false, false };

static const int syslog_priority[] = { LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG };
static const char *const level_word[] = { "error", "warning", "notice", "info", "debug" };

static void
close_targets(void)
{
    for (uint32_t i = 0; i < logger.n_targets; i++) {
        if (logger.targets[i].fd >= 0)
            close(logger.targets[i].fd);
        free(logger.targets[i].path);
    }
    logger.n_targets = 0;
    if (logger.syslog_open)
        closelog();
    logger.syslog_open = false;
}

static int
open_file(target_t *t)
{
    t->fd = open(t->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    return t->fd < 0 ? -1 : 0;
}

int
av_log_open(const char *ident, const av_log_target_t *targets, uint32_t n_targets, int level)
{
    int rc = 0;
    close_targets();
    snprintf(logger.ident, sizeof logger.ident, "%s", ident ? ident : "availd");
    av_log_set_level(level);
    /* systemd sets JOURNAL_STREAM when stderr is connected to the journal. */
    logger.under_systemd = getenv("JOURNAL_STREAM") != NULL;
    for (uint32_t i = 0; i < n_targets && i < AV_LOG_TARGETS_MAX; i++) {
        target_t *t = &logger.targets[logger.n_targets];
        t->kind = targets[i].kind;
        t->fd = -1;
        t->path = targets[i].path ? strdup(targets[i].path) : NULL;
        if (t->kind == AV_LOG_FILE && (!t->path || open_file(t) < 0)) {
            fprintf(stderr, "%s: cannot open log file %s: %s\n", logger.ident,
                    targets[i].path ? targets[i].path : "?", strerror(errno));
            free(t->path);
            rc = -1;
            continue;
        }
        if (t->kind == AV_LOG_SYSLOG && !logger.syslog_open) {
            openlog(logger.ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
            logger.syslog_open = true;
        }
        logger.n_targets++;
    }
    return rc;
}

void
av_log_set_level(int level)
{
    logger.level = level < AV_LOG_ERR ? AV_LOG_ERR : level > AV_LOG_DEBUG ? AV_LOG_DEBUG : level;
}

int
av_log_level(void)
{
    return logger.level;
}

void
av_log_reopen(void)
{
    for (uint32_t i = 0; i < logger.n_targets; i++) {
        target_t *t = &logger.targets[i];
        if (t->kind != AV_LOG_FILE)
            continue;
        if (t->fd >= 0)
            close(t->fd);
        open_file(t);
    }
}

void
av_log_close(void)
{
    close_targets();
    snprintf(logger.ident, sizeof logger.ident, "availd");
    logger.targets[0] = (target_t){ AV_LOG_STDERR, NULL, -1 };
    logger.n_targets = 1;
    logger.level = AV_LOG_NOTICE;
    logger.under_systemd = false;
}

static void
write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* nowhere to report a failing log */
        buf += n;
        len -= (size_t)n;
    }
}

static size_t
timestamp(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
    return n;
}

void
av_vlog(int level, const char *fmt, va_list ap)
{
    if (level > logger.level)
        return;
    if (level < AV_LOG_ERR)
        level = AV_LOG_ERR;
    if (level > AV_LOG_DEBUG)
        level = AV_LOG_DEBUG;
    char msg[LOG_LINE_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    for (uint32_t i = 0; i < logger.n_targets; i++) {
        target_t *t = &logger.targets[i];
        char line[LOG_LINE_MAX + 128];
        int n;
        switch (t->kind) {
        case AV_LOG_STDERR:
            if (logger.under_systemd)
                n = snprintf(line, sizeof line, "<%d>%s\n", syslog_priority[level], msg);
            else {
                char ts[40];
                timestamp(ts, sizeof ts);
                n = snprintf(line, sizeof line, "%s %s[%d]: %s: %s\n", ts, logger.ident, (int)getpid(),
                             level_word[level], msg);
            }
            write_all(STDERR_FILENO, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
            break;
        case AV_LOG_FILE: {
            char ts[40];
            timestamp(ts, sizeof ts);
            n = snprintf(line, sizeof line, "%s %s[%d]: %s: %s\n", ts, logger.ident, (int)getpid(), level_word[level],
                         msg);
            if (t->fd >= 0)
                write_all(t->fd, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
            break;
        }
        case AV_LOG_SYSLOG:
            syslog(syslog_priority[level], "%s", msg);
            break;
        case AV_LOG_JOURNALD:
            sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", syslog_priority[level], "SYSLOG_IDENTIFIER=%s",
                            logger.ident, NULL);
            break;
        }
    }
}

void
av_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    av_vlog(level, fmt, ap);
    va_end(ap);
}
