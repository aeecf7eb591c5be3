/*
 * NAME
 *   availd-load - load generator and answer checker for availd's intake
 *
 * SUMMARY
 *   availd-load [-c FILE] --mode push|dealer|gateway [--endpoint URL]
 *               [--results URL] [--names SPEC] [--warmup] [--batch B]
 *               [--outstanding N | --rate R [--max-outstanding N]]
 *               [--duration S] [--count N] [--timeout-ms MS]
 *               [--deadline-ms MS] [--linger-ms MS] [--sockets K]
 *               [--verify hash] [--json]
 *               [--watch-pid PID]... [--watch-tree PID]...
 *
 * DESCRIPTION
 *   Asks intake for many names, one of three ways (push: PUSH to
 *   endpoints.intake_pull, answers from endpoints.intake_results; dealer:
 *   request-reply on endpoints.intake_router; gateway: the TCP line
 *   protocol on endpoints.intake_gateway), on a closed loop (N requests
 *   outstanding) or an open loop (R requests a second on a fixed schedule,
 *   latency counted from each request's scheduled time). It ties every
 *   answer to the name it is for and counts duplicates, answers about the
 *   wrong name, and, with --verify hash, answers that contradict the fake
 *   registry's hash rule. Then it reports throughput, latency quantiles,
 *   answers by status and source, and the CPU and memory of every
 *   --watch-pid (one process) and --watch-tree (a process and all its
 *   descendants, children that exited during the run included: a
 *   pre-forking server). bench/load/README.md explains each option and
 *   figure.
 *
 *   Before measuring it sends probes until one is answered (in push mode
 *   that is also how it knows its subscription has joined); none within
 *   10 s is a connection error. SIGINT or SIGTERM stops sending and waits
 *   for what is in flight (at most --timeout-ms); a second one gives up.
 *
 * EXIT STATUS
 *   0 the run completed (unknown answers and timeouts included), 1 a wrong,
 *   misattributed or duplicate answer was seen (a bug in availd), 2 usage,
 *   configuration or connection error.
 */
#include "load.h"

#include "av_config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONFIG       "/etc/availd/availd.yaml"
#define DEFAULT_NAMES        "hit:1000:test"
#define DEFAULT_OUTSTANDING  100
#define DEFAULT_MAX_OUTSTANDING 10000
#define DEFAULT_DURATION_S   10.0
#define DEFAULT_TIMEOUT_MS   15000
#define DEFAULT_LINGER_MS    250
#define SOCKETS_MAX          64
#define WARMUP_OPEN_LOOP_OUTSTANDING 1000
/* Probes: one name every 200 ms for up to 10 s, each given 2 s. */
#define PROBE_RATE_PER_S     5.0
#define PROBE_MAX            50
#define PROBE_TIMEOUT_MS     2000
/* Descriptors the gateway mode keeps for itself beyond its connections. */
#define FDS_RESERVED         80

typedef enum {
    MODE_PUSH = 1,
    MODE_DEALER,
    MODE_GATEWAY,
} load_mode_t;

typedef struct {
    load_mode_t mode;
    const char *config_path;
    const char *endpoint;
    const char *results;
    const char *names_spec;
    workload_t workload;
    bool warmup;
    uint32_t batch;
    uint32_t outstanding;      /* closed loop */
    double rate_per_s;         /* open loop when > 0 */
    uint32_t max_outstanding;  /* open loop's bound */
    double duration_s;
    uint64_t count;
    uint32_t timeout_ms;
    uint32_t deadline_ms;
    uint32_t linger_ms;
    uint32_t sockets;
    bool verify;
    bool json;
    load_watch_t watch[LOAD_WATCH_MAX];
    uint32_t n_watch;
} opts_t;

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: availd-load [-c FILE] --mode push|dealer|gateway [--endpoint URL] [--results URL]\n"
            "                   [--names hit:N:TLD|miss:TLD|mix:P:N:TLD] [--warmup] [--batch B]\n"
            "                   [--outstanding N | --rate R [--max-outstanding N]]\n"
            "                   [--duration S] [--count N] [--timeout-ms MS] [--deadline-ms MS]\n"
            "                   [--linger-ms MS]\n"
            "                   [--sockets K] [--verify hash] [--json] [--watch-pid PID]... [--watch-tree PID]...\n"
            "Defaults: --names %s, closed loop of %d outstanding, %.0f s, timeout %d ms.\n"
            "See bench/load/README.md.\n",
            DEFAULT_NAMES, DEFAULT_OUTSTANDING, DEFAULT_DURATION_S, DEFAULT_TIMEOUT_MS);
}

static int
parse_number(const char *opt, const char *arg, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "availd-load: --%s %s: want a number from %g to %g\n", opt, arg, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int
parse_integer(const char *opt, const char *arg, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || v < lo || v > hi) {
        fprintf(stderr, "availd-load: --%s %s: want a whole number from %llu to %llu\n", opt, arg,
                (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int
watch_cpu_s(load_watch_t *w, double *cpu_s)
{
    return w->tree ? procstat_tree_cpu_s(w->pid, cpu_s, &w->procs) : procstat_cpu_s(w->pid, cpu_s);
}

static int
add_watch(opts_t *o, const char *arg, bool tree)
{
    const char *opt = tree ? "watch-tree" : "watch-pid";
    uint64_t pid;
    if (parse_integer(opt, arg, 1, 4194304, &pid) < 0)
        return -1;
    if (o->n_watch == LOAD_WATCH_MAX) {
        fprintf(stderr, "availd-load: at most %d --watch-pid and --watch-tree in all\n", LOAD_WATCH_MAX);
        return -1;
    }
    load_watch_t *w = &o->watch[o->n_watch];
    w->pid = (pid_t)pid;
    w->tree = tree;
    if (watch_cpu_s(w, &w->cpu_start_s) < 0) {
        fprintf(stderr, "availd-load: --%s %s: no such process\n", opt, arg);
        return -1;
    }
    procstat_label(w->pid, w->label, sizeof w->label);
    o->n_watch++;
    return 0;
}

/* Long options only: the short ones would be guesses. */
enum {
    OPT_MODE = 256, OPT_ENDPOINT, OPT_RESULTS, OPT_NAMES, OPT_WARMUP, OPT_BATCH, OPT_OUTSTANDING, OPT_RATE,
    OPT_MAX_OUTSTANDING, OPT_DURATION, OPT_COUNT, OPT_TIMEOUT, OPT_DEADLINE, OPT_SOCKETS, OPT_VERIFY, OPT_JSON,
    OPT_WATCH, OPT_LINGER, OPT_WATCH_TREE,
};

static int
parse_args(opts_t *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "mode", required_argument, NULL, OPT_MODE },
        { "endpoint", required_argument, NULL, OPT_ENDPOINT },
        { "results", required_argument, NULL, OPT_RESULTS },
        { "names", required_argument, NULL, OPT_NAMES },
        { "warmup", no_argument, NULL, OPT_WARMUP },
        { "batch", required_argument, NULL, OPT_BATCH },
        { "outstanding", required_argument, NULL, OPT_OUTSTANDING },
        { "rate", required_argument, NULL, OPT_RATE },
        { "max-outstanding", required_argument, NULL, OPT_MAX_OUTSTANDING },
        { "duration", required_argument, NULL, OPT_DURATION },
        { "count", required_argument, NULL, OPT_COUNT },
        { "timeout-ms", required_argument, NULL, OPT_TIMEOUT },
        { "deadline-ms", required_argument, NULL, OPT_DEADLINE },
        { "linger-ms", required_argument, NULL, OPT_LINGER },
        { "sockets", required_argument, NULL, OPT_SOCKETS },
        { "verify", required_argument, NULL, OPT_VERIFY },
        { "json", no_argument, NULL, OPT_JSON },
        { "watch-pid", required_argument, NULL, OPT_WATCH },
        { "watch-tree", required_argument, NULL, OPT_WATCH_TREE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t v;
    bool outstanding_given = false, max_given = false;
    int opt;
    *o = (opts_t){
        .names_spec = DEFAULT_NAMES,
        .batch = 1,
        .outstanding = DEFAULT_OUTSTANDING,
        .max_outstanding = DEFAULT_MAX_OUTSTANDING,
        .timeout_ms = DEFAULT_TIMEOUT_MS,
        .linger_ms = DEFAULT_LINGER_MS,
        .sockets = 1,
    };
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': o->config_path = optarg; break;
        case OPT_MODE:
            if (strcmp(optarg, "push") == 0)
                o->mode = MODE_PUSH;
            else if (strcmp(optarg, "dealer") == 0)
                o->mode = MODE_DEALER;
            else if (strcmp(optarg, "gateway") == 0)
                o->mode = MODE_GATEWAY;
            else {
                fprintf(stderr, "availd-load: --mode %s: want push, dealer or gateway\n", optarg);
                return -1;
            }
            break;
        case OPT_ENDPOINT: o->endpoint = optarg; break;
        case OPT_RESULTS: o->results = optarg; break;
        case OPT_NAMES: o->names_spec = optarg; break;
        case OPT_WARMUP: o->warmup = true; break;
        case OPT_BATCH:
            if (parse_integer("batch", optarg, 1, AV_BATCH_MAX, &v) < 0)
                return -1;
            o->batch = (uint32_t)v;
            break;
        case OPT_OUTSTANDING:
            if (parse_integer("outstanding", optarg, 1, LOAD_SLOTS_MAX, &v) < 0)
                return -1;
            o->outstanding = (uint32_t)v;
            outstanding_given = true;
            break;
        case OPT_RATE:
            if (parse_number("rate", optarg, 0.001, LOAD_RATE_MAX, &o->rate_per_s) < 0)
                return -1;
            break;
        case OPT_MAX_OUTSTANDING:
            if (parse_integer("max-outstanding", optarg, 1, LOAD_SLOTS_MAX, &v) < 0)
                return -1;
            o->max_outstanding = (uint32_t)v;
            max_given = true;
            break;
        case OPT_DURATION:
            if (parse_number("duration", optarg, 0.001, LOAD_DURATION_MAX_S, &o->duration_s) < 0)
                return -1;
            break;
        case OPT_COUNT:
            if (parse_integer("count", optarg, 1, LOAD_COUNT_MAX, &o->count) < 0)
                return -1;
            break;
        case OPT_TIMEOUT:
            if (parse_integer("timeout-ms", optarg, 1, LOAD_TIMEOUT_MAX_MS, &v) < 0)
                return -1;
            o->timeout_ms = (uint32_t)v;
            break;
        case OPT_DEADLINE:
            if (parse_integer("deadline-ms", optarg, 1, LOAD_TIMEOUT_MAX_MS, &v) < 0)
                return -1;
            o->deadline_ms = (uint32_t)v;
            break;
        case OPT_LINGER:
            if (parse_integer("linger-ms", optarg, 0, LOAD_TIMEOUT_MAX_MS, &v) < 0)
                return -1;
            o->linger_ms = (uint32_t)v;
            break;
        case OPT_SOCKETS:
            if (parse_integer("sockets", optarg, 1, SOCKETS_MAX, &v) < 0)
                return -1;
            o->sockets = (uint32_t)v;
            break;
        case OPT_VERIFY:
            if (strcmp(optarg, "hash") != 0) {
                fprintf(stderr, "availd-load: --verify %s: only \"hash\" is known\n", optarg);
                return -1;
            }
            o->verify = true;
            break;
        case OPT_JSON: o->json = true; break;
        case OPT_WATCH:
        case OPT_WATCH_TREE:
            if (add_watch(o, optarg, opt == OPT_WATCH_TREE) < 0)
                return -1;
            break;
        case 'h': usage(stdout); exit(LOAD_EXIT_OK);
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "availd-load: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    if (!o->mode) {
        fprintf(stderr, "availd-load: --mode push, dealer or gateway is required\n");
        usage(stderr);
        return -1;
    }
    if (o->rate_per_s > 0 && outstanding_given) {
        fprintf(stderr, "availd-load: --outstanding (closed loop) and --rate (open loop) exclude each other; "
                        "bound an open loop with --max-outstanding\n");
        return -1;
    }
    if (max_given && o->rate_per_s <= 0) {
        fprintf(stderr, "availd-load: --max-outstanding is for the open loop (--rate)\n");
        return -1;
    }
    if (o->mode == MODE_GATEWAY && o->batch != 1) {
        fprintf(stderr, "availd-load: the gateway takes one name per connection: no --batch\n");
        return -1;
    }
    if (o->sockets != 1 && o->mode != MODE_DEALER) {
        fprintf(stderr, "availd-load: --sockets is for --mode dealer\n");
        return -1;
    }
    if (o->results && o->mode != MODE_PUSH) {
        fprintf(stderr, "availd-load: --results is for --mode push\n");
        return -1;
    }
    if (!o->count && o->duration_s <= 0)
        o->duration_s = DEFAULT_DURATION_S;
    if (workload_parse(&o->workload, o->names_spec) < 0)
        return -1;
    if (o->warmup && o->workload.kind == NAMES_MISS) {
        fprintf(stderr, "availd-load: --warmup with miss names: nothing to warm up\n");
        o->warmup = false;
    }
    return 0;
}

/* Endpoints from the config file unless given; push needs both of its. */
static int
find_endpoints(opts_t *o, av_config_t **cfg_p, char *endpoint, char *results)
{
    const char *path = o->config_path;
    bool need_config = !o->endpoint || (o->mode == MODE_PUSH && !o->results);
    snprintf(endpoint, LOAD_ENDPOINT_BYTES, "%s", o->endpoint ? o->endpoint : "");
    snprintf(results, LOAD_ENDPOINT_BYTES, "%s", o->results ? o->results : "");
    if (!need_config)
        return 0;
    if (!path)
        path = getenv("AVAILD_CONFIG") ? getenv("AVAILD_CONFIG") : DEFAULT_CONFIG;
    char err[AV_CONFIG_ERR_MAX];
    if (av_config_load(path, cfg_p, err, sizeof err) < 0) {
        fprintf(stderr, "availd-load: %s\n", err);
        return -1;
    }
    const av_endpoints_cfg_t *ep = &(*cfg_p)->endpoints;
    if (!o->endpoint) {
        const char *from = o->mode == MODE_PUSH ? ep->intake_pull
                         : o->mode == MODE_DEALER ? ep->intake_router
                                                  : ep->intake_gateway;
        if (!from || !from[0]) {
            fprintf(stderr, "availd-load: %s: the gateway is off (endpoints.intake_gateway is empty)\n", path);
            return -1;
        }
        snprintf(endpoint, LOAD_ENDPOINT_BYTES, "%s", from);
    }
    if (o->mode == MODE_PUSH && !o->results)
        snprintf(results, LOAD_ENDPOINT_BYTES, "%s", ep->intake_results);
    return 0;
}

/* The gateway holds a descriptor per connection: take what the hard limit
 * allows and fit the slots to it. */
static uint32_t
gateway_slots(uint32_t wanted)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return wanted;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* Each slot may need 1.25 connections (see LINGER_EXTRA) plus 16. */
    uint64_t fds = rl.rlim_cur > FDS_RESERVED + 32 ? rl.rlim_cur - FDS_RESERVED - 16 : 16;
    uint64_t fit = fds * 4 / 5;
    if (wanted > fit) {
        fprintf(stderr, "availd-load: the open-file limit (%llu) allows %llu connections in flight, not %u\n",
                (unsigned long long)rl.rlim_cur, (unsigned long long)fit, wanted);
        return (uint32_t)fit;
    }
    return wanted;
}

static void
on_signal(int sig)
{
    (void)sig;
    load_engine_interrupt();
}

static void
catch_signals(void)
{
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: the wait returns at once and the loop sees the stop. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Base 36 of the clock and pid: miss names of this run were never asked
 * before, so they cannot be in the cache. */
static void
make_run_id(workload_t *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u) * 4194304u + (uint64_t)getpid();
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = digits[x % 36];
        x /= 36;
    } while (x && n < (int)sizeof tmp - 1);
    for (int i = 0; i < n; i++)
        w->run[i] = tmp[n - 1 - i];
    w->run[n] = '\0';
    w->seed = x ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
}

static void
sample_start(opts_t *o)
{
    for (uint32_t i = 0; i < o->n_watch; i++)
        if (watch_cpu_s(&o->watch[i], &o->watch[i].cpu_start_s) < 0)
            o->watch[i].gone = true;
}

static void
sample_end(opts_t *o)
{
    for (uint32_t i = 0; i < o->n_watch; i++) {
        load_watch_t *w = &o->watch[i];
        if (w->gone || watch_cpu_s(w, &w->cpu_end_s) < 0)
            w->gone = true;
        else if (w->tree ? procstat_tree_memory_kb(w->pid, &w->rss_kb, &w->hwm_kb, &w->procs) < 0
                         : procstat_memory_kb(w->pid, &w->rss_kb, &w->hwm_kb) < 0)
            w->gone = true;
    }
}

static bool
saw_bugs(const load_stats_t *s)
{
    return s->wrong || s->duplicates || s->misattributed;
}

int
main(int argc, char **argv)
{
    static opts_t o; /* static: the watch table and workload are sizeable */
    static load_stats_t probe_stats, warmup_stats, run_stats;
    char endpoint[LOAD_ENDPOINT_BYTES], results[LOAD_ENDPOINT_BYTES], shown[2 * LOAD_ENDPOINT_BYTES + 16];
    av_config_t *cfg = NULL;
    int status = LOAD_EXIT_USAGE;
    load_engine_t *e = NULL;
    void *mode = NULL;
    const load_mode_ops_t *ops;

    if (parse_args(&o, argc, argv) < 0 || find_endpoints(&o, &cfg, endpoint, results) < 0)
        goto out;
    make_run_id(&o.workload);
    ops = o.mode == MODE_PUSH ? &load_mode_push : o.mode == MODE_DEALER ? &load_mode_dealer : &load_mode_gateway;
    uint32_t slots = o.rate_per_s > 0 ? o.max_outstanding : o.outstanding;
    if (o.mode == MODE_GATEWAY)
        slots = gateway_slots(slots);
    if (o.rate_per_s > 0)
        o.max_outstanding = slots;
    else
        o.outstanding = slots;
    if ((uint64_t)slots * o.batch > LOAD_DONE_FLAGS_MAX) {
        fprintf(stderr, "availd-load: %u in flight x batch %u is more than %u names in flight\n", slots, o.batch,
                LOAD_DONE_FLAGS_MAX);
        goto out;
    }
    if (!(e = load_engine_new(slots, o.batch, &o.workload))) {
        fprintf(stderr, "availd-load: out of memory\n");
        goto out;
    }
    load_mode_cfg_t mcfg = {
        .endpoint = endpoint,
        .results = results,
        .sockets = o.sockets,
        .deadline_ms = o.deadline_ms,
        .slots = slots,
    };
    mode = o.mode == MODE_GATEWAY ? mode_gateway_open(&mcfg) : mode_zmq_open(ops, &mcfg, e);
    if (!mode)
        goto out;
    load_engine_set_mode(e, ops, mode);
    catch_signals();

    load_phase_t probe = {
        .label = "probe",
        .from = NAMES_FROM_FIXED,
        .names_per_request = 1,
        .requests = PROBE_MAX,
        .rate_per_s = PROBE_RATE_PER_S,
        .timeout_ms = PROBE_TIMEOUT_MS,
        .stop_on_answer = true,
        .probe = true,
        .stats = &probe_stats,
    };
    if (load_engine_run(e, &probe) == 0) {
        if (probe_stats.error_connect)
            fprintf(stderr, "availd-load: cannot connect to %s (is availd running?)\n", endpoint);
        else if (!load_engine_interrupted())
            fprintf(stderr, "availd-load: no answer from intake at %s%s%s within %d s (is availd running?)\n",
                    endpoint, results[0] ? " / " : "", results, PROBE_MAX / (int)PROBE_RATE_PER_S);
        goto out;
    }
    if (o.warmup && !load_engine_interrupted()) {
        load_phase_t warmup = {
            .label = "warm-up",
            .from = NAMES_FROM_FIXED,
            .names_total = o.workload.fixed_count,
            .outstanding = o.rate_per_s > 0 ? (slots < WARMUP_OPEN_LOOP_OUTSTANDING ? slots
                                                                                   : WARMUP_OPEN_LOOP_OUTSTANDING)
                                            : o.outstanding,
            .timeout_ms = o.timeout_ms,
            .verify = o.verify,
            .stats = &warmup_stats,
        };
        load_engine_run(e, &warmup);
    }
    load_phase_t run = {
        .label = "run",
        .from = NAMES_FROM_WORKLOAD,
        .requests = o.count,
        .duration_us = (uint64_t)(o.duration_s * 1e6),
        .outstanding = o.outstanding,
        .rate_per_s = o.rate_per_s,
        .timeout_ms = o.timeout_ms,
        .linger_us = (uint64_t)o.linger_ms * 1000,
        .verify = o.verify,
        .stats = &run_stats,
    };
    sample_start(&o);
    double machine_start_s = 0, machine_end_s = 0;
    uint32_t machine_cpus = 0;
    bool machine_known = procstat_machine_busy_s(&machine_start_s, &machine_cpus) == 0;
    double self_cpu_start_s = procstat_self_cpu_s();
    bool interrupted_before = load_engine_interrupted();
    if (!interrupted_before)
        load_engine_run(e, &run);
    double self_cpu_s = procstat_self_cpu_s() - self_cpu_start_s;
    machine_known = machine_known && procstat_machine_busy_s(&machine_end_s, &machine_cpus) == 0;
    sample_end(&o);

    if (o.mode == MODE_PUSH)
        snprintf(shown, sizeof shown, "%s (answers from %s)", endpoint, results);
    else
        snprintf(shown, sizeof shown, "%s", endpoint);
    load_report_t report = {
        .mode = ops->name,
        .names_spec = o.names_spec,
        .endpoint = shown,
        .batch = o.batch,
        .outstanding = o.rate_per_s > 0 ? o.max_outstanding : o.outstanding,
        .rate_per_s = o.rate_per_s,
        .timeout_ms = o.timeout_ms,
        .verify = o.verify,
        .interrupted = load_engine_interrupted(),
        .warmup = o.warmup ? &warmup_stats : NULL,
        .run = &run_stats,
        .watch = o.watch,
        .n_watch = o.n_watch,
        .self_cpu_s = self_cpu_s,
        .machine_busy_s = machine_known ? machine_end_s - machine_start_s : -1,
        .machine_cpus = machine_cpus,
    };
    if (o.json)
        report_print_json(&report);
    else
        report_print_text(&report);
    fflush(stdout);
    status = saw_bugs(&run_stats) || saw_bugs(&warmup_stats) ? LOAD_EXIT_WRONG : LOAD_EXIT_OK;
out:
    if (mode && o.mode == MODE_GATEWAY)
        mode_gateway_close(&mode);
    else if (mode)
        mode_zmq_close(&mode);
    load_engine_destroy(&e);
    av_config_free(&cfg);
    return status;
}
