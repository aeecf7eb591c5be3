/*
 * NAME
 *   availd-generator - enable the queriers and intake sockets availd.yaml names
 *
 * SUMMARY
 *   /usr/lib/systemd/system-generators/availd-generator NORMAL_DIR [EARLY_DIR LATE_DIR]
 *
 * DESCRIPTION
 *   A systemd generator (systemd.generator(7)): systemd runs it at boot and
 *   on every `systemctl daemon-reload`. It reads availd.yaml
 *   ($AVAILD_CONFIG, else the installed default) and writes into
 *   NORMAL_DIR:
 *
 *   availd.target.wants/availd-querier@INSTANCE.service, one per querier
 *   process the config names (every group of `queriers:` and every
 *   registry of its own, NAME, NAME.2 ... as `queriers: N` asks), so
 *   `systemctl start availd.target` starts exactly those; no querier unit
 *   is enabled by hand.
 *
 *   availd-intake.socket.d/50-availd-yaml.conf, the socket unit's
 *   ListenStream= lines from endpoints.intake_pull, intake_router and
 *   intake_gateway (an ipc:// endpoint is its socket file, a tcp://HOST:PORT
 *   one its address), so the addresses are written once, in availd.yaml.
 *
 *   When availd.yaml has an `http:` section: availd-http.service and
 *   availd-http.socket in availd.target.wants, and
 *   availd-http.socket.d/50-availd-yaml.conf with ListenStream= from
 *   http.listen.
 *
 *   After editing availd.yaml: `systemctl daemon-reload`, then restart
 *   availd.target (or start the new querier units).
 *
 *   A config that does not load generates nothing: the error
 *   (file:line:column) goes to the kernel log, where systemd shows it,
 *   and the exit status is 1.
 *
 * FILES
 *   /etc/availd/availd.yaml
 *
 * SEE ALSO
 *   availd(7), availd-querier(8), availd-intake(8), systemd.generator(7)
 */
#include "av_config.h"
#include "av_proto.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* systemd (since 246) sends a system generator's stderr to the kernel
 * log, where its own early messages are. */
static void
report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("availd-generator: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int
make_dir(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        report("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int
mask_unit(const char *normal_dir, const char *daemon, const char *type)
{
    char link[PATH_MAX];
    snprintf(link, sizeof link, "%s/availd-%s.%s", normal_dir, daemon, type);
    if (symlink("/dev/null", link) < 0 && errno != EEXIST) {
        report("cannot mask %s: %s", link, strerror(errno));
        return -1;
    }
    return 0;
}

static int
enable_querier(const char *wants_dir, const char *instance)
{
    char link[PATH_MAX], target[PATH_MAX];
    if (snprintf(link, sizeof link, "%s/availd-querier@%s.service", wants_dir, instance) >= (int)sizeof link ||
        snprintf(target, sizeof target, "%s/availd-querier@.service", AVAILD_UNIT_PATH) >= (int)sizeof target) {
        report("querier instance name too long: %s", instance);
        return -1;
    }
    if (symlink(target, link) < 0 && errno != EEXIST) {
        report("cannot link %s: %s", link, strerror(errno));
        return -1;
    }
    return 0;
}

/* What ListenStream= takes for a ZeroMQ endpoint: the socket file of
 * ipc://PATH (already absolute), HOST:PORT of tcp:// ("*" is every address:
 * the port alone). 0 when it has none (an empty endpoint is off). */
static int
listen_address(const char *endpoint, char *out, size_t size)
{
    if (!endpoint || !*endpoint)
        return 0;
    if (strncmp(endpoint, "ipc://", 6) == 0)
        return snprintf(out, size, "%s", endpoint + 6) < (int)size ? 1 : -1;
    if (strncmp(endpoint, "tcp://", 6) == 0) {
        const char *hostport = endpoint + 6;
        if (strncmp(hostport, "*:", 2) == 0)
            hostport += 2;
        return snprintf(out, size, "%s", hostport) < (int)size ? 1 : -1;
    }
    return -1;
}

static int
enable_unit(const char *wants_dir, const char *unit)
{
    char link[PATH_MAX], target[PATH_MAX];
    snprintf(link, sizeof link, "%s/%s", wants_dir, unit);
    snprintf(target, sizeof target, "%s/%s", AVAILD_UNIT_PATH, unit);
    if (symlink(target, link) < 0 && errno != EEXIST) {
        report("cannot link %s: %s", link, strerror(errno));
        return -1;
    }
    return 0;
}

/* availd-http runs when availd.yaml has an http section: its units, and
 * its socket's address from http.listen. */
static int
write_http_units(const char *normal_dir, const char *wants_dir, const av_config_t *cfg)
{
    char dir[PATH_MAX], path[PATH_MAX], address[PATH_MAX];
    if (!cfg->http.enabled)
        return 0;
    if (enable_unit(wants_dir, "availd-http.service") < 0 || enable_unit(wants_dir, "availd-http.socket") < 0)
        return -1;
    if (listen_address(cfg->http.listen, address, sizeof address) != 1) {
        report("%s: http.listen %s cannot be a socket unit's ListenStream=", cfg->path, cfg->http.listen);
        return -1;
    }
    snprintf(dir, sizeof dir, "%s/availd-http.socket.d", normal_dir);
    if (make_dir(dir) < 0)
        return -1;
    snprintf(path, sizeof path, "%s/50-availd-yaml.conf", dir);
    FILE *f = fopen(path, "we");
    if (!f) {
        report("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "# Written by availd-generator from %s: edit that file, then\n"
               "# systemctl daemon-reload.\n[Socket]\nListenStream=\nListenStream=%s\n",
            cfg->path, address);
    if (fclose(f) != 0) {
        report("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int
write_socket_dropin(const char *normal_dir, const av_config_t *cfg)
{
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/availd-intake.socket.d", normal_dir);
    if (make_dir(dir) < 0)
        return -1;
    snprintf(path, sizeof path, "%s/50-availd-yaml.conf", dir);
    FILE *f = fopen(path, "we");
    if (!f) {
        report("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "# Written by availd-generator from %s: edit that file, then\n"
               "# systemctl daemon-reload.\n[Socket]\nListenStream=\n",
            cfg->path);
    const char *endpoints[] = { cfg->endpoints.intake_pull, cfg->endpoints.intake_router,
                                cfg->endpoints.intake_gateway };
    int rc = 0;
    for (size_t i = 0; i < sizeof endpoints / sizeof *endpoints; i++) {
        char address[PATH_MAX];
        int has = listen_address(endpoints[i], address, sizeof address);
        if (has < 0) {
            report("%s: endpoint %s cannot be a socket unit's ListenStream=", cfg->path, endpoints[i]);
            rc = -1;
        } else if (has) {
            fprintf(f, "ListenStream=%s\n", address);
        }
    }
    if (fclose(f) != 0) {
        report("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return rc;
}

int
main(int argc, char **argv)
{
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: availd-generator NORMAL_DIR [EARLY_DIR LATE_DIR]\n");
        return 2;
    }
    const char *normal_dir = argv[1];
    const char *path = getenv("AVAILD_CONFIG") ? getenv("AVAILD_CONFIG") : AVAILD_DEFAULT_CONFIG;
    av_config_t *cfg = NULL;
    char err[AV_CONFIG_ERR_MAX];
    if (av_config_load(path, &cfg, err, sizeof err) < 0) {
        report("%s; no availd units generated", err);
        return 1;
    }
    char wants_dir[PATH_MAX];
    snprintf(wants_dir, sizeof wants_dir, "%s/availd.target.wants", normal_dir);
    int rc = make_dir(wants_dir);
    for (uint32_t i = 0; rc == 0 && av_config_runs(cfg, AV_RUNS_QUERIER) && i < cfg->n_groups; i++) {
        const av_group_cfg_t *g = &cfg->groups[i];
        for (uint32_t n = 1; rc == 0 && n <= g->instances; n++) {
            char instance[AV_REGISTRY_MAX + 16];
            if (n == 1)
                snprintf(instance, sizeof instance, "%s", g->name);
            else
                snprintf(instance, sizeof instance, "%s.%u", g->name, n);
            rc = enable_querier(wants_dir, instance);
        }
    }
    /* runs: a daemon this host does not run is masked here, so that
     * availd.target's Wants= on it is a no-op (a querier host runs queriers). */
    for (int k = 0; rc == 0 && k < AV_RUNS_QUERIER; k++)
        if (!av_config_runs(cfg, (av_daemon_kind_t)k))
            rc = mask_unit(normal_dir, av_daemon_kind_name((av_daemon_kind_t)k), "service");
    if (rc == 0 && !av_config_runs(cfg, AV_RUNS_INTAKE))
        rc = mask_unit(normal_dir, "intake", "socket");
    else if (rc == 0)
        rc = write_socket_dropin(normal_dir, cfg);
    if (rc == 0)
        rc = write_http_units(normal_dir, wants_dir, cfg);
    av_config_free(&cfg);
    return rc == 0 ? 0 : 1;
}
