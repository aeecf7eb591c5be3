/* The querier's job, shared by its files: checks waiting and in flight, the
 * registry's limits, and the small interface every protocol implements. */
#ifndef QUERIER_H
#define QUERIER_H

#include "av_classify.h"
#include "av_daemon.h"
#include "av_names.h"
#include "av_poller.h"

#include <netinet/in.h>
#include <sys/socket.h>

typedef struct querier querier_t;
typedef struct query query_t;

/* One check of one name, from arrival to answer. */
struct query {
    query_t *prev, *next;     /* in the waiting queue or the in-flight list */
    querier_t *q;
    uint64_t rid;             /* the dispatcher's task number */
    char name[AV_DOMAIN_MAX + 1];
    bool want_raw;
    uint64_t arrived_us;
    uint64_t started_us;      /* sent to the registry */
    uint64_t deadline_us;     /* answer by then, whatever happens */
    /* protocol state */
    int fd;
    av_poll_handle_t poll;
    char *request;            /* the query line */
    size_t request_len;
    size_t request_sent;
    char *reply;
    size_t reply_len;
    size_t reply_cap;
    bool truncated;           /* reply longer than max_reply_bytes */
    void *http;               /* RDAP: the transfer (CURL easy handle) */
    av_source_t source;       /* set when the verdict is not the protocol's (DNS) */
    uint32_t retry_after_s;   /* RDAP: from a 429/503 reply */
};

typedef struct {
    query_t *head, *tail;
    uint32_t count;
} query_list_t;

/* A protocol speaks to the registry for one query and calls
 * querier_finish when it has the whole reply or failed. */
typedef struct {
    const char *name;
    av_source_t source;
    int (*start)(querier_t *q, query_t *query);
    void (*abort)(querier_t *q, query_t *query); /* release I/O, no answer */
} protocol_t;

extern const protocol_t whois_protocol;
extern const protocol_t das_protocol;
extern const protocol_t rdap_protocol;

struct querier {
    av_daemon_t *d;
    const av_registry_cfg_t *registry;  /* points into the daemon's config */
    const protocol_t *protocol;
    av_classifier_t *classifier;
    zsock_t *dispatcher;                /* DEALER to the dispatcher's workers ROUTER */
    av_poller_t *poller;                /* the registry connections */
    struct rdap *rdap;                  /* RDAP transfers (rdap.c) */
    struct dns *dns;                    /* the DNS pre-check (dns.c) */
    struct dns *resolver;               /* the registry host's address (dns.c), made when first needed */
    bool resolving;
    query_list_t dns_pending;           /* asked in the DNS first */
    struct sockaddr_storage addr;       /* the registry's server */
    socklen_t addr_len;
    bool addr_ready;
    uint64_t addr_tried_us;      /* last resolution; 0 = not yet (it waits for the first query) */
    char addr_error[128];
    query_list_t waiting;               /* arrived, not yet sent */
    query_list_t inflight;              /* sent to the registry */
    uint32_t capacity;                  /* waiting + in flight */
    double tokens;                      /* rate limit bucket */
    uint64_t tokens_at_us;
    uint64_t backoff_until_us;
    bool pumping;
    sd_event_source *pump_timer;        /* next moment a waiting query may go */
    sd_event_source *timeout_timer;
    sd_event_source *heartbeat_timer;
    uint64_t *checks;
    uint64_t *answers[AV_STATUS_COUNT];
    uint64_t *timeouts;
    uint64_t *registry_errors;
    uint64_t *rate_limited;
    uint64_t *backoffs;
    uint64_t *rate_limit_waits;  /* times our own rate_limit held queries back */
    uint64_t *malformed;
    uint64_t *handed_back;
};

const av_registry_cfg_t *querier_registry(const av_config_t *cfg, const char *instance);
int querier_start(querier_t *q, av_daemon_t *d);
/* rdap.c: the transfer machinery of an RDAP registry. */
/* dns.c: the pre-check. dns_precheck asks for x's delegation and calls
 * querier_dns_done with the result (also when the lookup fails). */
int dns_open(querier_t *q);
void dns_close(querier_t *q);
int dns_precheck(querier_t *q, query_t *x);
void querier_dns_done(querier_t *q, query_t *x, bool delegated);
/* dns_resolve looks the registry's host up with the system's resolver and
 * calls querier_address with the address, or with why there is none (it
 * may do so before it returns: a numeric host, /etc/hosts). */
int dns_resolve(querier_t *q, const char *host, uint32_t port);
void dns_resolver_close(querier_t *q);
void querier_address(querier_t *q, const struct sockaddr *addr, socklen_t len, const char *error);
int rdap_open(querier_t *q);
void rdap_set_base(querier_t *q, const char *base_url);
void rdap_close(querier_t *q);
int querier_reload(querier_t *q, const av_registry_cfg_t *next);
void querier_stop(querier_t *q);  /* hand back the waiting, keep the in-flight */
void querier_close(querier_t *q);
void querier_take(querier_t *q, const av_check_t *check);

/* Protocols call one of these exactly once per started query. */
void querier_finish(querier_t *q, query_t *query); /* reply in query->reply: the patterns decide */
/* The protocol decided itself (RDAP's HTTP status); a rate_limited reason
 * backs off for backoff_s, or the registry's backoff_s when 0. */
void querier_decide(querier_t *q, query_t *query, av_status_t status, const char *reason, const char *decided_by,
                    uint32_t backoff_s);
void querier_fail(querier_t *q, query_t *query, const char *reason, const char *detail);

#endif
