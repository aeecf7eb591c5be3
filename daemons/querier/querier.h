/* The querier's job, shared by its files: the process (its link to the
 * dispatcher), the registries of its querier group, each with its checks,
 * budget and verdict rules, and the small interface every protocol
 * implements. */
#ifndef QUERIER_H
#define QUERIER_H

#include "av_daemon.h"
#include "av_names.h"
#include "av_poller.h"
#include "budget.h"
#include "verdict.h"

#include <stdalign.h>
#include <stddef.h>
#include <sys/queue.h>

typedef struct querier querier_t;
typedef struct registry registry_t;
typedef struct query query_t;
typedef struct protocol protocol_t;

TAILQ_HEAD(query_queue, query);

/* A list of queries with its length. */
typedef struct {
    struct query_queue head;
    uint32_t count;
} query_list_t;

/* One check of one name, from arrival to answer. */
struct query {
    TAILQ_ENTRY(query) link;  /* in exactly one of its registry's lists */
    query_list_t *list;
    registry_t *registry;
    uint64_t rid;             /* the dispatcher's task number */
    char name[AV_DOMAIN_MAX + 1];
    bool want_raw;
    uint64_t arrived_us;
    uint64_t started_us;      /* sent to the registry (or to the DNS) */
    uint64_t deadline_us;     /* answer by then, whatever happens */
    char *reply;              /* what the registry sent, for the verdict and the raw excerpt */
    size_t reply_len;
    size_t reply_cap;
    bool truncated;           /* reply longer than max_reply_bytes: the rest was not read */
    dns_outcome_t dns;        /* what the DNS pre-check found, if it was asked */
    void *dns_lookup;         /* the pre-check's lookup under way (dns.c) */
    /* The registry protocol's own per-query state (its query_state_size
     * bytes): a socket, a transfer. */
    alignas(max_align_t) unsigned char protocol_state[];
};

/* A protocol speaks to a registry (or, for the DNS pre-check, to the DNS).
 * Each is one file; the querier knows protocols only through this table.
 * A started query ends with exactly one registry_evidence, which may come
 * before start returns. */
struct protocol {
    const char *name;
    av_source_t source;
    size_t query_state_size;  /* bytes of query_t.protocol_state it uses */
    /* The protocol's state for registry r with configuration cfg (its
     * connections, a resolver), or NULL when it cannot be set up (said why). */
    void *(*open)(registry_t *r, const av_registry_cfg_t *cfg);
    /* A reload: adopt next's host, base URL, servers... before r->cfg
     * becomes next. On failure (<0) nothing may have changed. */
    int (*configure)(registry_t *r, void *self, const av_registry_cfg_t *next);
    /* May queries start now? When false the protocol calls registry_pump
     * once they may (the registry's address is being looked up). NULL:
     * always. */
    bool (*ready)(registry_t *r, void *self);
    void (*start)(registry_t *r, void *self, query_t *x);
    /* Releases the query's I/O without an answer (it was answered, or is
     * handed back). Safe on a query that never started. */
    void (*abort)(registry_t *r, void *self, query_t *x);
    void (*close)(registry_t *r, void **self_p);
};

extern const protocol_t whois_protocol;
extern const protocol_t das_protocol;
extern const protocol_t rdap_protocol;
extern const protocol_t dns_precheck_protocol;

/* The protocol that asks a registry of this kind. */
const protocol_t *protocol_for(av_registry_proto_t kind);

/* A registry this querier serves. */
struct registry {
    TAILQ_ENTRY(registry) link;         /* in its querier's list */
    querier_t *q;
    const av_registry_cfg_t *cfg;       /* into the daemon's config, or kept_cfg */
    av_registry_cfg_t *kept_cfg;        /* its running settings, kept past a reload that changed what needs a restart */
    const protocol_t *protocol;
    void *protocol_state;
    const protocol_t *precheck;         /* the DNS pre-check, or NULL */
    void *precheck_state;
    verdict_rules_t *rules;
    budget_t budget;
    uint32_t capacity;                  /* checks it holds: concurrency + queue */
    query_list_t prechecking;           /* asked the DNS first */
    query_list_t waiting;               /* for a slot or a token */
    query_list_t inflight;              /* asked the registry */
    bool pumping;
    bool closing;                       /* being destroyed: nothing starts */
    bool leaving;                       /* a reload moved it to another querier */
    sd_event_source *pump_timer;        /* next moment a waiting query may go */
};

/* The querier process: its link to the dispatcher and what its registries'
 * protocols share (the poller of their sockets, the counters). */
struct querier {
    av_daemon_t *d;
    char group[AV_REGISTRY_MAX + 1];    /* its querier group */
    TAILQ_HEAD(, registry) registries;
    uint32_t n_registries;
    zhashx_t *by_name;                  /* registry name -> registry_t */
    zhashx_t *resolvers;                /* DNS servers -> their shared c-ares channel (resolver.c) */
    av_credit_t *credits;               /* room for a ready's list */
    av_msg_t msg;                       /* reused for every message from the dispatcher */
    zsock_t *dispatcher;                /* DEALER to the dispatcher's workers ROUTER */
    av_poller_t *poller;                /* every registry connection */
    sd_event_source *timeout_timer;
    sd_event_source *heartbeat_timer;
    uint32_t heartbeat_ms;
    msgpack_sbuffer sbuf;               /* reused for every message sent */
    uint64_t *checks;
    uint64_t *answers[AV_STATUS_COUNT];
    uint64_t *backoffs;
    uint64_t *rate_limit_waits;         /* times our own rate_limit held queries back */
    uint64_t *malformed;
    uint64_t *handed_back;
    uint64_t *dns_delegated;
    uint64_t *dns_not_delegated;
};

/* querier.c: the process */
int querier_start(querier_t *q, av_daemon_t *d);
int querier_reload(querier_t *q, const av_config_t *next);
void querier_stop(querier_t *q);     /* hand back the waiting, keep the in-flight */
bool querier_idle(const querier_t *q);
void querier_close(querier_t *q);
void querier_take(querier_t *q, const av_check_t *check);
/* Sends an answer to the dispatcher and counts it. */
void querier_answer(querier_t *q, const query_t *x, const av_answer_t *a);
/* Hands the queries of the list back to the dispatcher (a `bye`). */
void querier_hand_back(querier_t *q, registry_t *r, query_list_t *list);
uint64_t *querier_counter(querier_t *q, const char *name);

/* registry.c: one registry's checks from arrival to answer */
registry_t *registry_new(querier_t *q, const av_registry_cfg_t *cfg);
int registry_configure(registry_t *r, const av_registry_cfg_t *cfg);
void registry_destroy(registry_t **self_p);
/* A check of a normalised name for this registry. */
void registry_take(registry_t *r, query_t *x);
query_t *registry_query_new(registry_t *r, const av_check_t *check);
void registry_query_free(registry_t *r, query_t *x);
/* Protocols end each started query with what they observed. */
void registry_evidence(registry_t *r, query_t *x, const evidence_t *e);
/* A failure to get any reply: reason AV_REASON_TIMEOUT or _REGISTRY_ERROR. */
void registry_fail(registry_t *r, query_t *x, const char *reason, const char *detail);
/* Sends waiting queries while the budget allows. */
void registry_pump(registry_t *r);
/* Answers what is past its time (in flight: timeout; waiting: deadline). */
void registry_expire(registry_t *r, uint64_t now_us);
uint32_t registry_credit(const registry_t *r);
/* Room for more of the query's reply: where to write and *room bytes (the
 * buffer grows up to the registry's max_reply_bytes), or NULL when the cap
 * is reached (x->truncated is set then) or memory is short. */
char *query_reply_room(query_t *x, size_t *room);
/* Appends len bytes to the query's reply, up to the registry's
 * max_reply_bytes; returns false when the cap is reached (truncated) or
 * memory is short. */
bool query_reply_append(query_t *x, const char *data, size_t len);

static inline void *
query_state(query_t *x)
{
    return x->protocol_state;
}

#endif
