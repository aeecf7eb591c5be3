/* The dispatcher's state, shared by its files: registries, the queriers
 * working for them, and the names in flight with whoever waits for them. */
#ifndef DISPATCHER_H
#define DISPATCHER_H

#include "av_cache.h"
#include "av_daemon.h"
#include "av_names.h"
#include "tasks.h"

typedef struct querier_peer querier_peer_t;

/* A querier serving one registry: a querier of a group is one worker per
 * registry, each with the registry's credit. */
struct worker {
    LIST_ENTRY(worker) entry;  /* in its registry's list */
    LIST_ENTRY(worker) of_peer;/* in its querier's list */
    querier_peer_t *peer;
    registry_state_t *registry;
    uint32_t credit;
    bool leaving;              /* said bye: no new work */
    uint32_t tasks;            /* sent to it, not answered */
    uint64_t announced;        /* the querier's announcement that last named it */
};

/* A querier process, by its routing id: heard from as a whole (heartbeats,
 * silence), working for its registries through its workers. */
struct querier_peer {
    peer_id_t id;
    char key[2 * PEER_ID_MAX + 1];
    uint32_t pid;
    uint64_t last_seen_us;
    uint64_t announcements;    /* readies and heartbeats counted */
    bool unreachable;          /* a send failed: forgotten once the turn's work is done */
    LIST_HEAD(, worker) workers;
};

struct registry_state {
    SLIST_ENTRY(registry_state) entry;
    char name[AV_REGISTRY_MAX + 1];
    bool configured;           /* false once a reload removed it */
    uint32_t timeout_ms;
    uint32_t ttl_s[AV_STATUS_COUNT];
    LIST_HEAD(, worker) workers;
    uint32_t n_workers;        /* not leaving */
    uint64_t workers_gone_us;  /* when the last querier left (or we started) */
    task_list_t pending;       /* waiting for a querier with credit */
    task_list_t sent;          /* at a querier, in send order */
    /* budget: global (grants.c): the registry's limits, held here for all
     * its queriers; sent.count is what is granted of its concurrency */
    bool global;
    uint32_t concurrency;
    uint32_t rate_queries, rate_period_s, rate_burst;
    double tokens;
    uint64_t tokens_at_us;
    sd_event_source *grant_timer;
    void *grant_owner;         /* the dispatcher_t */
};

/* An intake we answer. One that says it reads batches gets the answers of
 * a loop turn in one message (the first answer, the rest under `more`). */
typedef struct {
    peer_id_t id;
    bool batches;
    uint64_t last_seen_us;
    msgpack_sbuffer first;     /* the pairs of the turn's first answer */
    uint32_t first_pairs;
    msgpack_sbuffer rest;      /* the maps of the others */
    uint32_t count;
} intake_peer_t;

#define INTAKE_PEERS_MAX 64

typedef struct {
    av_daemon_t *d;
    av_names_t *names;
    intake_peer_t peers[INTAKE_PEERS_MAX];
    uint32_t n_peers;
    sd_event_source *flush;    /* the end of a turn: batched answers go out */
    av_msg_t msg;              /* reused for every message from an intake */
    av_msg_t worker_msg;       /* ... and from a querier */
    SLIST_HEAD(, registry_state) registries;
    zsock_t *frontend;         /* ROUTER: intakes */
    zsock_t *workers;          /* ROUTER: queriers */
    zsock_t *cache_push;       /* PUSH: puts to availd-cache */
    av_cache_t *cache;         /* read-only; NULL until availd-cache made it */
    uint64_t cache_retry_us;
    task_table_t tasks;
    zhashx_t *queriers;        /* routing id (hex) -> querier_peer_t */
    uint32_t n_workers;        /* all registries' */
    msgpack_sbuffer sbuf;      /* reused for every message sent */
    sd_event_source *scan_timer;
    uint64_t last_scan_us;
    uint64_t *checks;
    uint64_t *cache_hits;
    uint64_t *coalesced;
    uint64_t *dispatched;
    uint64_t *redispatched;
    uint64_t *answers_out;
    uint64_t *answers_lost;
    uint64_t *invalid;
    uint64_t *unsupported;
    uint64_t *no_querier;
    uint64_t *overloaded;
    uint64_t *stale_answers;
    uint64_t *budget_waits;    /* a check held for its registry's global rate limit */
    uint64_t *malformed;
    uint64_t *workers_lost;
} dispatcher_t;

int dispatcher_start(dispatcher_t *ds, av_daemon_t *d);
int dispatcher_reload(dispatcher_t *ds, const av_config_t *next);
void dispatcher_close(dispatcher_t *ds);

/* grants.c */
void grants_configure(registry_state_t *r, const av_registry_cfg_t *cfg, void *ds);
bool grants_available(registry_state_t *r, uint64_t now_us);
void grants_take(registry_state_t *r);
void grants_release(registry_state_t *r);

/* workers.c */
void dispatch_pending(dispatcher_t *ds, registry_state_t *r);
bool workers_on_message(av_daemon_t *d, zsock_t *sock, void *arg);
void workers_scan(dispatcher_t *ds, uint64_t now_us);
/* Sends the task to the querier with the most credit, or leaves it
 * pending. Returns false when the registry has no querier at all. */
bool dispatch_task(dispatcher_t *ds, task_t *t);
void worker_forget(dispatcher_t *ds, worker_t *w, const char *why);
/* A querier and all its workers (it went silent, or we stop). */
void querier_forget(dispatcher_t *ds, querier_peer_t *p, const char *why);
/* Forgets the queriers a send found unreachable. Called at the end of each
 * event handler that may dispatch, never from inside a dispatch: there the
 * callers up the stack still hold the querier and its workers. */
void workers_forget_unreachable(dispatcher_t *ds);

/* dispatcher.c */
/* Sends an answer to an intake (a task_answer_fn; arg is the dispatcher):
 * to one that reads batches, with the others of the loop turn. */
void answer_intake(void *arg, const peer_id_t *intake, const av_answer_t *answer);
void put_to_cache(dispatcher_t *ds, const av_answer_t *answer, const registry_state_t *reg);
registry_state_t *registry_find(dispatcher_t *ds, const char *name, size_t len);
uint64_t worker_grace_us(const av_config_t *cfg);

#endif
