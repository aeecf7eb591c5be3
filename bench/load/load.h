/* availd-load's shared shapes: the run's options, the names it asks for,
 * the engine that keeps checks in flight and ties answers to them, the
 * three ways of asking intake (push, dealer, gateway), and what a run
 * counts. main.c holds the manual. */
#ifndef LOAD_H
#define LOAD_H

#include "av_proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Bounds on what the command line can make us hold. */
#define LOAD_SLOTS_MAX        200000      /* requests in flight at once */
#define LOAD_DONE_FLAGS_MAX   (4u << 20)  /* slots x batch: one flag per name in flight */
#define LOAD_HISTORY_BITS     22          /* requests remembered after they close */
#define LOAD_REASONS_MAX      16          /* distinct unknown/invalid reasons counted */
#define LOAD_REASON_BYTES     80          /* a reason kept for the report */
#define LOAD_WATCH_MAX        32          /* --watch-pid */
#define LOAD_TLD_MAX          63
#define LOAD_NAME_BYTES       160         /* a generated name */
#define LOAD_ID_BYTES         64          /* a request id */
#define LOAD_ENDPOINT_BYTES   512
#define LOAD_COUNT_MAX        (1ull << 30) /* requests in one phase: seq fits the history tag */
#define LOAD_DURATION_MAX_S   86400.0
#define LOAD_TIMEOUT_MAX_MS   600000u
#define LOAD_RATE_MAX         10000000.0

/* Exit statuses. */
#define LOAD_EXIT_OK    0
#define LOAD_EXIT_WRONG 1  /* a wrong, misattributed or duplicate answer: a bug in availd */
#define LOAD_EXIT_USAGE 2  /* bad command line, config, or no way to reach intake */

/* Microseconds on the monotonic clock. */
uint64_t load_now_us(void);

/* ---- names (workload.c) --------------------------------------------------- */

typedef enum {
    NAMES_HIT = 1,   /* cycle through N fixed names */
    NAMES_MISS,      /* a new name every time */
    NAMES_MIX,       /* P percent from N fixed names, the rest new */
} names_kind_t;

/* Which names a request carries: the phase decides. */
typedef enum {
    NAMES_FROM_FIXED = 1, /* warm-up and probes: fixed name k */
    NAMES_FROM_WORKLOAD,  /* the measured run */
} names_from_t;

typedef struct {
    names_kind_t kind;
    uint32_t hit_percent;        /* NAMES_MIX */
    uint32_t fixed_count;        /* N; 0 for NAMES_MISS */
    char tld[LOAD_TLD_MAX + 1];  /* lower case */
    char run[16];                /* base 36, makes miss names unique to this run */
    uint64_t seed;               /* the mix's hit/miss choice */
} workload_t;

/* Parses hit:N:TLD, miss:TLD or mix:P:N:TLD. Returns 0 or -1 after saying why. */
int workload_parse(workload_t *w, const char *spec);
/* Name number `counter` of the given kind into out; returns its length. The
 * same counter always gives the same name, so nothing per name is stored. */
size_t workload_name(const workload_t *w, names_from_t from, uint64_t counter, char *out, size_t size);
/* The fake registry's truth rule: FNV-1a 32 of the lower-cased name, even =
 * available. */
av_status_t workload_truth(const char *name, size_t len);

/* ---- latency histogram (hist.c) ------------------------------------------- */

/* Log-linear buckets over microseconds: exact below 128 us, then 64 buckets
 * per power of two (under 1.6% error), up to LOAD_HIST_MAX_US. */
#define LOAD_HIST_SUB_BITS 6
#define LOAD_HIST_MAX_US   (1ull << 36) /* ~19 hours; larger values are clamped */
#define LOAD_HIST_BUCKETS  ((36 - LOAD_HIST_SUB_BITS + 1) * (1u << LOAD_HIST_SUB_BITS) + (1u << LOAD_HIST_SUB_BITS))

typedef struct {
    uint64_t counts[LOAD_HIST_BUCKETS];
    uint64_t total;
    uint64_t max_us;
    uint64_t sum_us;
} load_hist_t;

void hist_record(load_hist_t *h, uint64_t value_us);
/* The value at quantile q (0..1): the highest value of its bucket, never
 * above the largest recorded. 0 when empty. */
uint64_t hist_quantile(const load_hist_t *h, double q);

/* ---- what a phase counts --------------------------------------------------- */

typedef struct {
    char text[LOAD_REASON_BYTES];
    uint64_t count;
} load_reason_t;

typedef struct {
    uint64_t requests_sent;
    uint64_t names_sent;
    uint64_t answers;            /* first answers for names in flight */
    uint64_t by_status[AV_STATUS_COUNT];
    uint64_t by_source[AV_SOURCE_COUNT];
    uint64_t no_source;          /* gateway answers carry none */
    load_reason_t reasons[LOAD_REASONS_MAX];
    uint32_t n_reasons;
    uint64_t reasons_other;      /* past LOAD_REASONS_MAX distinct ones */
    uint64_t timeouts;           /* names without an answer within --timeout-ms */
    uint64_t late;               /* answers for requests that had timed out */
    uint64_t duplicates;         /* a second answer for a name already answered */
    uint64_t verified;           /* definite answers checked against the hash rule */
    uint64_t wrong;              /* ... that contradicted it */
    uint64_t misattributed;      /* an answer naming another name than the one asked */
    uint64_t unmatched;          /* answers with an id that is not one of ours */
    uint64_t undecodable;        /* replies we could not decode */
    uint64_t errors;             /* gateway: refused, reset, closed without an answer */
    uint64_t error_refused;      /* ... of which "% ..." lines (too many connections) */
    uint64_t error_connect;      /* ... of which connect() failed */
    uint64_t error_closed;       /* ... of which closed or reset before the answer */
    uint64_t unclosed;           /* gateway: still open 1 s after the answer line */
    uint64_t blocked_sends;      /* a send had to wait for the socket */
    load_hist_t latency;         /* intended send -> answer, per name */
    load_hist_t send_lag;        /* intended send -> actual send, per request */
    uint64_t start_us, end_us;
} load_stats_t;

void stats_count_reason(load_stats_t *s, av_str_t reason);

/* ---- the engine (engine.c) ------------------------------------------------- */

typedef struct load_engine load_engine_t;

/* One answer as a mode hands it to the engine. */
typedef struct {
    av_status_t status;
    int source;         /* av_source_t, or -1 when the way in carries none */
    av_str_t reason;
    av_str_t query;     /* the name as asked, echoed; may be empty */
    av_str_t name;      /* the normalised name */
} load_answer_t;

/* A way of asking intake. */
typedef struct {
    const char *name;
    /* Send request `slot` (its names and id from the engine). Returns 0
     * when sent, 1 when the socket would block (try again later), -1 when
     * this request failed (the mode has counted why). */
    int (*issue)(void *mode, load_engine_t *e, uint32_t slot);
    /* Wait up to timeout_us for answers and hand them to the engine;
     * want_write: a send is waiting for the socket. Microseconds, not
     * milliseconds: the open loop's sends are due every few hundred us, and
     * waking a millisecond late would show as latency. */
    int (*wait)(void *mode, load_engine_t *e, uint64_t timeout_us, bool want_write);
    /* The request timed out or is abandoned: forget its I/O. May be NULL. */
    void (*cancel)(void *mode, load_engine_t *e, uint32_t slot);
} load_mode_ops_t;

/* One phase: probes, warm-up, or the measured run. */
typedef struct {
    const char *label;
    names_from_t from;
    uint64_t first_name;   /* counter of the phase's first name */
    uint64_t names_total;  /* stop after this many names; 0 = no limit */
    uint32_t names_per_request; /* 0: the engine's batch */
    uint64_t requests;     /* stop after this many requests; 0 = no limit */
    uint64_t duration_us;  /* stop issuing after this long; 0 = no limit */
    uint32_t outstanding;  /* closed loop: requests in flight */
    double rate_per_s;     /* open loop, when > 0: requests per second */
    uint32_t timeout_ms;   /* per request */
    uint64_t linger_us;    /* after the last request ends, keep counting late and duplicate answers */
    bool stop_on_answer;   /* probes: done at the first answer */
    bool probe;            /* answers after the phase are ignored, not counted */
    bool verify;           /* check definite answers against the hash rule */
    load_stats_t *stats;
} load_phase_t;

load_engine_t *load_engine_new(uint32_t slots, uint32_t batch, const workload_t *w);
void load_engine_destroy(load_engine_t **self_p);
void load_engine_set_mode(load_engine_t *e, const load_mode_ops_t *ops, void *mode);
/* Runs a phase to its end: everything it sent answered or timed out.
 * Returns the number of answers it received. */
uint64_t load_engine_run(load_engine_t *e, const load_phase_t *phase);
/* SIGINT: stop issuing; a second one abandons what is in flight. */
void load_engine_interrupt(void);
bool load_engine_interrupted(void);

/* For modes: the request's id ("load-PID-SLOT.SEQ"), its names, their count. */
size_t load_engine_id(const load_engine_t *e, uint32_t slot, char *out, size_t size);
size_t load_engine_name(const load_engine_t *e, uint32_t slot, uint32_t idx, char *out, size_t size);
uint32_t load_engine_names(const load_engine_t *e, uint32_t slot);
const char *load_engine_id_prefix(const load_engine_t *e);
load_stats_t *load_engine_stats(load_engine_t *e);
/* An answer to the request with this id (any id: foreign ones are counted). */
void load_engine_answer_id(load_engine_t *e, av_str_t id, uint32_t idx, const load_answer_t *a);
/* An answer to request seq in slot (the gateway knows both from the
 * connection; the slot may have moved on to a later request since). */
void load_engine_answer_seq(load_engine_t *e, uint32_t slot, uint64_t seq, uint32_t idx, const load_answer_t *a);
uint64_t load_engine_seq(const load_engine_t *e, uint32_t slot);
/* The request ended without (all) its answers for a transport reason (the
 * mode has counted which); a later answer for it counts as late. */
void load_engine_failed(load_engine_t *e, uint32_t slot);
bool load_engine_slot_open(const load_engine_t *e, uint32_t slot);

/* ---- the ways in (mode_zmq.c, mode_gateway.c) ----------------------------- */

typedef struct {
    const char *endpoint;      /* push: intake_pull; dealer: intake_router; gateway: tcp://H:P */
    const char *results;       /* push: intake_results */
    uint32_t sockets;          /* dealer */
    uint32_t deadline_ms;      /* sent with each check; 0 = intake's default */
    uint32_t slots;            /* the gateway's connection table */
} load_mode_cfg_t;

extern const load_mode_ops_t load_mode_push;
extern const load_mode_ops_t load_mode_dealer;
extern const load_mode_ops_t load_mode_gateway;

/* Each returns the mode's state or NULL after saying why. */
void *mode_zmq_open(const load_mode_ops_t *ops, const load_mode_cfg_t *cfg, load_engine_t *e);
void mode_zmq_close(void **self_p);
void *mode_gateway_open(const load_mode_cfg_t *cfg);
void mode_gateway_close(void **self_p);

/* ---- processes (procstat.c) ------------------------------------------------ */

typedef struct {
    pid_t pid;
    char label[64];            /* argv[0]'s base name, @registry for a querier */
    bool tree;                 /* --watch-tree: the process and all its descendants */
    bool gone;                 /* vanished during the run: a crash? */
    double cpu_start_s, cpu_end_s;
    uint64_t rss_kb, hwm_kb;   /* a tree: sums over its live processes at the end */
    uint32_t procs;            /* a tree: its processes at the end */
} load_watch_t;

int procstat_cpu_s(pid_t pid, double *cpu_s);
int procstat_memory_kb(pid_t pid, uint64_t *rss_kb, uint64_t *hwm_kb);
/* A process and its descendants, found by scanning /proc: CPU is the sum of
 * utime + stime + cutime + cstime over the live tree (a reaped child's time
 * is in its parent's cutime/cstime, so children that a pre-forking server
 * recycled during the run are counted, and none twice); memory the sums
 * of VmRSS and VmHWM. -1 when pid is gone. */
int procstat_tree_cpu_s(pid_t pid, double *cpu_s, uint32_t *procs);
int procstat_tree_memory_kb(pid_t pid, uint64_t *rss_kb, uint64_t *hwm_kb, uint32_t *procs);
void procstat_label(pid_t pid, char *out, size_t size);
double procstat_self_cpu_s(void);
/* Every CPU's busy time (all but idle and iowait) since boot, from
 * /proc/stat, and how many CPUs: what the whole machine did during the run,
 * to tell the watched processes' share from other work on a shared host. */
int procstat_machine_busy_s(double *busy_s, uint32_t *cpus);

/* ---- the report (report.c) ------------------------------------------------- */

typedef struct {
    const char *mode;
    const char *names_spec;
    const char *endpoint;
    uint32_t batch;
    uint32_t outstanding;
    double rate_per_s;
    uint32_t timeout_ms;
    bool verify;
    bool interrupted;
    const load_stats_t *warmup;  /* NULL without --warmup */
    const load_stats_t *run;
    const load_watch_t *watch;
    uint32_t n_watch;
    double self_cpu_s;
    double machine_busy_s;       /* every CPU's busy time during the run; < 0 unknown */
    uint32_t machine_cpus;
} load_report_t;

void report_print_text(const load_report_t *r);
void report_print_json(const load_report_t *r);

#endif
