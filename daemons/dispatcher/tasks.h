/* The dispatcher's task table: one task per name in flight to a registry,
 * however many checks wait for it (coalescing), found by name and by the
 * number a querier echoes; and where each task is: waiting for a querier
 * with credit, or sent to one. No sockets here: answers leave through the
 * caller's function. */
#ifndef TASKS_H
#define TASKS_H

#include "av_names.h"
#include "av_proto.h"

#include <czmq.h>
#include <sys/queue.h>

#define PEER_ID_MAX 32  /* ZeroMQ routing ids of our peers are 5 bytes */

/* An intake's or a querier's routing id. */
typedef struct {
    uint8_t len;
    uint8_t bytes[PEER_ID_MAX];
} peer_id_t;

typedef struct task task_t;
typedef struct worker worker_t;
typedef struct registry_state registry_state_t;

/* Someone waiting for a name: an intake request's position. */
typedef struct waiter {
    SLIST_ENTRY(waiter) entry;
    peer_id_t intake;
    uint64_t rid;
    uint32_t idx;
    uint16_t query_len;
    char query[];              /* the name as the frontend wrote it */
} waiter_t;

/* A registry's pending or sent tasks, in the order they got there. */
typedef struct {
    TAILQ_HEAD(, task) tasks;
    uint32_t count;
} task_list_t;

/* One name in flight to a registry, however many wait for it. */
struct task {
    TAILQ_ENTRY(task) entry;   /* in its list */
    task_list_t *list;         /* its registry's pending or sent list, or NULL */
    uint64_t id;               /* sent to the querier as `rid` */
    char name[AV_DOMAIN_MAX + 1];
    registry_state_t *registry;
    worker_t *worker;          /* NULL while pending */
    uint64_t expires_us;       /* pending: give up; sent: re-dispatch */
    uint64_t deadline_us;      /* the latest deadline of its waiters */
    uint32_t attempts;
    bool raw;
    SLIST_HEAD(, waiter) waiters;
};

typedef struct {
    zhashx_t *by_name;
    zhashx_t *by_id;
    uint64_t last_id;
    uint32_t count;            /* tasks */
    uint32_t waiters;          /* in all tasks */
} task_table_t;

/* One name of a check, as the table takes it: who waits, and how. */
typedef struct {
    peer_id_t intake;
    uint64_t rid;
    uint32_t idx;              /* the name's position in the intake's request */
    av_str_t query;            /* the name as asked */
    bool raw;
    uint64_t deadline_us;      /* monotonic */
} task_ask_t;

int task_table_init(task_table_t *tt);
/* Frees every task, unanswered: an answer would be final, and intakes
 * journal every request and ask again. */
void task_table_clear(task_table_t *tt);

task_t *task_by_id(const task_table_t *tt, uint64_t id);
task_t *task_by_name(const task_table_t *tt, const char *name);

/* A check of a name already in flight joins its task: one registry query
 * however many ask. Returns 1 when it joined, 0 when no task has the name,
 * -1 when there was no memory for the waiter (the caller answers it). */
int task_join(task_table_t *tt, const char *name, const task_ask_t *ask);
/* A new task for name, which has none, with ask as its first waiter; in no
 * list yet. NULL when out of memory. */
task_t *task_new(task_table_t *tt, const char *name, registry_state_t *reg, const task_ask_t *ask);

/* Calls fn with each waiter's answer (the verdict addressed to its request;
 * raw only when a waiter asked for it), then frees t. */
typedef void (*task_answer_fn)(void *arg, const peer_id_t *intake, const av_answer_t *answer);
void task_complete(task_table_t *tt, task_t *t, const av_answer_t *verdict, task_answer_fn fn, void *arg);
/* Completes t with `unknown` for the reason. */
void task_give_up(task_table_t *tt, task_t *t, const char *reason, task_answer_fn fn, void *arg);

/* Where a task is. */
void task_list_init(task_list_t *l);
/* Off its list and its querier: before it is sent again, or waits. */
void task_detach(task_t *t);
/* Sent to querier w (one of w's credit spent): in its registry's sent list
 * until expires_us. */
void task_sent(task_t *t, worker_t *w, uint64_t expires_us);
/* Waits in its registry's pending list until expires_us. */
void task_wait(task_t *t, uint64_t expires_us);
/* Moves the tasks of `from` that were sent to w into `into`, in their
 * order and off w: a querier is gone, its tasks go to another. */
void task_list_take(task_list_t *into, task_list_t *from, const worker_t *w);

#endif
