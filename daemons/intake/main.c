/*
 * NAME
 *   availd-intake - where frontends ask availd, and get their answers
 *
 * SUMMARY
 *   availd-intake [-c FILE] [-n] [-f]
 *
 * DESCRIPTION
 *   Three ways in, each taking a `check` of one name (`name`) or a batch of
 *   up to 1,000 (`names`), with the requester's `id`, and optional `fresh`
 *   (bypass the cache), `raw` (the registry's reply excerpt) and
 *   `deadline_ms` (default intake.deadline_ms):
 *
 *   - endpoints.intake_pull (PULL): fire and forget. Each answer is
 *     published on endpoints.intake_results (XPUB) as it becomes final,
 *     with the request's id as topic: subscribe to your id, then push. An
 *     answer no subscription matches yet is held for 5 s until one does.
 *   - endpoints.intake_router (ROUTER): request-reply for REQ or DEALER
 *     frontends. A `name` gets one `answer`; `names` get one `answers`
 *     message holding every answer (idx = position) once all are final.
 *   - endpoints.intake_gateway (TCP, "" to disable): the old daemon's line
 *     protocol. A client sends `NAME\r\n` and reads `NAME STATUS
 *     [reason]\r\n`, then the connection closes; `whois -h HOST -p PORT
 *     NAME` works. Clients are checked against cidr_allow and cidr_deny.
 *
 *   Every request is validated: one that is not msgpack, lacks `id` or a
 *   name, has a field of the wrong type or too long, or more than 1,000
 *   names, is answered `invalid` with the reason, never ignored. Names are
 *   forwarded to the dispatcher; what is not answered by the deadline is
 *   answered `unknown` (deadline). A second answer for the same name of a
 *   request is dropped. Past intake.max_inflight names in flight, or when
 *   the dispatcher's queue is full, a check is answered `unknown`
 *   (overloaded) at once.
 *
 *   Every request but gateway ones is journaled (intake.journal, LMDB)
 *   before it is forwarded, and leaves the journal before its answer goes
 *   out; a restarted intake asks again what its journal holds and answers
 *   request-reply frontends by their routing id. Unanswered names are sent
 *   again when the dispatcher comes back, and after intake.resend_ms.
 *
 *   A damaged journal (cut short, garbage meta pages, not LMDB, a page
 *   that is not what its tree says: every page is checked before LMDB maps
 *   the file) holds accepted requests that must not be lost nor answered
 *   twice, so intake does not start: it says what is wrong and what to
 *   do, reports journal_damaged, and exits 78 (EX_CONFIG: neither systemd
 *   nor availctl run starts it again in a loop). `availctl journal
 *   salvage` (with intake stopped) moves the file aside
 *   (data.mdb.damaged-TIMESTAMP beside it) and copies every request it can
 *   still read into a new journal, saying how many it saved and lost; the
 *   next intake asks them again. `intake.journal: ""` starts without one.
 *
 *   A request that cannot be journaled (a full disk, an I/O error, a full
 *   map) is not taken: it is answered `unknown` (storage) at once and
 *   never forwarded; the frontend asks again later. Answers whose request
 *   cannot leave the journal are held, and the change is tried again
 *   every 100 ms: they go out once it is written, or, if intake stops
 *   first, the next intake answers them from the journal, once. Each
 *   failure is logged and reported to availd-errors at most once a second,
 *   with its cause (journal_no_space, journal_map_full, journal_io_error,
 *   journal_failed) and counts (commits failed, requests refused, changes
 *   waiting); journal_recovered when it is written again. Counters
 *   storage_refused, journal_commit_failures, journal_records_refused;
 *   gauge answers_waiting_for_journal.
 *
 *   SIGTERM: keeps taking in what frontends send (into the journal) until
 *   they have been quiet for 50 ms, or for at most a second, so that a
 *   burst already on its way is not lost with the sockets; then stops
 *   listening, answers every gateway client it accepted, also one whose
 *   line is still on its way (within process.drain_ms and
 *   intake.gateway_timeout_ms), and exits; the journal holds the rest for
 *   the next intake. A change the journal could not write yet is tried
 *   again until it is written or process.drain_ms is over; a request it
 *   still holds then is the next intake's to answer, once. Without a
 *   journal it waits for every answer. What a frontend sends after that,
 *   or what is still in the kernel's socket buffers when intake closes
 *   them, is lost with the connection: a frontend asks again when its
 *   answer is overdue.
 *
 * CONFIGURATION PARAMETERS
 *   endpoints.intake_pull, intake_router, intake_results, intake_gateway,
 *   endpoints.dispatcher, intake.deadline_ms, intake.max_inflight,
 *   intake.gateway_clients, intake.gateway_timeout_ms, intake.journal,
 *   intake.journal_map_mb, intake.journal_sync, and the process settings
 *   (cidr_allow and cidr_deny apply to the gateway).
 */
#include "intake.h"
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#define SCAN_INTERVAL_MS 10

/* Validates a frontend's message; answers `invalid` when it is not a check
 * we can take. Returns true when in->msg holds a good check. */
static bool
validate(intake_t *in, origin_t origin, zframe_t *body, const av_envelope_t *env)
{
    char why[160], detail[128];
    av_str_t id = { "", 0 };
    if (!body) {
        /* The same on PULL and ROUTER: a message of several frames (its
         * parts never read, so no id to answer on). */
        request_reject(in, origin, id, env, "bad request: more than one frame");
        return false;
    }
    int rc = av_msg_decode(&in->msg, zframe_data(body), zframe_size(body));
    if (rc == 0 && in->msg.type == AV_MSG_CHECK)
        return true;
    /* Answer on the id when the request has a usable one. */
    av_obj_get_str(&in->msg.root, "id", &id);
    if (id.len > AV_ID_MAX)
        id.len = 0;
    av_str_t type;
    if (rc == AV_PROTO_E_UNKNOWN_TYPE && id.len && av_obj_get_str(&in->msg.root, "t", &type) &&
        av_str_eq(type, "ping")) {
        request_pong(in, origin, id, env);
        return false;
    }
    if (rc != 0)
        snprintf(why, sizeof why, "bad request: %s", av_msg_strerror(&in->msg, rc, detail, sizeof detail));
    else
        snprintf(why, sizeof why, "bad request: a %s message, not a check", av_msg_type_name(in->msg.type));
    request_reject(in, origin, id, env, why);
    return false;
}

static bool
on_pull(av_daemon_t *d, zsock_t *sock, void *arg)
{
    (void)d;
    intake_t *in = arg;
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return false;
    in->last_request_us = av_mono_us();
    zframe_t *body = zmsg_size(msg) == 1 ? zmsg_pop(msg) : NULL;
    zmsg_destroy(&msg);
    if (validate(in, ORIGIN_PULL, body, NULL))
        request_accept(in, ORIGIN_PULL, body, NULL, &in->msg.u.check, NULL, NULL);
    else
        zframe_destroy(&body);
    return true;
}

static bool
on_router(av_daemon_t *d, zsock_t *sock, void *arg)
{
    (void)d;
    intake_t *in = arg;
    av_envelope_t env;
    zframe_t *body = av_router_recv(sock, &env);
    if (!body && !env.identity)
        return false;
    in->last_request_us = av_mono_us();
    if (validate(in, ORIGIN_ROUTER, body, &env))
        request_accept(in, ORIGIN_ROUTER, body, NULL, &in->msg.u.check, &env, NULL);
    else
        zframe_destroy(&body);
    av_envelope_clear(&env);
    return true;
}

/* A subscriber's subscribe or unsubscribe, from the results XPUB. */
static bool
on_subscription(av_daemon_t *d, zsock_t *sock, void *arg)
{
    (void)d;
    intake_t *in = arg;
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return false;
    /* a subscription is one frame; anything else a peer sends is not one */
    zframe_t *f = zmsg_size(msg) == 1 ? zmsg_first(msg) : NULL;
    bool came = f && subscriptions_update(in->subscriptions, zframe_data(f), zframe_size(f));
    zmsg_destroy(&msg);
    if (came)
        requests_subscriber_came(in);
    return true;
}

/* Requests still queued on the sockets when we stop: taken in so they
 * reach the journal (and the next intake) instead of dying with us. */
#define STOP_INTAKE_MAX 100000
/* A stopping intake listens on until frontends have been quiet this long:
 * ZeroMQ's I/O thread may not yet have moved a burst out of the kernel's
 * socket buffers (a busy machine, a frontend catching up after our
 * restart), and what is there when the sockets close is lost. */
#define STOP_QUIET_US (50 * 1000)
#define STOP_LISTEN_MAX_US (1000 * 1000)

static bool
drained(intake_t *in)
{
    /* With a journal, what is in flight is the next intake's to finish,
     * once the journal holds it as it is (a full disk may hold up a
     * change), but for gateway clients, whose connections die with us:
     * every one accepted is answered, also one whose line has not come in
     * yet. */
    if (gateway_clients(in->gateway) > 0)
        return false;
    return in->journal ? requests_all_durable(in) : zhashx_size(in->requests) == 0;
}

static void take_in_queued(av_daemon_t *d, intake_t *in);

static void
stop_listening(av_daemon_t *d, intake_t *in)
{
    take_in_queued(d, in);
    av_daemon_unwatch(d, in->pull);
    av_daemon_unwatch(d, in->router);
    in->listening = false;
}

static void
on_scan(av_daemon_t *d, void *arg)
{
    intake_t *in = arg;
    uint64_t now = av_mono_us();
    requests_scan(in, now);
    gateway_scan(in->gateway, now);
    if (!av_daemon_stopping(d))
        return;
    bool quiet = now - in->last_request_us >= STOP_QUIET_US;
    if (in->listening && (quiet || now - in->stop_began_us >= STOP_LISTEN_MAX_US))
        stop_listening(d, in);
    if (!in->listening && drained(in))
        av_daemon_drained(d);
}

static uint64_t
gauge_requests(av_daemon_t *d)
{
    return zhashx_size(((intake_t *)av_daemon_state(d))->requests);
}

static uint64_t
gauge_names(av_daemon_t *d)
{
    return ((intake_t *)av_daemon_state(d))->names_inflight;
}

static uint64_t
gauge_gateway(av_daemon_t *d)
{
    return gateway_clients(((intake_t *)av_daemon_state(d))->gateway);
}

/* Set when intake refuses a damaged journal: main then exits 78. */
static bool journal_damaged;

/* Before the journal is opened (and mapped): a damaged one is not ours to
 * repair, nor to start without. */
static int
refuse_damaged_journal(av_daemon_t *d, const av_config_t *cfg)
{
    char why[256];
    if (!cfg->intake.journal[0] || journal_check(&cfg->intake, why, sizeof why) != -1)
        return 0; /* (cannot tell: LMDB's own open says) */
    journal_damaged = true;
    av_report(d, AV_LOG_ERR, NULL, "journal_damaged",
              "the request journal in %s is damaged (%s): not starting, it holds accepted requests. "
              "Salvage what it holds with `availctl%s%s journal salvage` (it moves the file aside and keeps "
              "every request it can still read), then start intake again",
              cfg->intake.journal, why, cfg->path ? " -c " : "", cfg->path ? cfg->path : "");
    return -1;
}

static int
intake_init(av_daemon_t *d)
{
    const av_config_t *cfg = av_daemon_config(d);
    intake_t *in = calloc(1, sizeof *in);
    if (!in)
        return -1;
    av_daemon_set_state(d, in);
    in->d = d;
    av_msg_init(&in->msg);
    msgpack_sbuffer_init(&in->sbuf);
    in->requests_in = av_daemon_counter(d, "requests");
    in->names_in = av_daemon_counter(d, "names");
    in->invalid_requests = av_daemon_counter(d, "invalid_requests");
    in->answers_out = av_daemon_counter(d, "answers_out");
    in->answers_lost = av_daemon_counter(d, "answers_lost");
    in->answers_held_for_subscriber = av_daemon_counter(d, "answers_held_for_subscriber");
    in->duplicates = av_daemon_counter(d, "duplicates");
    in->stale = av_daemon_counter(d, "stale_answers");
    in->deadlines = av_daemon_counter(d, "deadlines");
    in->overloaded = av_daemon_counter(d, "overloaded");
    in->malformed = av_daemon_counter(d, "malformed");
    if (refuse_damaged_journal(d, cfg) < 0 || requests_start(in) < 0)
        return -1;
    if (!(in->subscriptions = subscriptions_new()) ||
        !(in->results = av_daemon_bind(d, ZMQ_XPUB, cfg->endpoints.intake_results)) ||
        !(in->pull = av_daemon_bind(d, ZMQ_PULL, cfg->endpoints.intake_pull)) ||
        !(in->router = av_daemon_bind(d, ZMQ_ROUTER, cfg->endpoints.intake_router)))
        return -1;
    /* A frontend that reconnects with its fixed routing id before we saw
     * its old connection close takes the id over; without this the new
     * connection would be ignored, its requests never read. */
    zsock_set_router_handover(in->router, 1);
    if (cfg->endpoints.intake_gateway[0] && !(in->gateway = gateway_open(in, cfg->endpoints.intake_gateway)))
        return -1;
    /* Every subscribe and unsubscribe of every subscriber, also those of
     * one that goes: subscriptions.c counts them. */
    zsock_set_xpub_verboser(in->results, 1);
    if (av_daemon_watch(d, in->pull, on_pull, in) < 0 || av_daemon_watch(d, in->router, on_router, in) < 0 ||
        av_daemon_watch(d, in->results, on_subscription, in) < 0)
        return -1;
    in->listening = true;
    if (!(in->scan_timer = av_daemon_every(d, SCAN_INTERVAL_MS, on_scan, in)))
        return -1;
    av_daemon_gauge(d, "requests_inflight", gauge_requests);
    av_daemon_gauge(d, "names_inflight", gauge_names);
    av_daemon_gauge(d, "gateway_clients", gauge_gateway);
    av_daemon_status_text(d, "taking checks");
    return 0;
}

/* Where frontends reach it, the dispatcher it talks to, and its journal.
 * The rest (deadline_ms, max_inflight, resend_ms, gateway_clients,
 * gateway_timeout_ms) is read where it is used, so it applies at once. */
static const av_setting_t intake_restart_settings[] = {
    AV_SETTING("endpoints.intake_pull", endpoints.intake_pull, AV_SETTING_STR),
    AV_SETTING("endpoints.intake_router", endpoints.intake_router, AV_SETTING_STR),
    AV_SETTING("endpoints.intake_results", endpoints.intake_results, AV_SETTING_STR),
    AV_SETTING("endpoints.intake_gateway", endpoints.intake_gateway, AV_SETTING_STR),
    AV_SETTING("endpoints.dispatcher", endpoints.dispatcher, AV_SETTING_STR),
    AV_SETTING("intake.journal", intake.journal, AV_SETTING_STR),
    AV_SETTING("intake.journal_map_mb", intake.journal_map_mb, AV_SETTING_U32),
    AV_SETTING("intake.journal_sync", intake.journal_sync, AV_SETTING_BOOL),
    { NULL, 0, 0 },
};

static int
intake_reload(av_daemon_t *d, const av_config_t *next)
{
    (void)d;
    (void)next;
    return 0;
}

static void
take_in_queued(av_daemon_t *d, intake_t *in)
{
    for (int n = 0; in->router && n < STOP_INTAKE_MAX && (zsock_events(in->router) & ZMQ_POLLIN); n++)
        on_router(d, in->router, in);
    for (int n = 0; in->pull && n < STOP_INTAKE_MAX && (zsock_events(in->pull) & ZMQ_POLLIN); n++)
        on_pull(d, in->pull, in);
}

static int
intake_stop(av_daemon_t *d)
{
    intake_t *in = av_daemon_state(d);
    take_in_queued(d, in);
    gateway_stop_listening(in->gateway);
    in->stop_began_us = av_mono_us();
    return 0; /* on_scan stops listening once frontends are quiet */
}

static void
intake_fini(av_daemon_t *d)
{
    intake_t *in = av_daemon_state(d);
    if (!in)
        return;
    /* Frontends kept sending while we drained: take that in too, commit
     * it, and close the sockets right after, so that what reached us is in
     * the journal for the next intake. */
    if (in->journal && av_daemon_stopping(d))
        take_in_queued(d, in);
    requests_flush(in);
    if (in->pull)
        av_daemon_unwatch(d, in->pull);
    if (in->router)
        av_daemon_unwatch(d, in->router);
    zsock_destroy(&in->pull);
    zsock_destroy(&in->router);
    if (in->results)
        av_daemon_unwatch(d, in->results);
    zsock_destroy(&in->results);
    subscriptions_destroy(&in->subscriptions);
    gateway_close(&in->gateway);
    requests_close(in);
    sd_event_source_disable_unref(in->scan_timer);
    av_msg_release(&in->msg);
    msgpack_sbuffer_destroy(&in->sbuf);
    free(in);
    av_daemon_set_state(d, NULL);
}

int
main(int argc, char **argv)
{
    int status = av_daemon_main(argc, argv,
                                &(av_daemon_hooks_t){
                                    .name = "intake",
                                    .summary = "availd-intake: where frontends ask availd, and get their answers",
                                    .init = intake_init,
                                    .on_reload = intake_reload,
                                    .restart_settings = intake_restart_settings,
                                    .on_stop = intake_stop,
                                    .fini = intake_fini,
                                });
    /* A failed start is 1 to the skeleton; a damaged journal is the
     * operator's to salvage, not a crash to restart (AV_EXIT_CONFIG). */
    return journal_damaged ? AV_EXIT_CONFIG : status;
}
