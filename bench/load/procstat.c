/* What the watched daemons cost: CPU seconds from /proc/PID/stat (read at
 * the start and end of the measured run), resident memory from
 * /proc/PID/status, and our own CPU from getrusage (it includes ZeroMQ's
 * I/O thread, which does much of a ZeroMQ client's work). */
#include "load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define PROC_LINE_BYTES 4096

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

int
procstat_cpu_s(pid_t pid, double *cpu_s)
{
    char path[64], buf[PROC_LINE_BYTES];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof buf) < 0)
        return -1;
    /* The command name may hold spaces and parentheses: fields start after
     * the last ')'. utime and stime are fields 14 and 15 of the line, so
     * the 12th and 13th after the name. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    unsigned long long ticks[2] = { 0, 0 };
    for (int field = 3; field <= 15; field++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return -1;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (field == 14 || field == 15)
            ticks[field - 14] = v;
        p = end;
        while (*p && *p != ' ')
            p++;
    }
    long hz = sysconf(_SC_CLK_TCK);
    *cpu_s = (double)(ticks[0] + ticks[1]) / (double)(hz > 0 ? hz : 100);
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
