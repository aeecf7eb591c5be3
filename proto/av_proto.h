/* The messages availd's daemons and frontends exchange: one list of types,
 * their C shapes, and their msgpack encoding. This header is the single
 * source of truth for the wire format; proto/README.md documents it for
 * frontend authors. */
#ifndef AV_PROTO_H
#define AV_PROTO_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Version written into every message. A daemon accepts any v >= 1 and reads
 * the keys it knows, so an older and a newer daemon can run side by side. */
#define AV_PROTO_VERSION 1

/* Bounds on what a message may carry. Anything larger is rejected. */
#define AV_MSG_MAX_BYTES     (1024 * 1024) /* one encoded message */
#define AV_ID_MAX            256           /* requester's id */
#define AV_NAME_MAX          1024          /* a name as asked, before normalising */
#define AV_BATCH_MAX         1000          /* names in one check */
#define AV_REGISTRY_MAX      64            /* registry name */
#define AV_REASON_MAX        256
#define AV_TEXT_MAX          4096          /* error event text */
#define AV_RAW_MAX           4096          /* raw excerpt of a registry reply */
#define AV_DAEMON_MAX        64
#define AV_CODE_MAX          64
#define AV_DEPTH_MAX         8             /* nesting of maps and arrays */

typedef enum {
    AV_MSG_CHECK = 1,   /* frontend -> intake -> dispatcher -> querier */
    AV_MSG_ANSWER,      /* back the same way; published by intake */
    AV_MSG_READY,       /* querier -> dispatcher: I can take `credit` more */
    AV_MSG_HEARTBEAT,   /* both ways between querier and dispatcher */
    AV_MSG_BYE,         /* querier -> dispatcher: leaving, re-dispatch my work */
    AV_MSG_ERROR,       /* any daemon -> errors */
    AV_MSG_PUT,         /* dispatcher -> cache: an answer to store, a timing sample */
    AV_MSG_CTL,         /* availctl -> a daemon's control endpoint */
    AV_MSG_CTL_REPLY,   /* the daemon's reply */
    AV_MSG_ANSWERS,     /* intake -> request-reply frontend: every answer of a batch */
} av_msg_type_t;

typedef enum {
    AV_STATUS_AVAILABLE = 0,
    AV_STATUS_REGISTERED,
    AV_STATUS_RESERVED,
    AV_STATUS_INVALID,
    AV_STATUS_UNKNOWN,
    AV_STATUS_COUNT
} av_status_t;

/* Where an answer came from. */
typedef enum {
    AV_SOURCE_NONE = 0, /* decided by availd itself (invalid, no querier...) */
    AV_SOURCE_CACHE,
    AV_SOURCE_WHOIS,
    AV_SOURCE_DAS,
    AV_SOURCE_RDAP,
    AV_SOURCE_DNS,
    AV_SOURCE_EPP,
    AV_SOURCE_COUNT
} av_source_t;

/* Log and event levels, as the old daemon's log_level 0-4. */
typedef enum {
    AV_LEVEL_ERR = 0,
    AV_LEVEL_WARNING,
    AV_LEVEL_NOTICE,
    AV_LEVEL_INFO,
    AV_LEVEL_DEBUG,
    AV_LEVEL_COUNT
} av_level_t;

/* Decoding errors. Every rejection is one of these, never a crash. */
typedef enum {
    AV_PROTO_OK = 0,
    AV_PROTO_E_TOO_BIG = -1,      /* more than AV_MSG_MAX_BYTES */
    AV_PROTO_E_NOT_MSGPACK = -2,  /* not one complete msgpack value */
    AV_PROTO_E_NOT_MAP = -3,      /* top level is not a map */
    AV_PROTO_E_MISSING = -4,      /* a required key is absent */
    AV_PROTO_E_TYPE = -5,         /* a key has the wrong type */
    AV_PROTO_E_TOO_LONG = -6,     /* a string or array exceeds its bound */
    AV_PROTO_E_UNKNOWN_TYPE = -7, /* `t` names no type we know */
    AV_PROTO_E_VALUE = -8,        /* a value outside its allowed set */
    AV_PROTO_E_NOMEM = -9,
} av_proto_err_t;

/* A string inside a decoded message: not NUL-terminated, valid as long as
 * the bytes it was decoded from. */
typedef struct {
    const char *ptr;
    uint32_t len;
} av_str_t;

#define AV_STR(s) ((av_str_t){ (s), (uint32_t)sizeof(s) - 1 })
/* A view of a C string; NULL gives the empty string, never a NULL pointer
 * (memcpy and friends must not see one, even for zero bytes). */
static inline av_str_t
av_str(const char *s)
{
    av_str_t r = { s ? s : "", 0 };
    while (r.ptr[r.len])
        r.len++;
    return r;
}
bool av_str_eq(av_str_t a, const char *s);
/* Copy into a NUL-terminated buffer; truncates to size-1. */
void av_str_copy(char *dst, size_t size, av_str_t s);

typedef struct {
    av_str_t id;          /* the requester's; echoed in every answer */
    av_str_t name;        /* one name, or ... */
    const msgpack_object *names; /* ... a batch (array of strings), as decoded */
    const av_str_t *name_views;  /* ... or a batch to encode, as views (names unset) */
    uint32_t n_names;     /* 0 when `name` is used */
    bool fresh;           /* bypass the cache */
    bool raw;             /* wants the registry's raw reply excerpt */
    uint32_t deadline_ms; /* 0: the daemon's default */
    /* Internal correlation, set by intake and the dispatcher. rid starts
     * at 1; idx (position in the request) travels only with a rid. */
    uint64_t rid;
    uint32_t idx;
    /* Between daemons: further checks riding in the same message (an older
     * daemon ignores the key and sees only the first), sent only to a peer
     * that said `batches` itself. */
    const msgpack_object *more;
    uint32_t n_more;
    bool batches;         /* the sender reads batches too */
    /* Dispatcher -> querier: the registry to ask (a querier may serve
     * several); from an older dispatcher it is absent. */
    av_str_t registry;
} av_check_t;

#define AV_MORE_MAX 4096  /* checks or answers riding in one message */

typedef struct {
    av_str_t id;
    av_str_t name;        /* A-label when normalised; as asked when invalid */
    av_str_t query;       /* the name as the requester wrote it */
    av_status_t status;
    av_str_t reason;      /* set for unknown and invalid */
    av_str_t registry;
    av_source_t source;
    uint64_t at_ms;       /* unix ms when the verdict was made */
    uint64_t latency_us;  /* registry round trip, 0 from cache */
    av_str_t raw;         /* optional excerpt of the registry's reply */
    uint64_t rid;
    uint32_t idx;
    bool has_idx;         /* send idx even without rid (batch answers to frontends) */
    /* Pattern that decided (for audit); optional. */
    av_str_t matched;
    /* Further answers in the same message, as for checks. */
    const msgpack_object *more;
    uint32_t n_more;
    bool batches;
} av_answer_t;

/* A registry a querier serves, with the checks it can take for it now. */
typedef struct {
    av_str_t registry;
    uint32_t credit;
} av_credit_t;

typedef struct {
    av_str_t registry;    /* the first registry it serves (what an older dispatcher reads) */
    uint32_t credit;      /* ready/heartbeat: checks it can take now for that one */
    uint32_t pid;
    /* bye: the checks (dispatcher task numbers, `rid`) it hands back */
    const msgpack_object *ids;
    uint32_t n_ids;
    /* A querier of a group: every registry it serves with its credit
     * (ready, heartbeat), or those it stops serving (bye; none: all). To
     * encode, fill `credits`; a decoded message has `registries`, read
     * through av_ready_credit_at either way. */
    const av_credit_t *credits;
    const msgpack_object *registries;
    uint32_t n_registries;
} av_ready_t;             /* also the heartbeat and bye bodies */

#define AV_HANDBACK_MAX 100000 /* ids in one bye */
#define AV_REGISTRIES_MAX 4096 /* registries one querier announces */

/* Registry i of a ready, heartbeat or bye with `registries` (i < n_registries). */
void av_ready_credit_at(const av_ready_t *ready, uint32_t i, av_credit_t *out);

typedef struct {
    av_str_t daemon;
    av_str_t registry;    /* may be empty */
    av_level_t level;
    av_str_t code;
    av_str_t text;
    uint64_t at_ms;
    uint32_t pid;
    /* Where availd-errors holds the event: set on the events it publishes
     * and lists (keys `seq` and `received`), 0 on an event as reported. */
    uint64_t seq;
    uint64_t received_ms;
} av_error_t;

typedef struct {
    av_answer_t answer;
    uint32_t ttl_s;       /* 0: do not store, only record the timing sample */
    bool timing;          /* the answer's latency is a registry sample */
} av_put_t;

typedef struct {
    av_str_t id;
    const msgpack_object *list; /* array of answer maps (without t and v) */
    uint32_t count;
} av_answers_t;

typedef struct {
    av_str_t cmd;
    const msgpack_object *body; /* the whole request map, for arguments */
} av_ctl_t;

typedef struct {
    bool ok;
    av_str_t error;
    const msgpack_object *body;
} av_ctl_reply_t;

/* A decoded message. Owns the msgpack zone its objects live in; the strings
 * point into the buffer passed to av_msg_decode, which must outlive it. A
 * daemon may decode message after message into one av_msg_t: the zone's
 * memory is reused, no allocation per message. */
typedef struct {
    msgpack_zone zone;
    bool zone_ready;
    msgpack_object root;
    av_msg_type_t type;
    uint32_t v;
    const char *bad_key;  /* the key a decoding error is about, or NULL */
    union {
        av_check_t check;
        av_answer_t answer;
        av_ready_t ready;
        av_error_t error;
        av_put_t put;
        av_ctl_t ctl;
        av_ctl_reply_t ctl_reply;
        av_answers_t answers;
    } u;
} av_msg_t;

void av_msg_init(av_msg_t *self);
/* Decode one message (replacing what self held). Returns 0 or an
 * av_proto_err_t; on error bad_key names the key at fault where there is
 * one. Call av_msg_release when done with self. */
int av_msg_decode(av_msg_t *self, const void *data, size_t size);
void av_msg_release(av_msg_t *self);
/* "missing key 'name'", "not msgpack"... into buf; returns buf. */
const char *av_msg_strerror(const av_msg_t *self, int err, char *buf, size_t size);
const char *av_proto_strerror(int err);

/* Copies src into dst (size bytes) as valid UTF-8: a byte that starts no
 * valid sequence becomes '?'. Registry replies are often Latin-1, and a
 * frontend's msgpack library may refuse a str that is not UTF-8. Returns the
 * length written (NUL-terminated, truncated to size-1 at a character
 * boundary). */
size_t av_utf8_sanitize(char *dst, size_t size, const char *src, size_t len);

/* The name at position i of a check, whether single or batch (decoded
 * `names` or encoder's `name_views`). */
av_str_t av_check_name_at(const av_check_t *check, uint32_t i);
uint32_t av_check_count(const av_check_t *check);

/* The i-th further check or answer of a message (validated when it was
 * decoded). Returns 0. */
int av_check_more_at(const av_check_t *check, uint32_t i, av_check_t *out);
int av_answer_more_at(const av_answer_t *answer, uint32_t i, av_answer_t *out);
/* A check message holding n checks (the first, and the rest in `more`). */
int av_encode_checks(msgpack_sbuffer *sbuf, const av_check_t *checks, uint32_t n);
/* The pairs of an answer map, for building messages by hand. */
uint32_t av_answer_pair_count(const av_answer_t *answer);
void av_pack_answer_pairs(msgpack_packer *pk, const av_answer_t *answer);

/* Answer i of an `answers` message (validated when it was decoded). */
int av_answers_at(const av_answers_t *answers, uint32_t i, av_answer_t *out);

/* Encoders append one message to sbuf. Return 0 or AV_PROTO_E_NOMEM. */
int av_encode_check(msgpack_sbuffer *sbuf, const av_check_t *check);
int av_encode_answer(msgpack_sbuffer *sbuf, const av_answer_t *answer);
int av_encode_ready(msgpack_sbuffer *sbuf, av_msg_type_t type, const av_ready_t *ready);
/* A bye handing back n task numbers. With bye->credits (n_registries), the
 * querier stops serving those registries only; otherwise it is leaving. */
int av_encode_bye(msgpack_sbuffer *sbuf, const av_ready_t *bye, const uint64_t *ids, uint32_t n);
uint64_t av_bye_id_at(const av_ready_t *bye, uint32_t i);
/* An error event; with seq set (availd-errors publishing it), seq and
 * received follow its keys. */
int av_encode_error(msgpack_sbuffer *sbuf, const av_error_t *error);
/* An error event as availd-errors lists a stored one: a map without t and
 * v, seq and received (when seq is set) first. */
void av_pack_error_map(msgpack_packer *pk, const av_error_t *error);
int av_encode_put(msgpack_sbuffer *sbuf, const av_put_t *put);
/* An `answers` message: begin with the count, then pack each answer. */
void av_pack_answers_begin(msgpack_packer *pk, av_str_t id, uint32_t count);
void av_pack_answer_map(msgpack_packer *pk, const av_answer_t *answer);
/* A control request with no arguments beyond cmd; for arguments, use
 * av_pack_ctl_begin and pack the extra pairs yourself. */
int av_encode_ctl(msgpack_sbuffer *sbuf, const char *cmd);
/* Starts a map of 3 + extra_pairs entries holding t, v, cmd. */
void av_pack_ctl_begin(msgpack_packer *pk, const char *cmd, uint32_t extra_pairs);
/* Starts a reply map holding t, v, ok, and error when !ok: pack
 * extra_pairs more entries after it. */
void av_pack_ctl_reply_begin(msgpack_packer *pk, bool ok, const char *error, uint32_t extra_pairs);

/* Packing helpers for map entries. */
void av_pack_str(msgpack_packer *pk, const char *s);
void av_pack_strn(msgpack_packer *pk, av_str_t s);
void av_pack_kv_str(msgpack_packer *pk, const char *key, const char *val);
void av_pack_kv_strn(msgpack_packer *pk, const char *key, av_str_t val);
void av_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t val);
void av_pack_kv_bool(msgpack_packer *pk, const char *key, bool val);

/* Reading helpers for open-ended maps (control requests and replies). */
const msgpack_object *av_obj_get(const msgpack_object *map, const char *key);
bool av_obj_get_str(const msgpack_object *map, const char *key, av_str_t *out);
bool av_obj_get_uint(const msgpack_object *map, const char *key, uint64_t *out);
bool av_obj_get_bool(const msgpack_object *map, const char *key, bool *out);

const char *av_status_name(av_status_t status);
int av_status_parse(av_str_t s);          /* <0 when unknown */
const char *av_source_name(av_source_t source);
int av_source_parse(av_str_t s);
const char *av_level_name(av_level_t level);
int av_level_parse(av_str_t s);
const char *av_msg_type_name(av_msg_type_t type);

/* Reasons carried by unknown and invalid answers: one list, so frontends
 * can switch on them. */
#define AV_REASON_TIMEOUT        "timeout"
#define AV_REASON_RATE_LIMITED   "rate_limited"
#define AV_REASON_UNPARSEABLE    "unparseable"
#define AV_REASON_REGISTRY_ERROR "registry_error"     /* the registry answered with an error of its own */
#define AV_REASON_DNS_FAILURE    "dns_failure"        /* the registry's host name could not be resolved */
#define AV_REASON_CONNECT_FAILED "connect_failed"     /* the registry refused or did not take the connection */
#define AV_REASON_CONNECTION_LOST "connection_lost"   /* the connection broke before the reply was whole */
#define AV_REASON_TLS_ERROR      "tls_error"          /* the registry's TLS (RDAP) failed: handshake, certificate */
#define AV_REASON_HTTP_STATUS    "http_status"        /* the RDAP service answered an HTTP status that says nothing */
#define AV_REASON_QUERIER_ERROR  "querier_error"      /* the querier itself failed (out of memory, a socket) */
#define AV_REASON_NO_QUERIER     "no_querier"
#define AV_REASON_OVERLOADED     "overloaded"
#define AV_REASON_DEADLINE       "deadline"
#define AV_REASON_UNSUPPORTED    "unsupported_tld"
#define AV_REASON_EMPTY_REPLY    "empty_reply"
/* intake could not write the request to its journal (a full disk): not
 * taken, ask again later */
#define AV_REASON_STORAGE        "storage"

#endif
