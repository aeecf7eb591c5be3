/* The intake's state, shared by its files: requests accepted and not yet
 * answered, whichever way they came in, and what one loop turn has to
 * journal, forward and deliver. */
#ifndef INTAKE_H
#define INTAKE_H

#include "av_daemon.h"
#include "subscriptions.h"

#include <sys/queue.h>

typedef struct intake intake_t;
typedef struct request request_t;
typedef struct gateway gateway_t;
typedef struct gateway_conn gateway_conn_t;
typedef struct journal journal_t;
typedef struct reply_peer reply_peer_t;
typedef struct reply_budget reply_budget_t;

typedef enum {
    ORIGIN_PULL = 1,  /* answers are published, topic = id */
    ORIGIN_ROUTER,    /* one reply with every answer */
    ORIGIN_GATEWAY,   /* a line on a TCP connection */
} origin_t;

struct request {
    TAILQ_ENTRY(request) deadline_entry; /* in the deadline-ordered list */
    TAILQ_ENTRY(request) sent_entry;  /* forwarded: in the list by last send, for resends */
    uint64_t rid;
    origin_t origin;
    zframe_t *frame;             /* the request's bytes: id and names point here */
    char *owned;                 /* or here (gateway, journal) */
    av_str_t id;
    av_str_t *names;
    uint32_t n_names;
    bool batch;                  /* asked with `names`: answers carry idx */
    bool fresh;
    bool raw;
    bool forwarded;
    bool journal_dirty;          /* its record must be rewritten this turn */
    bool journaled;              /* its record is queued or written: its end
                                  * deletes it, its answers wait for that */
    bool durable;                /* its record is written */
    uint32_t answered;
    uint8_t *done;               /* per name */
    char **encoded;              /* ROUTER batch: each answer, until all are in */
    uint32_t *encoded_len;
    uint64_t deadline_us;
    uint64_t deadline_at_ms;     /* the same, on the wall clock (journal) */
    uint64_t last_sent_us;
    av_envelope_t env;           /* ROUTER: where the reply goes */
    gateway_conn_t *conn;        /* GATEWAY: the client, NULL if it left */
};

TAILQ_HEAD(request_list, request);

typedef struct {
    uint64_t *rids;
    uint32_t count;
    uint32_t cap;
} rid_list_t;

/* An answer waiting for the journal commit of its loop turn. */
typedef struct {
    origin_t origin;
    zframe_t *identity;          /* ROUTER */
    bool delimiter;
    char *topic;                 /* PULL */
    uint32_t topic_len;
    char *bytes;
    size_t size;
    uint64_t held_until_us;      /* unroutable: try again until then */
    uint64_t unmatched_at;       /* PULL: subscriptions' generation + 1 when no subscriber matched */
    reply_peer_t *peer;          /* held ROUTER reply: its frontend's account */
    bool after_journal;          /* its request's journal changes first */
} outgoing_t;

struct intake {
    av_daemon_t *d;
    zsock_t *pull;
    zsock_t *router;
    zsock_t *results;            /* XPUB: publishes, and says who subscribes */
    subscriptions_t *subscriptions; /* its subscribers' prefixes */
    zsock_t *dispatcher;         /* DEALER */
    zsock_t *monitor;            /* PAIR: the DEALER's connection events */
    bool dispatcher_was_lost;
    bool dispatcher_batches;     /* it reads checks in batches (it said so) */
    gateway_t *gateway;
    journal_t *journal;          /* NULL when intake.journal is "" */
    zhashx_t *requests;          /* rid -> request */
    struct request_list by_deadline;
    struct request_list by_sent;   /* forwarded requests, least recently sent first */
    uint64_t next_rid;
    uint64_t names_inflight;
    rid_list_t to_forward;       /* accepted this turn */
    rid_list_t to_rejournal;     /* pushed batches that published an answer */
    outgoing_t *outbox;          /* answers of this turn */
    uint32_t n_outbox;
    uint32_t cap_outbox;
    outgoing_t *held;            /* replies to frontends not connected yet */
    uint32_t n_held;
    uint32_t cap_held;
    size_t held_bytes;
    zhashx_t *reply_peers;       /* routing id (hex) -> reply_peer_t, while it has replies queued or held */
    reply_budget_t *reply_budget; /* bytes of replies in ZeroMQ's queues */
    uint64_t peers_swept_us;
    outgoing_t *waiting;         /* answers whose journal changes failed to
                                  * commit: sent once a commit writes them */
    uint32_t n_waiting;
    uint32_t cap_waiting;
    sd_event_source *turn_end;
    av_msg_t msg;                /* reused for every message decoded */
    msgpack_sbuffer sbuf;        /* reused for every message encoded */
    sd_event_source *scan_timer;
    bool listening;              /* pull and router are still read */
    uint64_t stop_began_us;
    uint64_t last_request_us;    /* when a frontend's message last came in */
    uint64_t *requests_in;
    uint64_t *names_in;
    uint64_t *invalid_requests;
    uint64_t *answers_out;
    uint64_t *answers_lost;
    uint64_t *answers_held_for_subscriber; /* published once a subscriber came */
    uint64_t *duplicates;
    uint64_t *stale;
    uint64_t *deadlines;
    uint64_t *overloaded;
    uint64_t *malformed;
    uint64_t *resent;
    uint64_t *resubmitted;
    uint64_t *storage_refused;   /* names answered unknown (storage) */
};

/* requests.c */
/* The request table, without sockets (requests_start does the rest). */
int requests_init(intake_t *in);
int requests_start(intake_t *in);
/* Rebuilds the requests the journal holds and queues them for the
 * dispatcher; unreadable records are queued for deletion. */
int requests_resubmit_journal(intake_t *in);
void requests_close(intake_t *in);
/* The end of the current turn now: commit (trying the journal at once,
 * even while it fails), forward, answer. */
void requests_flush(intake_t *in);
/* Nothing waits for the journal: no change a commit failed to write, no
 * answer held for one. True without a journal. */
bool requests_all_durable(const intake_t *in);
/* Accepts a request whose names are views into frame or owned; takes
 * ownership of both. Returns the request, or NULL when it was answered at
 * once (overloaded). */
request_t *request_accept(intake_t *in, origin_t origin, zframe_t *frame, char *owned, const av_check_t *check,
                          const av_envelope_t *env, gateway_conn_t *conn);
/* Answers a request that could not be parsed. */
void request_reject(intake_t *in, origin_t origin, av_str_t id, const av_envelope_t *env, const char *why);
/* Answers a `ping` with a `pong` on its id: on the PULL way, published
 * with the id as topic (a frontend's proof that its subscription is in). */
void request_pong(intake_t *in, origin_t origin, av_str_t id, const av_envelope_t *env);
void requests_scan(intake_t *in, uint64_t now_us);
void request_forget_conn(request_t *req);
/* Sends every unanswered name again (the dispatcher came back). */
void requests_resend_all(intake_t *in);
/* A subscriber came: held answers that it matches go now. */
void requests_subscriber_came(intake_t *in);

/* gateway.c */
/* How the gateway reads a client's line, without sockets (tests/fuzz reads
 * lines through it): in[0..len) came in, the first `seen` bytes of it
 * already without a line end, into a buffer of cap bytes. A name is
 * in[*start..*end): the first line without its end and surrounding blanks. */
typedef enum {
    GATEWAY_LINE_PARTIAL = 0,  /* no line end yet: read on */
    GATEWAY_LINE_NAME,         /* a name to check */
    GATEWAY_LINE_EMPTY,        /* a line of blanks: "% empty query" */
    GATEWAY_LINE_TOO_LONG,     /* cap bytes and no line end: "% query too long" */
} gateway_line_t;
gateway_line_t gateway_read_line(const char *in, size_t len, size_t seen, size_t cap, size_t *start, size_t *end);
gateway_t *gateway_open(intake_t *in, const char *endpoint);
void gateway_close(gateway_t **self_p);
void gateway_scan(gateway_t *gw, uint64_t now_us);
/* The answer for the connection's name: write the line and close. */
void gateway_answer(gateway_conn_t *conn, const char *line, size_t len);
void gateway_conn_bind(gateway_conn_t *conn, request_t *r);
/* Connections open: accepted and not yet answered and closed. */
uint32_t gateway_clients(const gateway_t *gw);
/* Stop accepting; the connections open finish. */
void gateway_stop_listening(gateway_t *gw);

#endif
