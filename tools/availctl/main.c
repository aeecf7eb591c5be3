/*
 * NAME
 *   availctl - control and query availd
 *
 * SUMMARY
 *   availctl [-c FILE] [--json] [--timeout MS] COMMAND [ARGS]
 *   availctl --version
 *   availctl help [COMMAND]
 *
 * DESCRIPTION
 *   availctl asks availd's daemons on their control endpoints, intake for
 *   answers and availd-errors for error events, as the configuration (-c
 *   FILE, default $AVAILD_CONFIG or /etc/availd/availd.yaml; when neither
 *   is there, the config of this user's running availctl run) names them.
 *   --json prints JSON, one object per line; --timeout MS bounds the wait
 *   for a daemon's control answer (default 2000).
 *
 * COMMANDS
 *   The commands are one table, in commands.c: availctl --help lists
 *   them, availctl help COMMAND shows one, and this section of the man
 *   page is printed from it by availctl --man-commands at build time.
 *
 * EXIT STATUS
 *   0 success; 1 the answer is negative (bad config, a daemon down);
 *   2 usage or connection errors.
 */
#include "availctl.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef AVAILD_VERSION
#define AVAILD_VERSION "0"
#endif
#ifndef AVAILD_DEFAULT_CONFIG
#define AVAILD_DEFAULT_CONFIG "/etc/availd/availd.yaml"
#endif

int
main(int argc, char **argv)
{
    /* --man-commands is for the build, which makes the man page with it. */
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' }, { "json", no_argument, NULL, 'j' },
        { "timeout", required_argument, NULL, 't' }, { "help", no_argument, NULL, 'h' },
        { "man-commands", no_argument, NULL, 'M' }, { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    static const char default_config[] = AVAILD_DEFAULT_CONFIG;
    ctl_t ctl = {
        .config_path = getenv("AVAILD_CONFIG") ? getenv("AVAILD_CONFIG") : default_config,
        .timeout_ms = 2000,
    };
    int opt;
    /* '+': stop at the command, whose own options follow it. */
    while ((opt = getopt_long(argc, argv, "+c:jt:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': ctl.config_path = optarg; break;
        case 'j': ctl.json = true; break;
        case 't': ctl.timeout_ms = atoi(optarg) > 0 ? atoi(optarg) : 2000, ctl.timeout_set = true; break;
        case 'h': ctl_usage(stdout); return EXIT_OK;
        case 'M': ctl_man_commands(stdout); return EXIT_OK;
        case 'V': printf("availctl %s\n", AVAILD_VERSION); return EXIT_OK;
        default: ctl_usage(stderr); return EXIT_USAGE;
        }
    }
    /* No -c and no $AVAILD_CONFIG: the installed config, else the one a
     * running `availctl run` (tools/dev run) of this user was given. */
    char current[4096];
    if (ctl.config_path == default_config && access(default_config, F_OK) < 0 &&
        ctl_current_config(current, sizeof current))
        ctl.config_path = current;
    if (optind >= argc) {
        ctl_usage(stderr);
        return EXIT_USAGE;
    }
    const ctl_command_t *cmd = ctl_command_find(argv[optind]);
    if (!cmd) {
        fprintf(stderr, "availctl: unknown command '%s'\n", argv[optind]);
        ctl_usage(stderr);
        return EXIT_USAGE;
    }
    int rc = cmd->run(&ctl, argc - optind, argv + optind);
    av_config_free(&ctl.cfg);
    zsys_shutdown();
    return rc;
}
