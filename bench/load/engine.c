/* The engine: keeps requests in flight on a closed loop (N outstanding) or
 * an open loop (a fixed schedule), ties every answer to the request and
 * name it is for, and counts latency from the moment a request was meant
 * to go out, so a stall in availd shows up in the figures instead of
 * quietly slowing the schedule (coordinated omission). */
#include "load.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOT_NONE        UINT32_MAX
/* Requests sent in one turn before answers are read again. */
#define ISSUE_BURST_MAX  1024
/* Longest sleep in one turn, so a stop or a schedule change is noticed. */
#define TURN_MAX_US      100000
#define HISTORY_SIZE     (1u << LOAD_HISTORY_BITS)
#define HISTORY_SEQ_MASK 0x3fffffffu
#define SEQ_LIMIT        ((uint64_t)HISTORY_SEQ_MASK)
/* Probes refused this often: nobody listens, no need to wait out the probing. */
#define PROBE_CONNECT_ERRORS_MAX 3

/* How a request ended, remembered so a later answer for it can be told a
 * duplicate (it had all its answers) from late (it had timed out). */
typedef enum {
    ENDED_ANSWERED = 1,
    ENDED_TIMED_OUT,
    ENDED_PROBE, /* a probe: later answers are expected and ignored */
} ended_t;

typedef struct {
    uint64_t seq;            /* 0 when the slot is free */
    uint64_t first_name;     /* counter of its first name */
    uint64_t intended_us;    /* when the schedule meant it to go out */
    uint64_t deadline_us;
    uint32_t n_names;
    uint32_t answered;
    uint32_t prev, next;     /* in flight, in send order (= deadline order) */
    names_from_t from;
    bool sent;
    bool blocked;            /* its send has waited for the socket */
} load_slot_t;

struct load_engine {
    uint32_t n_slots;
    uint32_t batch;
    load_slot_t *slots;
    uint8_t *done;           /* n_slots x batch: this name has its answer */
    uint32_t *free_slots;
    uint32_t n_free;
    uint32_t head, tail;     /* in flight, oldest first */
    uint32_t inflight;
    uint32_t *history;       /* by seq: (seq & HISTORY_SEQ_MASK) | ended << 30 */
    uint64_t next_seq;
    const workload_t *workload;
    const load_mode_ops_t *ops;
    void *mode;
    const load_phase_t *phase;
    load_stats_t *stats;
    uint64_t phase_answers;
    char id_prefix[32];
    size_t id_prefix_len;
};

static volatile sig_atomic_t interrupts;

void
load_engine_interrupt(void)
{
    if (interrupts < 2)
        interrupts++;
}

bool
load_engine_interrupted(void)
{
    return interrupts > 0;
}

uint64_t
load_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

load_engine_t *
load_engine_new(uint32_t slots, uint32_t batch, const workload_t *w)
{
    if (slots == 0 || slots > LOAD_SLOTS_MAX || batch == 0 || batch > AV_BATCH_MAX ||
        (uint64_t)slots * batch > LOAD_DONE_FLAGS_MAX)
        return NULL;
    load_engine_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->n_slots = slots;
    e->batch = batch;
    e->workload = w;
    e->slots = calloc(slots, sizeof *e->slots);
    e->done = calloc((size_t)slots * batch, 1);
    e->free_slots = calloc(slots, sizeof *e->free_slots);
    /* calloc'd: pages never written cost nothing, so a short run pays for
     * the history it uses only. */
    e->history = calloc(HISTORY_SIZE, sizeof *e->history);
    if (!e->slots || !e->done || !e->free_slots || !e->history) {
        load_engine_destroy(&e);
        return NULL;
    }
    for (uint32_t i = 0; i < slots; i++)
        e->free_slots[i] = slots - 1 - i; /* slot 0 is handed out first */
    e->n_free = slots;
    e->head = e->tail = SLOT_NONE;
    e->next_seq = 1;
    int n = snprintf(e->id_prefix, sizeof e->id_prefix, "load-%d-", (int)getpid());
    e->id_prefix_len = n > 0 ? (size_t)n : 0;
    return e;
}

void
load_engine_destroy(load_engine_t **self_p)
{
    load_engine_t *e = self_p ? *self_p : NULL;
    if (!e)
        return;
    free(e->slots);
    free(e->done);
    free(e->free_slots);
    free(e->history);
    free(e);
    *self_p = NULL;
}

void
load_engine_set_mode(load_engine_t *e, const load_mode_ops_t *ops, void *mode)
{
    e->ops = ops;
    e->mode = mode;
}

const char *
load_engine_id_prefix(const load_engine_t *e)
{
    return e->id_prefix;
}

load_stats_t *
load_engine_stats(load_engine_t *e)
{
    return e->stats;
}

size_t
load_engine_id(const load_engine_t *e, uint32_t slot, char *out, size_t size)
{
    int n = snprintf(out, size, "%s%u.%llu", e->id_prefix, slot, (unsigned long long)e->slots[slot].seq);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

size_t
load_engine_name(const load_engine_t *e, uint32_t slot, uint32_t idx, char *out, size_t size)
{
    const load_slot_t *s = &e->slots[slot];
    return workload_name(e->workload, s->from, s->first_name + idx, out, size);
}

uint32_t
load_engine_names(const load_engine_t *e, uint32_t slot)
{
    return e->slots[slot].n_names;
}

bool
load_engine_slot_open(const load_engine_t *e, uint32_t slot)
{
    return slot < e->n_slots && e->slots[slot].seq != 0;
}

/* ---- slots ----------------------------------------------------------------- */

static uint32_t
slot_take(load_engine_t *e, uint64_t intended_us, names_from_t from, uint64_t first_name, uint32_t n_names)
{
    if (e->n_free == 0)
        return SLOT_NONE;
    uint32_t i = e->free_slots[--e->n_free];
    load_slot_t *s = &e->slots[i];
    *s = (load_slot_t){
        .seq = e->next_seq++,
        .first_name = first_name,
        .intended_us = intended_us,
        .n_names = n_names,
        .prev = SLOT_NONE,
        .next = SLOT_NONE,
        .from = from,
    };
    memset(e->done + (size_t)i * e->batch, 0, n_names);
    return i;
}

static void
inflight_link(load_engine_t *e, uint32_t i)
{
    load_slot_t *s = &e->slots[i];
    s->prev = e->tail;
    s->next = SLOT_NONE;
    if (e->tail != SLOT_NONE)
        e->slots[e->tail].next = i;
    else
        e->head = i;
    e->tail = i;
    e->inflight++;
}

static void
inflight_unlink(load_engine_t *e, uint32_t i)
{
    load_slot_t *s = &e->slots[i];
    if (s->prev != SLOT_NONE)
        e->slots[s->prev].next = s->next;
    else
        e->head = s->next;
    if (s->next != SLOT_NONE)
        e->slots[s->next].prev = s->prev;
    else
        e->tail = s->prev;
    s->prev = s->next = SLOT_NONE;
    e->inflight--;
}

static void
slot_close(load_engine_t *e, uint32_t i, ended_t how)
{
    load_slot_t *s = &e->slots[i];
    if (s->sent)
        inflight_unlink(e, i);
    if (e->phase && e->phase->probe)
        how = ENDED_PROBE;
    e->history[s->seq & (HISTORY_SIZE - 1)] = (uint32_t)(s->seq & HISTORY_SEQ_MASK) | ((uint32_t)how << 30);
    s->seq = 0;
    s->sent = false;
    e->free_slots[e->n_free++] = i;
}

/* ---- answers --------------------------------------------------------------- */

void
stats_count_reason(load_stats_t *s, av_str_t reason)
{
    char text[LOAD_REASON_BYTES];
    av_str_copy(text, sizeof text, reason.len ? reason : AV_STR("(none)"));
    for (uint32_t i = 0; i < s->n_reasons; i++) {
        if (strcmp(s->reasons[i].text, text) == 0) {
            s->reasons[i].count++;
            return;
        }
    }
    if (s->n_reasons == LOAD_REASONS_MAX) {
        s->reasons_other++;
        return;
    }
    memcpy(s->reasons[s->n_reasons].text, text, sizeof text);
    s->reasons[s->n_reasons++].count = 1;
}

static bool
same_name(av_str_t got, const char *want, size_t want_len, bool fold_case)
{
    if (got.len != want_len)
        return false;
    if (!fold_case)
        return memcmp(got.ptr, want, want_len) == 0;
    for (size_t i = 0; i < want_len; i++) {
        char a = got.ptr[i], b = want[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (char)(b - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

/* An answer for a request that is no longer in flight. */
static void
answer_for_closed(load_engine_t *e, uint64_t seq)
{
    load_stats_t *st = e->stats;
    if (seq == 0 || seq >= e->next_seq) {
        st->unmatched++;
        return;
    }
    uint32_t h = e->history[seq & (HISTORY_SIZE - 1)];
    if ((h & HISTORY_SEQ_MASK) != (seq & HISTORY_SEQ_MASK)) {
        st->unmatched++; /* too old to remember */
        return;
    }
    switch ((ended_t)(h >> 30)) {
    case ENDED_ANSWERED: st->duplicates++; break;
    case ENDED_TIMED_OUT: st->late++; break;
    case ENDED_PROBE: break;
    }
}

void
load_engine_answer_seq(load_engine_t *e, uint32_t slot, uint64_t seq, uint32_t idx, const load_answer_t *a)
{
    load_stats_t *st = e->stats;
    if (!st || !e->phase)
        return;
    if (slot >= e->n_slots || e->slots[slot].seq != seq || !e->slots[slot].sent) {
        answer_for_closed(e, seq);
        return;
    }
    load_slot_t *s = &e->slots[slot];
    if (idx >= s->n_names) {
        st->unmatched++;
        return;
    }
    uint8_t *done = e->done + (size_t)slot * e->batch + idx;
    if (*done) {
        st->duplicates++;
        return;
    }
    *done = 1;
    s->answered++;
    st->answers++;
    e->phase_answers++;
    uint64_t now = load_now_us();
    hist_record(&st->latency, now > s->intended_us ? now - s->intended_us : 0);
    if ((unsigned)a->status < AV_STATUS_COUNT)
        st->by_status[a->status]++;
    if (a->source >= 0 && a->source < AV_SOURCE_COUNT)
        st->by_source[a->source]++;
    else
        st->no_source++;
    if (a->status == AV_STATUS_UNKNOWN || a->status == AV_STATUS_INVALID)
        stats_count_reason(st, a->reason);

    char want[LOAD_NAME_BYTES];
    size_t want_len = load_engine_name(e, slot, idx, want, sizeof want);
    /* The echo of what we asked must be exactly our name, and the
     * normalised name the same but for case (ours are ASCII): an answer
     * about another name under our id is a routing bug. */
    bool ours = (a->query.len || a->name.len) && (!a->query.len || same_name(a->query, want, want_len, false)) &&
                (!a->name.len || same_name(a->name, want, want_len, true));
    if (!ours) {
        st->misattributed++;
    } else if (e->phase->verify && a->status <= AV_STATUS_RESERVED) {
        st->verified++;
        if (a->status != workload_truth(want, want_len))
            st->wrong++;
    }
    if (s->answered == s->n_names)
        slot_close(e, slot, ENDED_ANSWERED);
}

uint64_t
load_engine_seq(const load_engine_t *e, uint32_t slot)
{
    return slot < e->n_slots ? e->slots[slot].seq : 0;
}

static bool
parse_u64(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *q = *p;
    if (q == end || *q < '0' || *q > '9')
        return false;
    while (q < end && *q >= '0' && *q <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*q - '0');
        q++;
    }
    *p = q;
    *out = v;
    return true;
}

void
load_engine_answer_id(load_engine_t *e, av_str_t id, uint32_t idx, const load_answer_t *a)
{
    if (!e->stats)
        return;
    const char *p = id.ptr, *end = id.ptr + id.len;
    uint64_t slot, seq;
    if (id.len <= e->id_prefix_len || memcmp(p, e->id_prefix, e->id_prefix_len) != 0) {
        e->stats->unmatched++;
        return;
    }
    p += e->id_prefix_len;
    if (!parse_u64(&p, end, &slot) || p == end || *p++ != '.' || !parse_u64(&p, end, &seq) || p != end ||
        slot >= e->n_slots) {
        e->stats->unmatched++;
        return;
    }
    load_engine_answer_seq(e, (uint32_t)slot, seq, idx, a);
}

void
load_engine_failed(load_engine_t *e, uint32_t slot)
{
    if (load_engine_slot_open(e, slot))
        slot_close(e, slot, ENDED_TIMED_OUT);
}

/* ---- running a phase ----------------------------------------------------- */

static void
expire(load_engine_t *e, uint64_t now_us)
{
    while (e->head != SLOT_NONE && e->slots[e->head].deadline_us <= now_us) {
        uint32_t i = e->head;
        load_slot_t *s = &e->slots[i];
        e->stats->timeouts += s->n_names - s->answered;
        if (e->ops->cancel)
            e->ops->cancel(e->mode, e, i);
        slot_close(e, i, ENDED_TIMED_OUT);
    }
}

/* Forgets whatever is in flight: probes once one answered, or everything
 * on a second interrupt. */
static void
abandon_all(load_engine_t *e, bool count_timeouts)
{
    while (e->head != SLOT_NONE) {
        uint32_t i = e->head;
        load_slot_t *s = &e->slots[i];
        if (count_timeouts)
            e->stats->timeouts += s->n_names - s->answered;
        if (e->ops->cancel)
            e->ops->cancel(e->mode, e, i);
        slot_close(e, i, ENDED_TIMED_OUT);
    }
}

typedef struct {
    uint64_t start_us;
    uint64_t requests;       /* taken so far */
    uint64_t names;          /* names in them */
    uint32_t pending;        /* taken, not yet sent: its socket would block */
    bool stopping;
} run_state_t;

static bool
phase_should_stop(const load_engine_t *e, const load_phase_t *p, const run_state_t *r, uint64_t now_us)
{
    return load_engine_interrupted() || (p->duration_us && now_us - r->start_us >= p->duration_us) ||
           (p->stop_on_answer && e->phase_answers > 0) || e->next_seq >= SEQ_LIMIT ||
           (p->probe && p->stats->error_connect >= PROBE_CONNECT_ERRORS_MAX);
}

/* Every request of a counted phase has been taken (the last may still wait
 * for its socket). */
static bool
all_taken(const load_phase_t *p, const run_state_t *r)
{
    return (p->requests && r->requests >= p->requests) || (p->names_total && r->names >= p->names_total);
}

/* When request number k is due on the open loop's schedule. */
static uint64_t
scheduled_us(const load_phase_t *p, const run_state_t *r, uint64_t k)
{
    return r->start_us + (uint64_t)((double)k * 1e6 / p->rate_per_s);
}

/* Takes the next request when it is due and there is room; SLOT_NONE when
 * not yet. */
static uint32_t
next_request(load_engine_t *e, const load_phase_t *p, run_state_t *r, uint64_t now_us)
{
    uint64_t intended_us = now_us;
    if (all_taken(p, r))
        return SLOT_NONE;
    if (p->rate_per_s > 0) {
        intended_us = scheduled_us(p, r, r->requests);
        if (intended_us > now_us)
            return SLOT_NONE;
        /* Behind schedule because every slot is busy: the request still
         * counts from when it was due, so the stall shows in the latency. */
    } else if (e->inflight >= p->outstanding) {
        return SLOT_NONE;
    }
    uint32_t n = p->names_per_request ? p->names_per_request : e->batch;
    if (n > e->batch)
        n = e->batch;
    if (p->names_total && p->names_total - r->names < n)
        n = (uint32_t)(p->names_total - r->names);
    uint32_t slot = slot_take(e, intended_us, p->from, p->first_name + r->names, n);
    if (slot != SLOT_NONE) {
        r->requests++;
        r->names += n;
    }
    return slot;
}

/* Sends what is due. Returns true when a send waits for its socket. */
static bool
issue_due(load_engine_t *e, const load_phase_t *p, run_state_t *r, uint64_t now_us)
{
    load_stats_t *st = e->stats;
    for (uint32_t burst = 0; burst < ISSUE_BURST_MAX; burst++) {
        if (r->pending == SLOT_NONE) {
            if (r->stopping)
                return false;
            r->pending = next_request(e, p, r, now_us);
            if (r->pending == SLOT_NONE)
                return false;
        }
        uint32_t i = r->pending;
        load_slot_t *s = &e->slots[i];
        int rc = e->ops->issue(e->mode, e, i);
        if (rc == 1) {
            if (!s->blocked)
                st->blocked_sends++;
            s->blocked = true;
            return true;
        }
        r->pending = SLOT_NONE;
        st->requests_sent++;
        st->names_sent += s->n_names;
        if (rc < 0) {
            slot_close(e, i, ENDED_TIMED_OUT);
            continue;
        }
        uint64_t sent_us = load_now_us();
        if (p->rate_per_s > 0)
            hist_record(&st->send_lag, sent_us > s->intended_us ? sent_us - s->intended_us : 0);
        s->sent = true;
        s->deadline_us = sent_us + (uint64_t)p->timeout_ms * 1000;
        inflight_link(e, i);
    }
    return false;
}

static uint64_t
wait_us(const load_engine_t *e, const load_phase_t *p, const run_state_t *r, uint64_t now_us, bool blocked)
{
    uint64_t wake_us = now_us + TURN_MAX_US;
    if (!r->stopping && !blocked && !all_taken(p, r)) {
        if (p->rate_per_s > 0) {
            if (e->n_free > 0) {
                uint64_t due_us = scheduled_us(p, r, r->requests);
                if (due_us < wake_us)
                    wake_us = due_us;
            }
        } else if (e->inflight < p->outstanding && e->n_free > 0) {
            return 0; /* the burst cap stopped us: more to send at once */
        }
        if (p->duration_us && r->start_us + p->duration_us < wake_us)
            wake_us = r->start_us + p->duration_us;
    }
    if (e->head != SLOT_NONE && e->slots[e->head].deadline_us < wake_us)
        wake_us = e->slots[e->head].deadline_us;
    return wake_us > now_us ? wake_us - now_us : 0;
}

uint64_t
load_engine_run(load_engine_t *e, const load_phase_t *p)
{
    run_state_t r = { .start_us = load_now_us(), .pending = SLOT_NONE };
    e->phase = p;
    e->stats = p->stats;
    e->phase_answers = 0;
    p->stats->start_us = r.start_us;
    for (;;) {
        uint64_t now_us = load_now_us();
        if (!r.stopping)
            r.stopping = phase_should_stop(e, p, &r, now_us);
        if (r.stopping && r.pending != SLOT_NONE) {
            /* Never sent: not a request, so not counted. */
            e->next_seq--; /* its seq was the last one handed out */
            load_slot_t *s = &e->slots[r.pending];
            s->seq = 0;
            e->free_slots[e->n_free++] = r.pending;
            r.pending = SLOT_NONE;
        }
        bool blocked = issue_due(e, p, &r, now_us);
        now_us = load_now_us();
        expire(e, now_us);
        if ((p->probe && e->phase_answers > 0) || interrupts > 1)
            abandon_all(e, !p->probe);
        if ((r.stopping || all_taken(p, &r)) && e->inflight == 0 && r.pending == SLOT_NONE)
            break;
        e->ops->wait(e->mode, e, wait_us(e, p, &r, now_us, blocked), blocked);
    }
    p->stats->end_us = load_now_us();
    /* Nothing is in flight: whatever still arrives is late or a duplicate,
     * and a duplicate is a bug worth waiting a moment to see. */
    uint64_t linger_end_us = p->stats->end_us + p->linger_us;
    for (uint64_t now_us = p->stats->end_us; now_us < linger_end_us && interrupts < 2; now_us = load_now_us())
        e->ops->wait(e->mode, e, linger_end_us - now_us, false);
    e->stats = NULL;
    e->phase = NULL;
    return e->phase_answers;
}
