/* The running constellation's config, for availctl without -c: `availctl
 * run` leaves a symlink to its config where this user's availctl looks
 * (RUNTIME/availd-config: $XDG_RUNTIME_DIR, else /run for root, else
 * /tmp/availd-UID, a directory of this user's own), and removes it when it
 * stops. And the socket files a stopped constellation left behind. */
#include "availctl.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* The directory of the hint; with create, made (0700) when missing. A
 * directory in /tmp counts only when it is ours and no one else may write
 * it, so that another user cannot point our availctl elsewhere. */
static int
hint_dir(char *out, size_t size, bool create)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && xdg[0] == '/') {
        snprintf(out, size, "%s", xdg);
        return 0;
    }
    if (geteuid() == 0) {
        snprintf(out, size, "/run");
        return 0;
    }
    snprintf(out, size, "/tmp/availd-%u", (unsigned)geteuid());
    if (create && mkdir(out, 0700) < 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (lstat(out, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return -1;
    return 0;
}

int
ctl_current_path(char *out, size_t size)
{
    char dir[PATH_MAX];
    if (hint_dir(dir, sizeof dir, false) < 0)
        return -1;
    snprintf(out, size, "%s/availd-config", dir);
    return 0;
}

const char *
ctl_current_config(char *out, size_t size)
{
    char link[PATH_MAX];
    if (ctl_current_path(link, sizeof link) < 0)
        return NULL;
    ssize_t n = readlink(link, out, size - 1);
    if (n <= 0)
        return NULL;
    out[n] = '\0';
    return access(out, R_OK) == 0 ? out : NULL;
}

void
ctl_current_set(const char *config_path)
{
    char dir[PATH_MAX], link[PATH_MAX + 32], tmp[PATH_MAX + 64], target[PATH_MAX];
    if (hint_dir(dir, sizeof dir, true) < 0 || !realpath(config_path, target))
        return;
    snprintf(link, sizeof link, "%s/availd-config", dir);
    snprintf(tmp, sizeof tmp, "%s/.availd-config.%ld", dir, (long)getpid());
    unlink(tmp);
    if (symlink(target, tmp) < 0 || rename(tmp, link) < 0)
        unlink(tmp);
}

void
ctl_current_clear(const char *config_path)
{
    char link[PATH_MAX], target[PATH_MAX], ours[PATH_MAX];
    if (ctl_current_path(link, sizeof link) < 0 || !realpath(config_path, ours))
        return;
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return;
    target[n] = '\0';
    if (strcmp(target, ours) == 0) /* another run's since: leave it */
        unlink(link);
}

int
ctl_remove_stale_sockets(const char *runtime_dir)
{
    DIR *d = opendir(runtime_dir);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".sock") != 0)
            continue;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", runtime_dir, e->d_name) >=
            sizeof sa.sun_path)
            continue;
        struct stat st;
        if (lstat(sa.sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
            continue;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        /* Only a socket nothing listens on any more is stale. */
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno == ECONNREFUSED &&
            unlink(sa.sun_path) == 0)
            removed++;
        close(fd);
    }
    closedir(d);
    return removed;
}
