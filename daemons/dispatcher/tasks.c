/* The task table: names in flight and who waits for each. A name asked
 * again while its query is out joins the task instead of making a second
 * query; the answer, or the giving up, goes to every waiter at once. */
#include "dispatcher.h"

#include <stdlib.h>
#include <string.h>

static void
id_key(uint64_t id, char *key)
{
    snprintf(key, 24, "%llu", (unsigned long long)id);
}

int
task_table_init(task_table_t *tt)
{
    memset(tt, 0, sizeof *tt);
    if (!(tt->by_name = zhashx_new()) || !(tt->by_id = zhashx_new())) {
        zhashx_destroy(&tt->by_name);
        return -1;
    }
    return 0;
}

static void
task_free(task_table_t *tt, task_t *t)
{
    char key[24];
    task_detach(t);
    id_key(t->id, key);
    zhashx_delete(tt->by_id, key);
    zhashx_delete(tt->by_name, t->name);
    waiter_t *w;
    while ((w = SLIST_FIRST(&t->waiters))) {
        SLIST_REMOVE_HEAD(&t->waiters, entry);
        free(w);
        tt->waiters--;
    }
    tt->count--;
    free(t);
}

void
task_table_clear(task_table_t *tt)
{
    task_t *t;
    while (tt->by_name && (t = zhashx_first(tt->by_name)))
        task_free(tt, t);
    zhashx_destroy(&tt->by_name);
    zhashx_destroy(&tt->by_id);
}

task_t *
task_by_id(const task_table_t *tt, uint64_t id)
{
    char key[24];
    id_key(id, key);
    return zhashx_lookup(tt->by_id, key);
}

task_t *
task_by_name(const task_table_t *tt, const char *name)
{
    return zhashx_lookup(tt->by_name, name);
}

static int
add_waiter(task_table_t *tt, task_t *t, const task_ask_t *ask)
{
    uint16_t qlen = ask->query.len > AV_NAME_MAX ? AV_NAME_MAX : (uint16_t)ask->query.len;
    waiter_t *w = malloc(sizeof *w + qlen);
    if (!w)
        return -1;
    w->intake = ask->intake;
    w->rid = ask->rid;
    w->idx = ask->idx;
    w->query_len = qlen;
    if (qlen)
        memcpy(w->query, ask->query.ptr, qlen);
    SLIST_INSERT_HEAD(&t->waiters, w, entry);
    tt->waiters++;
    return 0;
}

int
task_join(task_table_t *tt, const char *name, const task_ask_t *ask)
{
    task_t *t = task_by_name(tt, name);
    if (!t)
        return 0;
    int rc = add_waiter(tt, t, ask) == 0 ? 1 : -1;
    /* The query serves the most demanding of its waiters. */
    t->raw |= ask->raw;
    if (ask->deadline_us > t->deadline_us)
        t->deadline_us = ask->deadline_us;
    return rc;
}

task_t *
task_new(task_table_t *tt, const char *name, registry_state_t *reg, const task_ask_t *ask)
{
    task_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    SLIST_INIT(&t->waiters);
    if (add_waiter(tt, t, ask) < 0) {
        free(t);
        return NULL;
    }
    char key[24];
    t->id = ++tt->last_id;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->registry = reg;
    t->raw = ask->raw;
    t->deadline_us = ask->deadline_us;
    id_key(t->id, key);
    zhashx_insert(tt->by_name, t->name, t);
    zhashx_insert(tt->by_id, key, t);
    tt->count++;
    return t;
}

void
task_complete(task_table_t *tt, task_t *t, const av_answer_t *verdict, task_answer_fn fn, void *arg)
{
    waiter_t *w;
    SLIST_FOREACH(w, &t->waiters, entry) {
        av_answer_t a = *verdict;
        a.id = AV_STR("");
        a.query = (av_str_t){ w->query, w->query_len };
        a.rid = w->rid;
        a.idx = w->idx;
        if (!t->raw)
            a.raw = (av_str_t){ "", 0 };
        fn(arg, &w->intake, &a);
    }
    task_free(tt, t);
}

void
task_give_up(task_table_t *tt, task_t *t, const char *reason, task_answer_fn fn, void *arg)
{
    av_answer_t a = {
        .id = AV_STR(""),
        .name = av_str(t->name),
        .status = AV_STATUS_UNKNOWN,
        .reason = av_str(reason),
        .registry = av_str(t->registry->name),
        .source = AV_SOURCE_NONE,
        .at_ms = av_now_ms(),
    };
    task_complete(tt, t, &a, fn, arg);
}

/* ---- where a task is ------------------------------------------------------ */

void
task_list_init(task_list_t *l)
{
    TAILQ_INIT(&l->tasks);
    l->count = 0;
}

static void
list_push(task_list_t *l, task_t *t)
{
    t->list = l;
    TAILQ_INSERT_TAIL(&l->tasks, t, entry);
    l->count++;
}

void
task_detach(task_t *t)
{
    if (t->list) {
        TAILQ_REMOVE(&t->list->tasks, t, entry);
        t->list->count--;
        t->list = NULL;
    }
    if (t->worker && t->worker->tasks)
        t->worker->tasks--;
    t->worker = NULL;
}

void
task_sent(task_t *t, worker_t *w, uint64_t expires_us)
{
    task_detach(t);
    w->credit--;
    w->tasks++;
    t->worker = w;
    t->attempts++;
    t->expires_us = expires_us;
    list_push(&t->registry->sent, t);
}

void
task_wait(task_t *t, uint64_t expires_us)
{
    task_detach(t);
    t->expires_us = expires_us;
    list_push(&t->registry->pending, t);
}

void
task_list_take(task_list_t *into, task_list_t *from, const worker_t *w)
{
    task_t *t, *next;
    for (t = TAILQ_FIRST(&from->tasks); t; t = next) {
        next = TAILQ_NEXT(t, entry);
        if (t->worker == w) {
            task_detach(t);
            list_push(into, t);
        }
    }
}
