/*
 * NAME
 *   availctl - control and query availd
 *
 * SUMMARY
 *   availctl [-c FILE] [--timeout MS] COMMAND [ARGS]
 *
 * COMMANDS
 *   config check [FILE]     validate a configuration as the daemons do
 *   status [DAEMON...]      each daemon's state, version, uptime, counters
 *   errors [--follow] [--daemon D] [--registry R] [--level L] [--limit N]
 *          [--counts] [--json]
 *                           recent error events, then new ones as they come
 *   check NAME... [--fresh] [--raw] [--json] [--deadline MS]
 *                           is NAME available? one line per name
 *   cache get NAME | purge NAME | purge --all | stats
 *                           the answer cache and per-registry timing
 *   registries [--json]     per registry: queriers up, rate limit, in flight,
 *                           backoff, recent latency and error rate, events
 *   reload [DAEMON...]      every daemon (or those named) re-reads the config
 *   metrics [--serve H:P]   Prometheus text format, printed or served
 *   classify NAME [FILE] [--json]
 *                           explain a verdict: classify a raw registry reply
 *                           (FILE or stdin) with NAME's registry, no network
 *   run [--no-restart]      the whole constellation in the foreground
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

#ifndef AVAILD_DEFAULT_CONFIG
#define AVAILD_DEFAULT_CONFIG "/etc/availd/availd.yaml"
#endif

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: availctl [-c FILE] [--json] [--timeout MS] COMMAND [ARGS]\n\n"
            "  config check [FILE]     validate a configuration; exit 1 on an error\n"
            "  status [DAEMON...]      state of every daemon (or those named: intake,\n"
            "                          dispatcher, cache, errors, querier-REGISTRY); exit 1 if one is down\n"
            "  errors [--follow] [--daemon D] [--registry R] [--level L] [--limit N] [--counts] [--json]\n"
            "                          recent error events; --follow keeps printing new ones\n"
            "  check NAME... [--fresh] [--raw] [--json] [--deadline MS]\n"
            "                          ask availd; exit 0 when every answer is definite, 1 when one is\n"
            "                          unknown or invalid, 2 on usage or connection errors\n"
            "  cache get NAME | purge NAME | purge --all | stats\n"
            "                          the answer cache and per-registry timing\n"
            "  registries [--json]     per registry: queriers up, rate limit, in flight, backoff,\n"
            "                          recent latency and error rate, error events\n"
            "  reload [DAEMON...]      re-read the configuration (as SIGHUP); exit 1 if one refused it\n"
            "  metrics [--serve HOST:PORT]\n"
            "                          Prometheus text format, printed once or served over HTTP\n"
            "  classify NAME [FILE] [--json]\n"
            "                          classify a raw registry reply (FILE or stdin) with NAME's registry\n"
            "                          and print the status, reason and deciding pattern; no network;\n"
            "                          exit 0 definite, 1 unknown or invalid, 2 usage\n"
            "  run [--no-restart]      start every daemon in the foreground, restart those that die,\n"
            "                          stop them all on Ctrl-C\n\n"
            "  -c FILE   configuration (default $AVAILD_CONFIG or %s)\n"
            "  --json    JSON output, one object per line\n"
            "Exit status: 0 ok, 1 negative answer, 2 usage or connection error.\n",
            AVAILD_DEFAULT_CONFIG);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' }, { "json", no_argument, NULL, 'j' },
        { "timeout", required_argument, NULL, 't' }, { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    ctl_t ctl = {
        .config_path = getenv("AVAILD_CONFIG") ? getenv("AVAILD_CONFIG") : AVAILD_DEFAULT_CONFIG,
        .timeout_ms = 2000,
    };
    int opt;
    /* '+': stop at the command, whose own options follow it. */
    while ((opt = getopt_long(argc, argv, "+c:jt:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': ctl.config_path = optarg; break;
        case 'j': ctl.json = true; break;
        case 't': ctl.timeout_ms = atoi(optarg) > 0 ? atoi(optarg) : 2000; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    int sub_argc = argc - optind - 1;
    char **sub_argv = argv + optind + 1;
    int rc;
    if (strcmp(cmd, "config") == 0)
        rc = cmd_config(&ctl, sub_argc, sub_argv);
    else if (strcmp(cmd, "status") == 0)
        rc = cmd_status(&ctl, sub_argc, sub_argv);
    else if (strcmp(cmd, "check") == 0)
        rc = cmd_check(&ctl, sub_argc + 1, sub_argv - 1);
    else if (strcmp(cmd, "cache") == 0)
        rc = cmd_cache(&ctl, sub_argc, sub_argv);
    else if (strcmp(cmd, "reload") == 0)
        rc = cmd_reload(&ctl, sub_argc, sub_argv);
    else if (strcmp(cmd, "registries") == 0)
        rc = cmd_registries(&ctl, sub_argc, sub_argv);
    else if (strcmp(cmd, "metrics") == 0)
        rc = cmd_metrics(&ctl, sub_argc, sub_argv);
    else if (strcmp(cmd, "classify") == 0)
        rc = cmd_classify(&ctl, sub_argc + 1, sub_argv - 1); /* getopt wants argv[0] */
    else if (strcmp(cmd, "run") == 0)
        rc = cmd_run(&ctl, sub_argc, sub_argv);
    else if (strcmp(cmd, "errors") == 0)
        rc = cmd_errors(&ctl, sub_argc + 1, sub_argv - 1); /* getopt wants argv[0] */
    else {
        fprintf(stderr, "availctl: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = EXIT_USAGE;
    }
    av_config_free(&ctl.cfg);
    zsys_shutdown();
    return rc;
}
