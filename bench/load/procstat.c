/* What the watched daemons cost: CPU seconds from /proc/PID/stat (read at
 * the start and end of the measured run), resident memory from
 * /proc/PID/status, and our own CPU from getrusage (it includes ZeroMQ's
 * I/O thread, which does much of a ZeroMQ client's work). */
#include "load.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define PROC_LINE_BYTES 4096
/* Processes a --watch-tree scan follows (a pre-forking server has tens). */
#define TREE_PROCS_MAX  4096

/* Reads up to size-1 bytes of a small /proc file; returns the length or -1. */
static ssize_t
read_small(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* Fields of /proc/PID/stat after the command name: the ppid (field 4) and
 * utime, stime, cutime, cstime (fields 14 to 17), in clock ticks. */
static int
read_stat(pid_t pid, pid_t *ppid, unsigned long long ticks[4])
{
    char path[64], buf[PROC_LINE_BYTES];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof buf) < 0)
        return -1;
    /* The command name may hold spaces and parentheses: fields start after
     * the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    for (int field = 3; field <= 17; field++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return -1;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (field == 4 && ppid)
            *ppid = (pid_t)v;
        if (field >= 14)
            ticks[field - 14] = v;
        p = end;
        while (*p && *p != ' ')
            p++;
    }
    return 0;
}

static double
ticks_s(unsigned long long ticks)
{
    long hz = sysconf(_SC_CLK_TCK);
    return (double)ticks / (double)(hz > 0 ? hz : 100);
}

int
procstat_cpu_s(pid_t pid, double *cpu_s)
{
    unsigned long long ticks[4];
    if (read_stat(pid, NULL, ticks) < 0)
        return -1;
    *cpu_s = ticks_s(ticks[0] + ticks[1]);
    return 0;
}

int
procstat_memory_kb(pid_t pid, uint64_t *rss_kb, uint64_t *hwm_kb)
{
    char path[64], buf[PROC_LINE_BYTES];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (read_small(path, buf, sizeof buf) < 0)
        return -1;
    const char *rss = strstr(buf, "\nVmRSS:");
    const char *hwm = strstr(buf, "\nVmHWM:");
    *rss_kb = rss ? strtoull(rss + 7, NULL, 10) : 0;
    *hwm_kb = hwm ? strtoull(hwm + 7, NULL, 10) : 0;
    return 0;
}

/* pid and its descendants: fills tree[] (pid first), returns how many, or
 * -1 when pid is gone. One pass over /proc collects every process's
 * parent; then the tree is grown breadth first. */
static int
tree_of(pid_t pid, pid_t *tree, int max)
{
    static pid_t pids[TREE_PROCS_MAX * 16], ppids[TREE_PROCS_MAX * 16];
    int n_all = 0;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return -1;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    struct dirent *de;
    while ((de = readdir(d)) && n_all < (int)(sizeof pids / sizeof pids[0])) {
        char *end;
        long v = strtol(de->d_name, &end, 10);
        if (*end || v <= 0)
            continue;
        unsigned long long ticks[4];
        pid_t ppid;
        if (read_stat((pid_t)v, &ppid, ticks) < 0)
            continue;
        pids[n_all] = (pid_t)v;
        ppids[n_all++] = ppid;
    }
    closedir(d);
    int n = 0;
    tree[n++] = pid;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n_all && n < max; j++)
            if (ppids[j] == tree[i] && pids[j] != pid)
                tree[n++] = pids[j];
    return n;
}

int
procstat_tree_cpu_s(pid_t pid, double *cpu_s, uint32_t *procs)
{
    static pid_t tree[TREE_PROCS_MAX];
    int n = tree_of(pid, tree, TREE_PROCS_MAX);
    unsigned long long total = 0;
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        unsigned long long ticks[4];
        if (read_stat(tree[i], NULL, ticks) < 0) {
            if (i == 0)
                return -1;
            continue; /* exited since the scan: its time is now its parent's */
        }
        total += ticks[0] + ticks[1] + ticks[2] + ticks[3];
    }
    *cpu_s = ticks_s(total);
    if (procs)
        *procs = (uint32_t)n;
    return 0;
}

int
procstat_tree_memory_kb(pid_t pid, uint64_t *rss_kb, uint64_t *hwm_kb, uint32_t *procs)
{
    static pid_t tree[TREE_PROCS_MAX];
    int n = tree_of(pid, tree, TREE_PROCS_MAX);
    if (n < 0)
        return -1;
    *rss_kb = *hwm_kb = 0;
    for (int i = 0; i < n; i++) {
        uint64_t rss, hwm;
        if (procstat_memory_kb(tree[i], &rss, &hwm) == 0) {
            *rss_kb += rss;
            *hwm_kb += hwm;
        }
    }
    if (procs)
        *procs = (uint32_t)n;
    return 0;
}

void
procstat_label(pid_t pid, char *out, size_t size)
{
    char path[64], buf[PROC_LINE_BYTES];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    ssize_t n = read_small(path, buf, sizeof buf);
    if (n <= 0) {
        snprintf(out, size, "pid %d", (int)pid);
        return;
    }
    /* argv[0]'s base name, and a querier's registry: availctl run starts
     * "availd-querier -f -c FILE --registry NAME". */
    const char *argv0 = buf;
    const char *slash = strrchr(argv0, '/');
    const char *base = slash ? slash + 1 : argv0;
    const char *registry = NULL;
    /* An interpreter: its script says more (perl availd-old.pl ...). */
    if ((strcmp(base, "perl") == 0 || strncmp(base, "python", 6) == 0 || strcmp(base, "sh") == 0) &&
        argv0 + strlen(argv0) + 1 < buf + n) {
        const char *script = argv0 + strlen(argv0) + 1;
        if (script[0] != '-') {
            slash = strrchr(script, '/');
            base = slash ? slash + 1 : script;
        }
    }
    for (const char *a = buf; a < buf + n; a += strlen(a) + 1)
        if (strcmp(a, "--registry") == 0 && a + strlen(a) + 1 < buf + n)
            registry = a + strlen(a) + 1;
    if (registry)
        snprintf(out, size, "%.40s@%.20s", base, registry);
    else
        snprintf(out, size, "%.60s", base);
}

double
procstat_self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

int
procstat_machine_busy_s(double *busy_s, uint32_t *cpus)
{
    static char buf[1 << 16]; /* the cpuN lines come first; "intr" is long */
    if (read_small("/proc/stat", buf, sizeof buf) < 0 || strncmp(buf, "cpu ", 4) != 0)
        return -1;
    /* cpu  user nice system idle iowait irq softirq steal ... */
    unsigned long long v[8] = { 0 };
    const char *p = buf + 4;
    for (int i = 0; i < 8; i++) {
        char *end;
        v[i] = strtoull(p, &end, 10);
        if (end == p)
            break;
        p = end;
    }
    *busy_s = ticks_s(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
    /* Lines cpu0, cpu1, ... follow. */
    uint32_t n = 0;
    for (const char *q = strstr(buf, "\ncpu"); q; q = strstr(q + 1, "\ncpu"))
        n++;
    *cpus = n ? n : 1;
    return 0;
}
