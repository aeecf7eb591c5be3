/* availd.yaml as typed structs. Every daemon and availctl load the same file
 * through av_config_load; a bad file is refused with "path:line:col: why". */
#ifndef AV_CONFIG_H
#define AV_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AV_CONFIG_ERR_MAX   512
#define AV_LOG_TARGETS_MAX  4
#define AV_CIDRS_MAX        64
#define AV_INCLUDE_DEPTH    4

typedef struct {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint8_t prefix;      /* bits */
} av_cidr_t;

typedef struct {
    av_cidr_t items[AV_CIDRS_MAX];
    uint32_t count;
} av_cidr_list_t;

typedef enum {
    AV_LOG_STDERR = 1,
    AV_LOG_SYSLOG,
    AV_LOG_JOURNALD,
    AV_LOG_FILE,
} av_log_kind_t;

typedef struct {
    av_log_kind_t kind;
    char *path;          /* AV_LOG_FILE */
} av_log_target_t;

/* Process settings: kept from the old daemon where they still make sense.
 * The top-level `process:` block gives defaults; a daemon's own block
 * overrides them key by key. */
typedef struct {
    av_log_target_t log[AV_LOG_TARGETS_MAX];
    uint32_t n_log;
    uint32_t log_level;      /* 0 err .. 4 debug */
    char *daemon_name;       /* syslog ident and process title */
    char *pid_file;
    bool daemonize;
    char *user;
    char *group;
    av_cidr_list_t cidr_allow;
    av_cidr_list_t cidr_deny;
    uint64_t max_requests;   /* recycle after N checks; 0 = never */
    uint32_t drain_ms;       /* bound on a graceful stop */
    char *control;           /* control endpoint; default from endpoints.control */
    uint64_t set;            /* bit per key present in the file */
} av_process_cfg_t;

typedef struct {
    char *intake_pull;       /* PULL: fire-and-forget checks */
    char *intake_router;     /* ROUTER: request-reply */
    char *intake_results;    /* PUB: answers, topic = requester's id */
    char *intake_gateway;    /* tcp://host:port whois-protocol line gateway; may be empty */
    char *dispatcher;        /* ROUTER the intakes connect to */
    char *dispatcher_workers;/* ROUTER the queriers connect to */
    char *cache_puts;        /* PULL: answers to store */
    char *errors_events;     /* PULL: error events from every daemon */
    char *errors_publish;    /* PUB: topic LEVEL.DAEMON.REGISTRY */
    char *control;           /* template; %s = daemon instance name */
} av_endpoints_cfg_t;

typedef struct {
    av_process_cfg_t process;
    uint32_t deadline_ms;        /* default budget of a check */
    uint32_t max_inflight;       /* requests accepted and not answered */
    uint32_t gateway_clients;    /* open TCP gateway connections */
    uint32_t gateway_timeout_ms; /* a gateway client must send its line within */
    char *journal;               /* LMDB journal path; "" = no journal */
    uint32_t journal_map_mb;
    bool journal_sync;           /* fsync every commit (else every second) */
    uint32_t resend_ms;          /* resend a request whose answer is overdue */
} av_intake_cfg_t;

typedef struct {
    av_process_cfg_t process;
    uint32_t heartbeat_ms;       /* queriers heartbeat this often */
    uint32_t heartbeat_misses;   /* silent for this many intervals = dead */
    uint32_t max_inflight;       /* distinct names in flight, all registries */
    uint32_t max_inflight_per_registry;
    uint32_t max_attempts;       /* dispatches of one name before `unknown` */
    uint32_t overdue_margin_ms;  /* added to a registry's timeout */
    uint32_t querier_grace_ms;   /* checks wait this long for a querier to come back */
} av_dispatcher_cfg_t;

typedef struct {
    av_process_cfg_t process;
    char *source_address;        /* bind outgoing queries to this address ("" = the system's choice) */
} av_querier_cfg_t;

typedef struct {
    av_process_cfg_t process;
    char *path;                  /* LMDB environment (answers + timing) */
    uint32_t map_size_mb;
    uint64_t max_entries;
    uint32_t sweep_interval_s;
    uint32_t batch_max;          /* puts per write transaction */
} av_cache_cfg_t;

typedef struct {
    av_process_cfg_t process;
    char *path;                  /* LMDB global error database */
    uint32_t map_size_mb;
    uint64_t retention_count;
    uint32_t retention_s;
    uint32_t batch_max;          /* events per write transaction */
} av_errors_cfg_t;

typedef enum {
    AV_PROTO_WHOIS = 1,
    AV_PROTO_DAS,
    AV_PROTO_RDAP,
} av_registry_proto_t;

typedef enum {
    AV_PAT_AVAILABLE = 0,
    AV_PAT_REGISTERED,
    AV_PAT_RESERVED,
    AV_PAT_RATE_LIMITED,
    AV_PAT_ERROR,        /* the registry reports a failure of its own: unknown, registry_error */
    AV_PAT_KINDS
} av_pattern_kind_t;

typedef struct {
    char **items;
    uint32_t count;
} av_strlist_t;

/* How a whois or DAS reply is read: by the registry's own patterns, or by
 * the generic reading of whois replies (record data means registered; a
 * common "not found" wording with no record data and no DNS delegation
 * means available; anything else unknown), for registries without tuned
 * patterns. The registry's own patterns, if any, are tried first. */
typedef enum {
    AV_READING_PATTERNS = 0,
    AV_READING_GENERIC,
} av_reading_t;

/* Where a registry entry comes from: the file, or made for the TLDs the
 * file does not name (see av_routes.h). */
typedef enum {
    AV_ORIGIN_EXPLICIT = 0,      /* registries: in availd.yaml or registries.yaml */
    AV_ORIGIN_BOOTSTRAP,         /* one per RDAP base URL of the IANA bootstrap */
    AV_ORIGIN_IANA_WHOIS,        /* one per whois server of whois-servers.txt */
} av_registry_origin_t;

typedef struct {
    char *name;
    av_strlist_t tlds;           /* lower case, no leading dot: the public suffixes it serves */
    av_registry_proto_t protocol;
    char *host;
    uint32_t port;
    char *base_url;
    char *query;                 /* template: one %s (the name) or %l (its first label) */
    av_strlist_t patterns[AV_PAT_KINDS];
    bool posix_patterns;         /* POSIX ERE instead of PCRE2 */
    av_reading_t reading;
    uint32_t rate_queries;       /* rate limit: queries per rate_period_s */
    uint32_t rate_period_s;
    uint32_t rate_burst;
    uint32_t concurrency;        /* queries in flight to the registry */
    uint32_t queue;              /* checks a querier holds waiting for a slot or a token */
    uint32_t timeout_ms;
    uint32_t max_reply_bytes;
    uint32_t backoff_s;          /* pause after a rate-limit reply */
    uint32_t ttl_s[5];           /* by av_status_t */
    uint32_t raw_bytes;          /* excerpt kept with an answer; 0 = none */
    uint32_t queriers;           /* querier processes: NAME, NAME.2 ... NAME.N */
    bool dns_precheck;           /* a delegation in the TLD's zone means registered */
    av_strlist_t dns_servers;    /* "IP" or "IP:PORT"; none: the system's resolvers */
    char *ca_file;               /* RDAP: trust these CAs (PEM) instead of the system's */
    uint32_t connections;        /* RDAP: connections to the server (HTTP/2 multiplexes on each) */
    av_registry_origin_t origin;
    uint32_t group;              /* its querier group: an index into av_config_t.groups */
    uint32_t line; uint32_t column; /* where it was defined, for messages */
    bool budget_per_address;     /* budget: per_address (each source address its own); else global */
} av_registry_cfg_t;

/* A querier group: availd-querier@NAME serves these registries, each with
 * its own budget. Every registry is in exactly one group: the one that
 * names it, else the one that serves its protocol, else a group of its own
 * named after it (explicit registries; `queriers: N` gives it N processes)
 * or "rdap" / "whois" for implicit ones. */
typedef struct {
    char *name;
    av_strlist_t named;          /* registries named in the file */
    uint32_t serves;             /* 1 << av_registry_proto_t: every registry of these no other group names */
    uint32_t instances;          /* querier processes: NAME, NAME.2 ... NAME.N */
    uint32_t *members;           /* indices into av_config_t.registries */
    uint32_t n_members;
    uint32_t line; uint32_t column; /* 0 for a group the file does not declare */
} av_group_cfg_t;

/* availd-http: the web's way in (HTTP/JSON, Server-Sent Events, the search
 * page). Runs only when the file has an `http:` section. */
typedef struct {
    av_process_cfg_t process;
    bool enabled;                /* the file has an http: section */
    char *listen;                /* tcp://HOST:PORT */
    char *www;                   /* the search page's files */
    av_strlist_t tlds;           /* the search page checks a name across these */
    av_strlist_t cors_origins;   /* Origins allowed to read answers ("*": any) */
    char *api_keys;              /* file: one `KEY [NAMES_PER_S [BURST]]` a line; "" none */
    uint32_t max_connections;    /* open connections, all clients */
    uint32_t max_connections_per_ip; /* 0: no limit of its own */
    uint32_t idle_timeout_s;     /* a connection silent this long is closed */
    uint32_t max_body_bytes;     /* a request body past it: 413 */
    uint32_t max_names;          /* names in one request (the protocol's 1,000 at most) */
    uint32_t client_rate;        /* names a second per client (address or key) */
    uint32_t client_burst;       /* names a client may ask at once */
    uint32_t max_clients;        /* clients whose budget is tracked */
    uint32_t max_pending;        /* names waiting for intake, all clients: past it 503 */
    uint32_t max_streams;        /* open event streams */
    uint32_t deadline_ms;        /* default budget of a check; 0: intake.deadline_ms */
    bool cache_direct;           /* answer fresh cached names from the cache's LMDB */
} av_http_cfg_t;

/* CURVE across hosts (`curve:`, see av_curve.h): which peers may connect
 * to a tcp:// endpoint is decided per kind of endpoint. */
typedef enum {
    AV_PEERS_FRONTENDS = 0,      /* intake_pull, intake_router, intake_results */
    AV_PEERS_QUERIERS,           /* dispatcher_workers, errors_events */
    AV_PEERS_MONITORING,         /* errors_publish */
    AV_PEERS_CONTROL,            /* every daemon's control endpoint */
    AV_PEERS_CORE,               /* dispatcher, cache_puts: the core's own daemons */
    AV_PEERS_KINDS
} av_peers_t;

typedef struct {
    char *secret_key;            /* this host's key pair (CZMQ certificate: FILE_secret or FILE) */
    char *server_key;            /* public certificate of the host we connect to; default: our own */
    char *allow[AV_PEERS_KINDS]; /* directories of public certificates, per kind of endpoint */
    char *at;                    /* "path:line:col" of curve:, for messages */
} av_curve_cfg_t;

/* Every endpoint the file names, with where: for the refusal of a tcp://
 * endpoint beyond loopback without CURVE, and its `insecure: true`. */
typedef struct {
    char *endpoint;
    bool insecure;
    char *at;                    /* "path:line:col" */
} av_endpoint_note_t;

typedef struct {
    char *path;                  /* the file loaded */
    char *runtime_dir;           /* relative ipc:// endpoints live here */
    char *state_dir;             /* relative database paths live here */
    char *rdap_bootstrap;        /* RFC 9224 dns.json: base URLs of RDAP registries without one */
    char *whois_servers;         /* suffix -> port-43 server (tools/make-whois-servers) */
    bool implicit_registries;    /* route TLDs the file does not name by the bootstrap and whois_servers
                                    (the shipped availd.yaml says true; off by default) */
    char *implicit_at;           /* "path:line:col" of implicit_registries, for the messages about
                                    the files it reads */
    av_registry_cfg_t implicit_rdap;  /* settings of implicit RDAP registries */
    av_registry_cfg_t implicit_whois; /* ... and of implicit whois ones */
    av_endpoints_cfg_t endpoints;
    av_process_cfg_t process;    /* defaults for every daemon */
    av_intake_cfg_t intake;
    av_dispatcher_cfg_t dispatcher;
    av_querier_cfg_t querier;
    av_cache_cfg_t cache;
    av_errors_cfg_t errors;
    av_http_cfg_t http;
    av_registry_cfg_t *registries;
    uint32_t n_registries;
    av_group_cfg_t *groups;
    uint32_t n_groups;
    av_strlist_t unrouted;       /* TLDs of whois_servers with no service known at all */
    bool partial;                /* av_config_load_partial: skip what is wrong */
    char *skipped;               /* ... the first error it skipped; NULL when none */

    av_curve_cfg_t curve;
    uint32_t runs;               /* runs: the daemons this host runs, 1 << av_daemon_kind_t; 0 = every one */
    av_endpoint_note_t *endpoint_notes;
    uint32_t n_endpoint_notes;
} av_config_t;

/* Loads and validates path. On success returns 0 and *out owns a config;
 * on error returns -1 and err holds "path:line:col: what is wrong". */
int av_config_load(const char *path, av_config_t **out, char *err, size_t errlen);
/* For tools that need only the endpoints (availctl status, errors,
 * metrics) while the file on disk is broken: a key whose value is wrong
 * (and an unknown key) is skipped and keeps its default, and cfg->skipped
 * says the first such error ("file:line:column: why"). Fails only when the
 * file cannot be read or parsed as YAML at all, or what is left does not
 * hold together. */
int av_config_load_partial(const char *path, av_config_t **out, char *err, size_t errlen);
void av_config_free(av_config_t **self_p);

/* The process settings of one daemon ("intake", "querier"...), with the
 * top-level defaults folded in. NULL for an unknown name. */
const av_process_cfg_t *av_config_process(const av_config_t *self, const char *daemon);
const av_registry_cfg_t *av_config_registry(const av_config_t *self, const char *name);
/* The querier group of an instance name: GROUP or GROUP.N (N <= its
 * instances). NULL when the config has none. */
const av_group_cfg_t *av_config_group(const av_config_t *self, const char *instance);
/* A public suffix as availd keeps it: lower-case A-labels (letters, digits,
 * '-') joined by single dots, at most 253 bytes. */
bool av_tld_valid(const char *s);
const char *av_registry_origin_name(av_registry_origin_t origin);
const char *av_registry_proto_name(av_registry_proto_t protocol);
/* A registry's settings that outlive their config (a daemon that keeps
 * running on them after a reload). NULL when out of memory. */
av_registry_cfg_t *av_registry_cfg_dup(const av_registry_cfg_t *src);
void av_registry_cfg_free(av_registry_cfg_t **self_p);

bool av_cidr_parse(const char *text, av_cidr_t *out);
bool av_cidr_match(const av_cidr_t *cidr, const struct sockaddr *addr);
/* Allowed when no deny matches and (allow is empty or an allow matches). */
bool av_cidr_allowed(const av_cidr_list_t *allow, const av_cidr_list_t *deny,
                     const struct sockaddr *addr);

/* The control endpoint of a daemon instance ("errors", "querier-verisign"). */
int av_control_endpoint(const av_config_t *cfg, const char *ident, char *out, size_t size);

/* Daemons, for `runs:` (which of them this host runs: availd-generator
 * enables only those units, so availd.target works on a querier host). */
typedef enum { AV_RUNS_INTAKE = 0, AV_RUNS_DISPATCHER, AV_RUNS_CACHE, AV_RUNS_ERRORS, AV_RUNS_QUERIER,
               AV_RUNS_KINDS } av_daemon_kind_t;
bool av_config_runs(const av_config_t *cfg, av_daemon_kind_t kind);
const char *av_daemon_kind_name(av_daemon_kind_t kind);

/* Did the file say `insecure: true` for this endpoint? */
bool av_endpoint_insecure(const av_config_t *cfg, const char *endpoint);
/* Which peers connect to one of our endpoints (control when it is none of
 * the endpoints: section). */
av_peers_t av_endpoint_peers(const av_config_t *cfg, const char *endpoint);
const char *av_peers_name(av_peers_t kind);
/* tcp:// on an address other than loopback (127.0.0.0/8, ::1, localhost). */
bool av_endpoint_beyond_host(const char *endpoint);

/* Checks a ZeroMQ endpoint of ours: ipc://PATH or tcp://HOST:PORT. */
bool av_endpoint_valid(const char *endpoint, char *why, size_t whylen);

/* Every key the loader accepts, walked from the tables it validates with
 * (for availd.yaml(5), made by man/config-manual, and its tests). A key's
 * path joins its sections with dots; NAME stands for a registry's or a
 * querier group's name. default_text is the value an absent key takes
 * ("" when it has none, as for a map or a list). */
typedef struct {
    const char *path;          /* "intake.deadline_ms", "registries.NAME.ttl.available" */
    const char *type;          /* "integer", "boolean", "string", "path", "endpoint", "list", "map"... */
    const char *default_text;
    const char *range_text;    /* "1..3600000", "whois, das or rdap"; "" when any value of the type */
    bool required;
    bool section;              /* a map whose keys follow */
} av_config_key_t;

/* Calls fn for each key, in the order of the tables; returns the count, or
 * -1 when out of memory. */
int av_config_keys(void (*fn)(const av_config_key_t *key, void *arg), void *arg);

#endif
