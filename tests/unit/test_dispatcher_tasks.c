/* Unit tests of the dispatcher's task table: a name asked again while its
 * query is out joins the task (one registry query, two waiters), the answer
 * or the giving up reaches every waiter with its own request's position,
 * tasks are found by name and by number, and the bookkeeping of where a
 * task is (sent to which querier, waiting, handed over when a querier is
 * gone) keeps the queriers' counts right. No sockets: answers are
 * collected by the test's answer function. */
#include "dispatcher.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define MS(n) ((uint64_t)(n) * 1000)

/* ---- fixture and helpers ------------------------------------------------ */

#define ANSWERS_MAX 8

/* An answer as the intake would get it. */
typedef struct {
    peer_id_t intake;
    av_answer_t a;
    char query[64];
    char name[64];
    char reason[64];
    char registry[64];
    char raw[64];
} sent_answer_t;

typedef struct {
    task_table_t tt;
    registry_state_t reg;
    worker_t workers[2];
    querier_peer_t peers[2];   /* one querier process each */
    sent_answer_t answers[ANSWERS_MAX];
    size_t n_answers;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->reg.name, sizeof f->reg.name, "verisign");
    LIST_INIT(&f->reg.workers);
    task_list_init(&f->reg.pending);
    task_list_init(&f->reg.sent);
    for (int i = 0; i < 2; i++) {
        f->workers[i].registry = &f->reg;
        f->workers[i].credit = 10;
        f->workers[i].peer = &f->peers[i];
        f->peers[i].pid = 100 + (uint32_t)i;
    }
    *state = f;
    return task_table_init(&f->tt);
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    task_table_clear(&f->tt);
    free(f);
    return 0;
}

/* The task_answer_fn: keeps what an intake would get. */
static void
collect(void *arg, const peer_id_t *intake, const av_answer_t *a)
{
    fixture_t *f = arg;
    assert_true(f->n_answers < ANSWERS_MAX);
    sent_answer_t *s = &f->answers[f->n_answers++];
    s->intake = *intake;
    s->a = *a;
    av_str_copy(s->query, sizeof s->query, a->query);
    av_str_copy(s->name, sizeof s->name, a->name);
    av_str_copy(s->reason, sizeof s->reason, a->reason);
    av_str_copy(s->registry, sizeof s->registry, a->registry);
    av_str_copy(s->raw, sizeof s->raw, a->raw);
}

static peer_id_t
peer(uint8_t tag)
{
    peer_id_t p = { .len = 5, .bytes = { 0, 0x80, 0, 0, tag } };
    return p;
}

static task_ask_t
ask(uint8_t intake, uint64_t rid, uint32_t idx, const char *query, bool raw, uint64_t deadline_us)
{
    return (task_ask_t){
        .intake = peer(intake),
        .rid = rid,
        .idx = idx,
        .query = av_str(query),
        .raw = raw,
        .deadline_us = deadline_us,
    };
}

static size_t
waiters_of(const task_t *t)
{
    size_t n = 0;
    const waiter_t *w;
    SLIST_FOREACH(w, &t->waiters, entry)
        n++;
    return n;
}

/* The answer the intake `tag` got for its request rid. */
static const sent_answer_t *
answer_for(const fixture_t *f, uint8_t tag, uint64_t rid)
{
    for (size_t i = 0; i < f->n_answers; i++)
        if (f->answers[i].intake.bytes[4] == tag && f->answers[i].a.rid == rid)
            return &f->answers[i];
    fail_msg("no answer for intake %u request %llu", tag, (unsigned long long)rid);
    return NULL;
}

static av_answer_t
verdict(const char *name, av_status_t status)
{
    return (av_answer_t){
        .id = AV_STR("ignored"),
        .name = av_str(name),
        .query = AV_STR("ignored"),
        .status = status,
        .registry = AV_STR("verisign"),
        .source = AV_SOURCE_WHOIS,
        .at_ms = 1700000000000ull,
        .latency_us = 1234,
        .raw = AV_STR("Domain Name: EXAMPLE.COM"),
        .rid = 999, /* the task's number, as the querier echoed it */
    };
}

/* ---- coalescing ---------------------------------------------------------- */

static void
test_a_name_asked_again_while_in_flight_is_one_task_with_two_waiters(void **state)
{
    fixture_t *f = *state;
    task_ask_t first = ask(1, 11, 0, "Example.COM", false, MS(5000));
    assert_int_equal(task_join(&f->tt, "example.com", &first), 0); /* nothing in flight yet */
    task_t *t = task_new(&f->tt, "example.com", &f->reg, &first);
    assert_non_null(t);
    assert_int_equal(f->tt.count, 1);
    assert_int_equal(f->tt.waiters, 1);

    task_ask_t second = ask(2, 70, 3, "example.com.", false, MS(5000));
    assert_int_equal(task_join(&f->tt, "example.com", &second), 1);
    assert_int_equal(f->tt.count, 1); /* still one registry query */
    assert_int_equal(f->tt.waiters, 2);
    assert_int_equal(waiters_of(t), 2);
    assert_ptr_equal(task_by_name(&f->tt, "example.com"), t);

    /* Another name is another task. */
    task_ask_t other = ask(1, 12, 0, "example.net", false, MS(5000));
    assert_int_equal(task_join(&f->tt, "example.net", &other), 0);
    task_t *u = task_new(&f->tt, "example.net", &f->reg, &other);
    assert_non_null(u);
    assert_int_equal(f->tt.count, 2);
    assert_int_equal(f->tt.waiters, 3);
    assert_true(u->id != t->id);
}

static void
test_task_is_found_by_number_and_by_name_until_it_is_answered(void **state)
{
    fixture_t *f = *state;
    task_ask_t a = ask(1, 1, 0, "a.com", false, MS(1000));
    task_t *t = task_new(&f->tt, "a.com", &f->reg, &a);
    assert_non_null(t);
    assert_true(t->id >= 1);
    assert_string_equal(t->name, "a.com");
    assert_ptr_equal(t->registry, &f->reg);
    assert_ptr_equal(task_by_id(&f->tt, t->id), t);
    assert_ptr_equal(task_by_name(&f->tt, "a.com"), t);
    assert_null(task_by_id(&f->tt, t->id + 1));
    assert_null(task_by_name(&f->tt, "b.com"));
    uint64_t id = t->id;
    av_answer_t v = verdict("a.com", AV_STATUS_AVAILABLE);
    task_complete(&f->tt, t, &v, collect, f);
    assert_null(task_by_id(&f->tt, id));
    assert_null(task_by_name(&f->tt, "a.com"));
    /* A later task of the same name gets a new number: an answer to the
     * old one is stale, not this one's. */
    t = task_new(&f->tt, "a.com", &f->reg, &a);
    assert_non_null(t);
    assert_true(t->id != id);
}

static void
test_joining_keeps_the_latest_deadline_and_any_wish_for_raw(void **state)
{
    fixture_t *f = *state;
    task_ask_t a = ask(1, 1, 0, "a.com", false, MS(5000));
    task_t *t = task_new(&f->tt, "a.com", &f->reg, &a);
    assert_non_null(t);
    assert_false(t->raw);
    assert_true(t->deadline_us == MS(5000));
    task_ask_t later = ask(2, 2, 0, "a.com", true, MS(9000));
    assert_int_equal(task_join(&f->tt, "a.com", &later), 1);
    assert_true(t->raw);
    assert_true(t->deadline_us == MS(9000));
    task_ask_t sooner = ask(3, 3, 0, "a.com", false, MS(1000));
    assert_int_equal(task_join(&f->tt, "a.com", &sooner), 1);
    assert_true(t->raw);                     /* still wanted by the second */
    assert_true(t->deadline_us == MS(9000)); /* the query serves the longest wait */
}

/* ---- answering ------------------------------------------------------------ */

static void
test_the_answer_completes_every_waiter_with_its_own_position(void **state)
{
    fixture_t *f = *state;
    task_ask_t first = ask(1, 11, 0, "Example.COM", false, MS(5000));
    task_ask_t second = ask(2, 70, 3, "example.com.", false, MS(5000));
    task_t *t = task_new(&f->tt, "example.com", &f->reg, &first);
    assert_non_null(t);
    assert_int_equal(task_join(&f->tt, "example.com", &second), 1);

    av_answer_t v = verdict("example.com", AV_STATUS_REGISTERED);
    task_complete(&f->tt, t, &v, collect, f);
    assert_int_equal(f->n_answers, 2);
    const sent_answer_t *one = answer_for(f, 1, 11), *two = answer_for(f, 2, 70);
    assert_int_equal(one->a.idx, 0);
    assert_int_equal(two->a.idx, 3);
    assert_string_equal(one->query, "Example.COM"); /* each as its frontend wrote it */
    assert_string_equal(two->query, "example.com.");
    for (int i = 0; i < 2; i++) {
        const sent_answer_t *s = &f->answers[i];
        assert_string_equal(s->name, "example.com");
        assert_int_equal(s->a.status, AV_STATUS_REGISTERED);
        assert_int_equal(s->a.source, AV_SOURCE_WHOIS);
        assert_true(s->a.at_ms == 1700000000000ull);
        assert_true(s->a.latency_us == 1234);
        assert_int_equal(s->a.id.len, 0); /* intake knows its own ids */
        assert_string_equal(s->raw, "");  /* nobody asked for the excerpt */
    }
    /* The table is empty again. */
    assert_int_equal(f->tt.count, 0);
    assert_int_equal(f->tt.waiters, 0);
    assert_null(task_by_name(&f->tt, "example.com"));
}

static void
test_the_raw_excerpt_goes_along_when_a_waiter_asked_for_it(void **state)
{
    fixture_t *f = *state;
    task_ask_t plain = ask(1, 1, 0, "a.com", false, MS(5000));
    task_ask_t wants_raw = ask(1, 2, 0, "a.com", true, MS(5000));
    task_t *t = task_new(&f->tt, "a.com", &f->reg, &plain);
    assert_non_null(t);
    assert_int_equal(task_join(&f->tt, "a.com", &wants_raw), 1);
    av_answer_t v = verdict("a.com", AV_STATUS_REGISTERED);
    task_complete(&f->tt, t, &v, collect, f);
    assert_string_equal(answer_for(f, 1, 2)->raw, "Domain Name: EXAMPLE.COM");
}

static void
test_giving_up_answers_every_waiter_unknown_with_the_reason(void **state)
{
    fixture_t *f = *state;
    task_ask_t a = ask(1, 5, 1, "slow.com", true, MS(5000));
    task_ask_t b = ask(3, 6, 0, "SLOW.com", false, MS(5000));
    task_t *t = task_new(&f->tt, "slow.com", &f->reg, &a);
    assert_non_null(t);
    assert_int_equal(task_join(&f->tt, "slow.com", &b), 1);
    task_give_up(&f->tt, t, AV_REASON_TIMEOUT, collect, f);
    assert_int_equal(f->n_answers, 2);
    for (int i = 0; i < 2; i++) {
        const sent_answer_t *s = &f->answers[i];
        assert_int_equal(s->a.status, AV_STATUS_UNKNOWN);
        assert_string_equal(s->reason, "timeout");
        assert_string_equal(s->name, "slow.com");
        assert_string_equal(s->registry, "verisign");
        assert_int_equal(s->a.source, AV_SOURCE_NONE);
        assert_true(s->a.at_ms > 0);
    }
    assert_int_equal(answer_for(f, 1, 5)->a.idx, 1);
    assert_string_equal(answer_for(f, 3, 6)->query, "SLOW.com");
    assert_int_equal(f->tt.count, 0);
}

/* ---- where a task is -------------------------------------------------------- */

static void
test_sending_and_sending_again_moves_the_task_between_queriers(void **state)
{
    fixture_t *f = *state;
    worker_t *qa = &f->workers[0], *qb = &f->workers[1];
    task_ask_t a = ask(1, 1, 0, "a.com", false, MS(5000));
    task_t *t = task_new(&f->tt, "a.com", &f->reg, &a);
    assert_non_null(t);
    assert_null(t->list); /* in no list until sent or waiting */

    task_sent(t, qa, MS(200));
    assert_ptr_equal(t->worker, qa);
    assert_int_equal(qa->credit, 9);
    assert_int_equal(qa->tasks, 1);
    assert_int_equal(t->attempts, 1);
    assert_true(t->expires_us == MS(200));
    assert_ptr_equal(t->list, &f->reg.sent);
    assert_int_equal(f->reg.sent.count, 1);

    /* Overdue at the first querier: re-dispatched to the second. */
    task_sent(t, qb, MS(400));
    assert_ptr_equal(t->worker, qb);
    assert_int_equal(qa->tasks, 0);  /* no longer the first one's */
    assert_int_equal(qa->credit, 9); /* its credit comes back with its answer, not here */
    assert_int_equal(qb->tasks, 1);
    assert_int_equal(qb->credit, 9);
    assert_int_equal(t->attempts, 2);
    assert_int_equal(f->reg.sent.count, 1); /* once in the list */
    assert_ptr_equal(TAILQ_FIRST(&f->reg.sent.tasks), t);

    /* No querier with credit: it waits. */
    task_wait(t, MS(600));
    assert_null(t->worker);
    assert_int_equal(qb->tasks, 0);
    assert_int_equal(f->reg.sent.count, 0);
    assert_int_equal(f->reg.pending.count, 1);
    assert_ptr_equal(t->list, &f->reg.pending);
    assert_true(t->expires_us == MS(600));
    assert_int_equal(t->attempts, 2); /* waiting is not an attempt */

    /* Answered: off every list and querier. */
    task_sent(t, qa, MS(800));
    av_answer_t v = verdict("a.com", AV_STATUS_AVAILABLE);
    task_complete(&f->tt, t, &v, collect, f);
    assert_int_equal(qa->tasks, 0);
    assert_int_equal(f->reg.sent.count, 0);
    assert_int_equal(f->reg.pending.count, 0);
    assert_true(TAILQ_EMPTY(&f->reg.sent.tasks));
}

static void
test_a_gone_queriers_tasks_are_taken_off_it_in_send_order(void **state)
{
    fixture_t *f = *state;
    worker_t *qa = &f->workers[0], *qb = &f->workers[1];
    const char *names[4] = { "a.com", "b.com", "c.com", "d.com" };
    task_t *t[4];
    for (int i = 0; i < 4; i++) {
        task_ask_t x = ask(1, (uint64_t)i + 1, 0, names[i], false, MS(5000));
        t[i] = task_new(&f->tt, names[i], &f->reg, &x);
        assert_non_null(t[i]);
        task_sent(t[i], i == 1 ? qb : qa, MS(100 * (i + 1)));
    }
    assert_int_equal(qa->tasks, 3);
    task_list_t orphans;
    task_list_init(&orphans);
    task_list_take(&orphans, &f->reg.sent, qa);
    assert_int_equal(orphans.count, 3);
    assert_int_equal(f->reg.sent.count, 1);
    assert_ptr_equal(TAILQ_FIRST(&f->reg.sent.tasks), t[1]); /* the other querier's stays */
    assert_int_equal(qa->tasks, 0);
    assert_int_equal(qb->tasks, 1);
    task_t *o = TAILQ_FIRST(&orphans.tasks);
    for (int i = 0; i < 4; i++) {
        if (i == 1)
            continue;
        assert_ptr_equal(o, t[i]);
        assert_null(o->worker);
        assert_ptr_equal(o->list, &orphans);
        o = TAILQ_NEXT(o, entry);
    }
    assert_null(o);
    /* Each goes on from there: sent to the other querier. */
    while ((o = TAILQ_FIRST(&orphans.tasks)))
        task_sent(o, qb, MS(1000));
    assert_int_equal(orphans.count, 0);
    assert_int_equal(f->reg.sent.count, 4);
    assert_int_equal(qb->tasks, 4);
    assert_int_equal(t[0]->attempts, 2);
}

static void
test_clearing_the_table_frees_tasks_wherever_they_are(void **state)
{
    fixture_t *f = *state;
    task_ask_t a = ask(1, 1, 0, "a.com", false, MS(5000)), b = ask(1, 2, 0, "b.com", false, MS(5000));
    task_t *ta = task_new(&f->tt, "a.com", &f->reg, &a);
    task_t *tb = task_new(&f->tt, "b.com", &f->reg, &b);
    assert_non_null(ta);
    assert_non_null(tb);
    assert_int_equal(task_join(&f->tt, "a.com", &b), 1);
    task_sent(ta, &f->workers[0], MS(100));
    task_wait(tb, MS(100));
    task_table_clear(&f->tt);
    assert_int_equal(f->n_answers, 0); /* dropped, not answered: intakes ask again */
    assert_int_equal(f->tt.count, 0);
    assert_int_equal(f->tt.waiters, 0);
    assert_int_equal(f->reg.sent.count, 0);
    assert_int_equal(f->reg.pending.count, 0);
    assert_int_equal(f->workers[0].tasks, 0);
    task_table_clear(&f->tt); /* twice is harmless (teardown does it again) */
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_a_name_asked_again_while_in_flight_is_one_task_with_two_waiters),
        T(test_task_is_found_by_number_and_by_name_until_it_is_answered),
        T(test_joining_keeps_the_latest_deadline_and_any_wish_for_raw),
        T(test_the_answer_completes_every_waiter_with_its_own_position),
        T(test_the_raw_excerpt_goes_along_when_a_waiter_asked_for_it),
        T(test_giving_up_answers_every_waiter_unknown_with_the_reason),
        T(test_sending_and_sending_again_moves_the_task_between_queriers),
        T(test_a_gone_queriers_tasks_are_taken_off_it_in_send_order),
        T(test_clearing_the_table_frees_tasks_wherever_they_are),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
