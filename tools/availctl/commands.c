/* availctl's commands: one table, from which come the dispatch, the usage
 * (availctl --help), each command's help (availctl help COMMAND) and the
 * man page's COMMANDS section (availctl --man-commands, run by the build).
 * A new command is a new cmd_NAME.c and a new row here. */
#include "availctl.h"

#include <stdio.h>
#include <string.h>

#ifndef AVAILD_DEFAULT_CONFIG
#define AVAILD_DEFAULT_CONFIG "/etc/availd/availd.yaml"
#endif

/* The usage's two columns: NAME ARGS, then the summary from this column. */
#define USAGE_SYNOPSIS_WIDTH 22

static int cmd_help(ctl_t *ctl, int argc, char **argv);

const ctl_command_t ctl_commands[] = {
    {
        .name = "config",
        .args = "check [FILE]",
        .run = cmd_config,
        .summary = "validate a configuration; exit 1 on an error",
        .help = "Reads FILE (default: the -c file) with the daemons' own code and\n"
                "prints FILE: configuration OK, or file:line:column: what is wrong.",
    },
    {
        .name = "status",
        .args = "[DAEMON...]",
        .run = cmd_status,
        .summary = "each daemon's state, version, uptime, counters",
        .help = "Asks every daemon of the configuration (or those named: intake,\n"
                "dispatcher, cache, errors, querier-REGISTRY) on its control endpoint.\n"
                "Exit 1 when one is down.",
    },
    {
        .name = "errors",
        .args = "[--follow] [--daemon D] [--registry R] [--level L] [--limit N] [--counts] [--json]",
        .run = cmd_errors,
        .summary = "recent error events; --follow keeps printing new ones",
        .help = "The newest error events held by availd-errors (50, or --limit N up\n"
                "to 10000), those of one daemon or registry, at level L (err, warning,\n"
                "notice, info, debug) or worse. --follow prints the last 10, then each\n"
                "new one as it comes; none is missed or shown twice. --counts prints\n"
                "how many events are held per registry and code.",
    },
    {
        .name = "check",
        .args = "NAME...|-f FILE|- [--fresh] [--raw] [--json] [--deadline MS]",
        .run = cmd_check,
        .summary = "is NAME available? ask availd, one line per name",
        .help = "Asks intake and prints, per name, its status, where the answer came\n"
                "from, the registry, the latency and the reason. -f FILE (or -,\n"
                "stdin) reads names one a line (# comments and blank lines skipped),\n"
                "1,000 per request, with a progress bar on a terminal and a summary\n"
                "line at the end (with --json a last {\"summary\": ...}). --fresh asks the\n"
                "registry even when the cache has a fresh answer; --raw adds the\n"
                "registry's reply; --deadline MS bounds the wait (default 10000).\n"
                "Exit 0 when every answer is definite (available, registered,\n"
                "reserved), 1 when one is unknown or invalid, 2 on usage or\n"
                "connection errors.",
    },
    {
        .name = "cache",
        .args = "get NAME | purge NAME | purge --all | stats",
        .run = cmd_cache,
        .summary = "the answer cache and per-registry timing",
        .help = "Through availd-cache, the cache's one writer. get shows NAME's cached\n"
                "answer and how long it is kept (exit 1 when there is none); purge\n"
                "forgets it, or every answer; stats counts the answers and shows each\n"
                "registry's answers and latency percentiles.",
    },
    {
        .name = "registries",
        .args = "[--json] [TLD...] [--coverage] | update-bootstrap FILE",
        .run = cmd_registries,
        .summary = "per registry: queriers up, rate limit, load, latency; a TLD's route",
        .help = "Per registry: how many of its queriers are up, its rate limit, what\n"
                "is in flight and waiting, whether it is backing off, the last five\n"
                "minutes' answers, latency and unknown share, and the error events\n"
                "held about it; exit 1 when a registry has no querier up.\n"
                "With TLDs (or public suffixes, or names): each one's registry, its\n"
                "protocol and server, where the entry came from (explicit: the\n"
                "registry table; bootstrap: the IANA RDAP bootstrap; iana-whois: the\n"
                "TLD's whois server), its querier group and limits; exit 1 when one\n"
                "has no route. --coverage counts the TLDs by route and lists those\n"
                "with no public service.\n"
                "update-bootstrap FILE checks a newer IANA RDAP bootstrap (dns.json)\n"
                "and puts it in place of the configured one, for the next reload.",
    },
    {
        .name = "reload",
        .args = "[DAEMON...]",
        .run = cmd_reload,
        .summary = "re-read the configuration (as SIGHUP)",
        .help = "Every daemon, or those named. The file is checked here first; a\n"
                "daemon refusing it keeps its old one and says why, a daemon not\n"
                "running is listed and skipped. Exit 1 when one refused it.",
    },
    {
        .name = "metrics",
        .args = "[--serve [HOST:PORT]]",
        .run = cmd_metrics,
        .summary = "Prometheus text format, printed once or served over HTTP",
        .help = "Every daemon's up, uptime, counters and gauges; per registry the\n"
                "answers, unknown and rate-limited counts, a latency histogram (fixed\n"
                "buckets) and the error events held; HELP and TYPE for every family.\n"
                "--serve answers GET /metrics (404 elsewhere), up to 16 scrapers at\n"
                "once; without HOST:PORT it takes systemd's socket\n"
                "(availd-metrics.socket). Bind it to loopback or a trusted network.",
    },
    {
        .name = "classify",
        .args = "NAME [FILE] [--json]",
        .run = cmd_classify,
        .summary = "explain a verdict: classify a raw reply, no network",
        .help = "Reads a registry's raw reply from FILE (no FILE or '-': stdin), picks\n"
                "NAME's registry as the dispatcher does and classifies the reply with\n"
                "its patterns, through the querier's own code: prints the status, the\n"
                "reason and the pattern that decided. Exit 0 for a definite verdict,\n"
                "1 for unknown or an invalid or unsupported name, 2 on usage or read\n"
                "errors.",
    },
    {
        .name = "run",
        .args = "[--no-restart] [--detach]",
        .run = cmd_run,
        .summary = "the whole constellation in the foreground",
        .help = "Starts errors, cache, dispatcher, the queriers and intake, each once\n"
                "the one before is ready; restarts a daemon that dies, with a growing\n"
                "delay (not with --no-restart); passes SIGHUP on; stops them all in\n"
                "reverse order on Ctrl-C or SIGTERM. Its daemons get SIGTERM when it\n"
                "dies, even by SIGKILL: none outlives it. --detach exits once all are\n"
                "up and leaves them running, unsupervised (their logs still go to\n"
                "its stderr); availctl stop stops them. It refuses to start, exit 1,\n"
                "while another availctl run or a daemon of the configuration runs\n"
                "with the same runtime_dir, naming them: stop them first. For\n"
                "development, CI and benchmarks: production uses the systemd units.",
    },
    {
        .name = "stop",
        .args = "[DAEMON...]",
        .run = cmd_stop,
        .summary = "stop the running daemons (availctl run's, orphans, detached)",
        .help = "A live availctl run is sent SIGTERM and stops its daemons itself.\n"
                "Any other daemon of the configuration that runs (or those named) is\n"
                "asked on its control endpoint to stop as on SIGTERM, intake first,\n"
                "the error recorder last, and waited for until it is gone. Exit 1\n"
                "when one could not be stopped; its pid is printed. Under systemd use\n"
                "systemctl stop, which also keeps it stopped.",
    },
    {
        .name = "journal",
        .args = "salvage",
        .run = cmd_journal,
        .summary = "rescue a damaged request journal (intake stopped)",
        .help = "intake does not start on a damaged journal (exit 78, naming this\n"
                "command). salvage moves it aside (data.mdb.damaged-TIMESTAMP beside\n"
                "it) and copies every request it can still read, through intake's own\n"
                "decoder, into a new journal; it prints how many it saved and lost.\n"
                "The next intake asks the saved requests again. Exit 0 when salvaged,\n"
                "1 when there is nothing to salvage (no journal, a sound one) or\n"
                "intake runs, 2 when it failed.",
    },
    {
        .name = "keys",
        .args = "new NAME | show FILE",
        .run = cmd_keys,
        .summary = "CURVE key pairs for tcp:// across hosts",
        .help = "new writes NAME (the public key, for the allow directories of the hosts\n"
                "it connects to) and NAME_secret (the key pair, mode 0600, for\n"
                "curve.secret_key) and prints the public key; show prints a file's key.",
    },
    {
        .name = "help",
        .args = "[COMMAND]",
        .run = cmd_help,
        .summary = "this list, or one command's synopsis and help",
        .help = NULL,
    },
    { .name = NULL },
};

const ctl_command_t *
ctl_command_find(const char *name)
{
    for (const ctl_command_t *c = ctl_commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static void
print_synopsis(FILE *out, const char *prefix, const ctl_command_t *c)
{
    fprintf(out, "%s%s%s%s", prefix, c->name, c->args[0] ? " " : "", c->args);
}

void
ctl_usage(FILE *out)
{
    fprintf(out, "usage: availctl [-c FILE] [--json] [--timeout MS] COMMAND [ARGS]\n\n");
    for (const ctl_command_t *c = ctl_commands; c->name; c++) {
        int width = (int)(strlen(c->name) + 1 + strlen(c->args));
        print_synopsis(out, "  ", c);
        if (width > USAGE_SYNOPSIS_WIDTH)
            fprintf(out, "\n%*s", USAGE_SYNOPSIS_WIDTH + 4, "");
        else
            fprintf(out, "%*s", USAGE_SYNOPSIS_WIDTH + 2 - width, "");
        fprintf(out, "%s\n", c->summary);
    }
    fprintf(out,
            "\n"
            "  -c FILE       configuration (default $AVAILD_CONFIG or %s)\n"
            "  --json        JSON output, one object per line\n"
            "  --timeout MS  how long to wait for a daemon's control answer (default 2000)\n"
            "availctl help COMMAND shows a command's help.\n"
            "Exit status: 0 ok, 1 negative answer, 2 usage or connection error.\n",
            AVAILD_DEFAULT_CONFIG);
}

int
ctl_command_usage(const char *name)
{
    const ctl_command_t *c = ctl_command_find(name);
    if (c) {
        print_synopsis(stderr, "usage: availctl ", c);
        fprintf(stderr, "\n");
    } else {
        ctl_usage(stderr);
    }
    return EXIT_USAGE;
}

/* availctl help [COMMAND] */
static int
cmd_help(ctl_t *ctl, int argc, char **argv)
{
    (void)ctl;
    if (argc == 1) {
        ctl_usage(stdout);
        return EXIT_OK;
    }
    if (argc != 2)
        return ctl_command_usage(argv[0]);
    const ctl_command_t *c = ctl_command_find(argv[1]);
    if (!c) {
        fprintf(stderr, "availctl: unknown command '%s'\n", argv[1]);
        ctl_usage(stderr);
        return EXIT_USAGE;
    }
    print_synopsis(stdout, "usage: availctl ", c);
    printf("\n  %s\n", c->summary);
    if (c->help) {
        printf("\n  ");
        for (const char *p = c->help; *p; p++) {
            putchar(*p);
            if (*p == '\n')
                printf("  ");
        }
        printf("\n");
    }
    return EXIT_OK;
}

/* Text as roff: '-' is a minus (options are typed, not hyphenated), '\'
 * is escaped, and a line may not start a request. */
static void
put_roff(FILE *out, const char *text)
{
    bool line_start = true;
    for (const char *p = text; *p; p++) {
        if (line_start && (*p == '.' || *p == '\''))
            fputs("\\&", out);
        if (*p == '-')
            fputs("\\-", out);
        else if (*p == '\\')
            fputs("\\e", out);
        else
            fputc(*p, out);
        line_start = *p == '\n';
    }
}

void
ctl_man_commands(FILE *out)
{
    fprintf(out, ".nh\n"); /* not hyphenated: a broken option or daemon name misleads */
    for (const ctl_command_t *c = ctl_commands; c->name; c++) {
        fprintf(out, ".TP\n\\fB");
        put_roff(out, c->name);
        fputs("\\fR", out);
        if (c->args[0]) {
            fputc(' ', out);
            put_roff(out, c->args);
        }
        fputc('\n', out);
        put_roff(out, c->summary);
        fprintf(out, "\n");
        if (c->help) {
            fprintf(out, ".br\n");
            put_roff(out, c->help);
            fprintf(out, "\n");
        }
    }
    fprintf(out, ".hy\n");
}
