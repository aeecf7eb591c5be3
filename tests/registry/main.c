/* availd-test-registry: a fake registry whois server (RFC 3912) for availd's
 * integration tests and benchmarks. It answers every query from fixed rules
 * keyed on the queried name, so a test knows the truth without a real
 * registry, and it counts queries so a test can prove what availd sent. It
 * only ever listens on IPv4 loopback. */

/*
 * NAME
 *   availd-test-registry - loopback-only fake whois registry for tests
 *
 * SUMMARY
 *   availd-test-registry [--listen HOST:PORT] [--delay-ms N]
 *                        [--fixtures DIR] [--max-conns N] [--help]
 *
 * DESCRIPTION
 *   Listens on HOST:PORT (default 127.0.0.1:0; HOST must be in 127.0.0.0/8)
 *   and prints one line `PORT <n>` to stdout once listening. Each connection
 *   carries one query line (at most 1024 bytes including the LF); the
 *   queried NAME is the line's last whitespace-separated token, lower-cased.
 *   After --delay-ms the reply chosen by NAME is written and the connection
 *   closed. The rules (fixture files, free-/taken-/reserved-/limit-/
 *   garbage-/empty-/silent-/slow-/huge- prefixes, then the FNV-1a truth for
 *   every other name) and the `!stats` / `!reset` queries are described in
 *   README.md beside this file.
 *
 *   One thread, epoll, non-blocking sockets, and one min-heap of deadlines
 *   (one per connection) make 20,000 concurrent connections cheap: a
 *   connection costs one fixed-size struct and nothing is allocated per
 *   reply except the JSON of a `!stats` answer.
 *
 *   SIGTERM and SIGINT close every connection and exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM_NAME "availd-test-registry"

/* Limits on what outside input can make us hold. */
#define QUERY_LINE_MAX_BYTES 1024
#define FIXTURE_MAX_BYTES (1u << 20)
#define HUGE_REPLY_BYTES (2u << 20)
#define GARBAGE_REPLY_BYTES 64
#define NAMES_MAX 100000
/* A name can be ~1 KiB, so the distinct-name cap alone would let the table
 * reach 100 MB; the arena cap keeps it modest and also ends tracking. */
#define NAMES_ARENA_MAX_BYTES (16u << 20)
#define NAMES_ARENA_FIRST_BYTES (64u << 10)
/* Power of two, well above NAMES_MAX, so probe chains stay short. */
#define NAMES_INDEX_SLOTS (1u << 18)
/* Each `!stats` answer owns its JSON until sent; a few at once is plenty. */
#define STATS_REPLIES_INFLIGHT_MAX 8
#define MAX_CONNS_DEFAULT 100000
#define MAX_CONNS_LIMIT 1000000
#define DELAY_MS_MAX 3600000

/* Timers. */
#define IDLE_TIMEOUT_MS 30000
#define SILENT_HOLD_MS 120000
#define SLOW_EXTRA_DELAY_MS 2000
#define WRITE_STALL_TIMEOUT_MS 30000
#define LISTENER_RETRY_MS 100

/* Work per loop turn, so one busy source cannot starve the rest. */
#define EVENTS_PER_WAIT 1024
#define ACCEPTS_PER_WAKEUP 1024
#define DEADLINES_PER_TURN 4096
#define WRITES_PER_WAKEUP 64
#define DRAIN_READS_MAX 4
#define WRITE_CHUNK_MAX_BYTES (64u << 10)

#define LISTEN_BACKLOG 65535
/* One descriptor kept free for opening a fixture file while replying. */
#define FD_HEADROOM 1

enum conn_state {
    CONN_READING,  /* waiting for the query line */
    CONN_DELAYING, /* line read, waiting out --delay-ms */
    CONN_WRITING,  /* sending the reply */
    CONN_SILENT,   /* never replying; held until the client leaves */
};

enum reply_kind {
    REPLY_FIXTURE,
    REPLY_FREE,
    REPLY_TAKEN,
    REPLY_RESERVED,
    REPLY_LIMIT,
    REPLY_GARBAGE,
    REPLY_EMPTY,
    REPLY_SILENT,
    REPLY_HUGE,
    REPLY_STATS,
    REPLY_RESET,
};

struct conn {
    int fd;
    enum conn_state state;
    enum reply_kind reply;
    uint32_t events;       /* the epoll mask currently registered */
    size_t heap_index;
    uint64_t deadline_ms;  /* what it means depends on state */
    uint64_t stats_epoch;  /* the !reset epoch it was accepted in */
    size_t line_bytes;
    size_t name_offset;    /* NAME lives inside line[] */
    size_t name_bytes;
    size_t reply_sent_bytes;
    size_t reply_total_bytes;
    char *stats_json;      /* only for a !stats reply */
    char line[QUERY_LINE_MAX_BYTES];
};

struct name_entry {
    uint64_t queries;
    uint32_t name_offset; /* into the arena */
    uint32_t name_bytes;
    uint32_t hash;
};

struct stats {
    uint64_t total;
    uint64_t connections;
    uint64_t epoch;        /* bumped by !reset */
    bool names_truncated;
    struct name_entry *entries; /* NAMES_MAX, in first-seen order */
    size_t entries_len;
    uint32_t *index;       /* NAMES_INDEX_SLOTS; 0 empty, else entry + 1 */
    char *arena;
    size_t arena_len;
    size_t arena_cap_bytes;
};

struct options {
    struct sockaddr_in listen_addr;
    uint64_t delay_ms;
    const char *fixtures_dir;
    size_t max_conns;
};

struct server {
    struct options opt;
    int epoll_fd;
    int listen_fd;
    bool listener_paused;
    uint64_t listener_retry_ms;
    size_t conn_limit;     /* min(--max-conns, what the fd limit allows) */
    size_t open_conns;
    size_t stats_replies_inflight;
    struct conn **heap;    /* every open conn, ordered by deadline_ms */
    size_t heap_len;
    struct stats stats;
    uint64_t now_ms;
    char scratch[WRITE_CHUNK_MAX_BYTES];
    char huge_chunk[WRITE_CHUNK_MAX_BYTES];
};

static volatile sig_atomic_t stop_signal;

static void
log_msg(const char *fmt, ...)
{
    va_list ap;
    fputs(PROGRAM_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static uint64_t
clock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The truth rule in README.md; a Python test computes the same. */
static uint32_t
fnv1a32(const char *bytes, size_t len)
{
    uint32_t hash = 0x811c9dc5u;
    for (size_t i = 0; i < len; i++) {
        hash ^= (unsigned char)bytes[i];
        hash *= 0x01000193u;
    }
    return hash;
}

static bool
has_prefix(const char *bytes, size_t len, const char *prefix)
{
    size_t prefix_len = strlen(prefix);
    return len >= prefix_len && memcmp(bytes, prefix, prefix_len) == 0;
}

/* ---- output buffer: measures when bytes is NULL, so JSON is sized exactly */

struct outbuf {
    char *bytes;
    size_t cap_bytes;
    size_t len;
};

static void
out_bytes(struct outbuf *o, const void *bytes, size_t n)
{
    if (o->bytes != NULL && o->len + n <= o->cap_bytes)
        memcpy(o->bytes + o->len, bytes, n);
    o->len += n;
}

static void
out_str(struct outbuf *o, const char *s)
{
    out_bytes(o, s, strlen(s));
}

static void
out_u64(struct outbuf *o, uint64_t value)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)value);
    out_bytes(o, digits, (size_t)n);
}

/* Names are bytes, not UTF-8: anything outside printable ASCII becomes
 * \u00XX so the JSON stays valid whatever a client sent. */
static void
out_json_string(struct outbuf *o, const char *bytes, size_t len)
{
    out_bytes(o, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)bytes[i];
        if (ch == '"' || ch == '\\') {
            char esc[2] = { '\\', (char)ch };
            out_bytes(o, esc, 2);
        } else if (ch < 0x20 || ch >= 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            out_bytes(o, esc, 6);
        } else {
            out_bytes(o, &bytes[i], 1);
        }
    }
    out_bytes(o, "\"", 1);
}

/* ---- query statistics */

static int
stats_open(struct stats *st)
{
    memset(st, 0, sizeof *st);
    /* calloc'd pages stay untouched, so an idle server costs little RSS. */
    st->entries = calloc(NAMES_MAX, sizeof *st->entries);
    st->index = calloc(NAMES_INDEX_SLOTS, sizeof *st->index);
    if (st->entries == NULL || st->index == NULL) {
        free(st->entries);
        free(st->index);
        return -ENOMEM;
    }
    return 0;
}

static void
stats_close(struct stats *st)
{
    free(st->entries);
    free(st->index);
    free(st->arena);
    memset(st, 0, sizeof *st);
}

static void
stats_reset(struct stats *st)
{
    st->total = 0;
    st->connections = 0;
    st->epoch++;
    st->names_truncated = false;
    memset(st->index, 0, NAMES_INDEX_SLOTS * sizeof *st->index);
    st->entries_len = 0;
    st->arena_len = 0;
}

static bool
stats_arena_reserve(struct stats *st, size_t more_bytes)
{
    if (st->arena_len + more_bytes <= st->arena_cap_bytes)
        return true;
    if (st->arena_len + more_bytes > NAMES_ARENA_MAX_BYTES)
        return false;
    size_t cap = st->arena_cap_bytes ? st->arena_cap_bytes : NAMES_ARENA_FIRST_BYTES;
    while (cap < st->arena_len + more_bytes)
        cap *= 2;
    if (cap > NAMES_ARENA_MAX_BYTES)
        cap = NAMES_ARENA_MAX_BYTES;
    char *grown = realloc(st->arena, cap);
    if (grown == NULL)
        return false;
    st->arena = grown;
    st->arena_cap_bytes = cap;
    return true;
}

static void
stats_count_name(struct stats *st, const char *name, size_t name_bytes)
{
    uint32_t hash = fnv1a32(name, name_bytes);
    uint32_t mask = NAMES_INDEX_SLOTS - 1;
    /* The index is never more than NAMES_MAX / NAMES_INDEX_SLOTS full, so
     * this finds an empty slot long before it wraps. */
    for (uint32_t probe = 0; probe < NAMES_INDEX_SLOTS; probe++) {
        uint32_t slot = (hash + probe) & mask;
        uint32_t ref = st->index[slot];
        if (ref == 0) {
            if (st->entries_len >= NAMES_MAX || !stats_arena_reserve(st, name_bytes)) {
                st->names_truncated = true;
                return;
            }
            struct name_entry *e = &st->entries[st->entries_len];
            e->queries = 1;
            e->name_offset = (uint32_t)st->arena_len;
            e->name_bytes = (uint32_t)name_bytes;
            e->hash = hash;
            memcpy(st->arena + st->arena_len, name, name_bytes);
            st->arena_len += name_bytes;
            st->entries_len++;
            st->index[slot] = (uint32_t)st->entries_len;
            return;
        }
        struct name_entry *e = &st->entries[ref - 1];
        if (e->hash == hash && e->name_bytes == name_bytes
            && memcmp(st->arena + e->name_offset, name, name_bytes) == 0) {
            e->queries++;
            return;
        }
    }
    st->names_truncated = true;
}

static void
stats_render_json(const struct stats *st, size_t open_conns, struct outbuf *o)
{
    out_str(o, "{\"total\": ");
    out_u64(o, st->total);
    out_str(o, ", \"connections\": ");
    out_u64(o, st->connections);
    out_str(o, ", \"open\": ");
    out_u64(o, open_conns);
    out_str(o, ", \"names\": {");
    for (size_t i = 0; i < st->entries_len; i++) {
        const struct name_entry *e = &st->entries[i];
        if (i > 0)
            out_str(o, ", ");
        out_json_string(o, st->arena + e->name_offset, e->name_bytes);
        out_str(o, ": ");
        out_u64(o, e->queries);
    }
    out_str(o, "}");
    if (st->names_truncated)
        out_str(o, ", \"names_truncated\": true");
    out_str(o, "}\n");
}

/* ---- deadline heap: every open connection is in it exactly once */

static void
heap_swap(struct server *srv, size_t a, size_t b)
{
    struct conn *tmp = srv->heap[a];
    srv->heap[a] = srv->heap[b];
    srv->heap[b] = tmp;
    srv->heap[a]->heap_index = a;
    srv->heap[b]->heap_index = b;
}

static void
heap_sift_up(struct server *srv, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (srv->heap[parent]->deadline_ms <= srv->heap[i]->deadline_ms)
            break;
        heap_swap(srv, i, parent);
        i = parent;
    }
}

static void
heap_sift_down(struct server *srv, size_t i)
{
    for (;;) {
        size_t left = 2 * i + 1;
        size_t right = left + 1;
        size_t least = i;
        if (left < srv->heap_len && srv->heap[left]->deadline_ms < srv->heap[least]->deadline_ms)
            least = left;
        if (right < srv->heap_len && srv->heap[right]->deadline_ms < srv->heap[least]->deadline_ms)
            least = right;
        if (least == i)
            return;
        heap_swap(srv, i, least);
        i = least;
    }
}

static void
heap_push(struct server *srv, struct conn *c)
{
    c->heap_index = srv->heap_len;
    srv->heap[srv->heap_len++] = c;
    heap_sift_up(srv, c->heap_index);
}

static void
heap_remove(struct server *srv, struct conn *c)
{
    size_t i = c->heap_index;
    size_t last = srv->heap_len - 1;
    if (i != last) {
        struct conn *moved = srv->heap[last];
        heap_swap(srv, i, last);
        srv->heap_len--;
        heap_sift_up(srv, i);
        heap_sift_down(srv, moved->heap_index);
    } else {
        srv->heap_len--;
    }
}

static void
conn_set_deadline(struct server *srv, struct conn *c, uint64_t deadline_ms)
{
    uint64_t old_ms = c->deadline_ms;
    c->deadline_ms = deadline_ms;
    if (deadline_ms < old_ms)
        heap_sift_up(srv, c->heap_index);
    else
        heap_sift_down(srv, c->heap_index);
}

/* ---- listener */

static void
listener_set_paused(struct server *srv, bool paused)
{
    struct epoll_event ev = { .events = paused ? 0 : EPOLLIN, .data.ptr = NULL };
    if (srv->listener_paused == paused)
        return;
    if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_MOD, srv->listen_fd, &ev) < 0) {
        log_msg("epoll_ctl(listener): %s", strerror(errno));
        return;
    }
    srv->listener_paused = paused;
    srv->listener_retry_ms = paused ? srv->now_ms + LISTENER_RETRY_MS : 0;
}

/* ---- connections */

static void
conn_set_events(struct server *srv, struct conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (c->events == events)
        return;
    if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->events = events;
    else
        log_msg("epoll_ctl(conn): %s", strerror(errno));
}

static void
conn_close(struct server *srv, struct conn *c)
{
    /* Unread input at close() makes the kernel send RST, which can destroy
     * a reply the client has not read yet; so take what has arrived. */
    for (int i = 0; i < DRAIN_READS_MAX; i++) {
        if (recv(c->fd, srv->scratch, sizeof srv->scratch, MSG_DONTWAIT) <= 0)
            break;
    }
    close(c->fd);
    heap_remove(srv, c);
    if (c->stats_json != NULL) {
        free(c->stats_json);
        srv->stats_replies_inflight--;
    }
    free(c);
    srv->open_conns--;
    if (srv->listener_paused && srv->open_conns < srv->conn_limit)
        listener_set_paused(srv, false);
}

static const char *
reply_text_bytes(struct server *srv, const struct conn *c, size_t *len_out)
{
    const char *name = c->line + c->name_offset;
    struct outbuf o = { .bytes = srv->scratch, .cap_bytes = sizeof srv->scratch };
    switch (c->reply) {
    case REPLY_FREE:
        out_str(&o, "No match for \"");
        out_bytes(&o, name, c->name_bytes);
        out_str(&o, "\".\r\n>>> Last update of WHOIS database: 2026-01-01T00:00:00Z <<<\r\n");
        break;
    case REPLY_TAKEN:
        out_str(&o, "   Domain Name: ");
        out_bytes(&o, name, c->name_bytes);
        out_str(&o, "\r\n   Registrar: Test Registrar\r\n"
                    "   Creation Date: 2001-01-01T00:00:00Z\r\n"
                    "   Domain Status: clientTransferProhibited\r\n");
        break;
    case REPLY_RESERVED:
        out_str(&o, "Domain Name: ");
        out_bytes(&o, name, c->name_bytes);
        out_str(&o, "\r\nStatus: reserved by registry policy\r\n");
        break;
    case REPLY_LIMIT:
        out_str(&o, "Query rate limit exceeded. Try again later.\r\n");
        break;
    case REPLY_RESET:
        out_str(&o, "OK\r\n");
        break;
    default:
        o.len = 0;
        break;
    }
    /* NAME is at most QUERY_LINE_MAX_BYTES, far below the scratch size. */
    *len_out = o.len <= o.cap_bytes ? o.len : 0;
    return srv->scratch;
}

static void
garbage_bytes(const struct conn *c, char *out)
{
    /* splitmix64 seeded from NAME: the same name always gets the same bytes. */
    uint64_t state = fnv1a32(c->line + c->name_offset, c->name_bytes);
    for (size_t i = 0; i < GARBAGE_REPLY_BYTES; i += 8) {
        state += 0x9e3779b97f4a7c15u;
        uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
        z ^= z >> 31;
        for (size_t b = 0; b < 8; b++)
            out[i + b] = (char)(z >> (8 * b));
    }
}

static int
fixture_path(const struct server *srv, const struct conn *c, char *path, size_t path_cap)
{
    int n = snprintf(path, path_cap, "%s/%.*s", srv->opt.fixtures_dir, (int)c->name_bytes,
                     c->line + c->name_offset);
    return n > 0 && (size_t)n < path_cap ? 0 : -ENAMETOOLONG;
}

/* The fixture is reopened for each chunk rather than held open, so a
 * connection never costs a second descriptor or a copy of the file. */
static int
fixture_bytes_at(struct server *srv, const struct conn *c, size_t offset, size_t want_bytes,
                 size_t *got_bytes)
{
    char path[PATH_MAX];
    int rc = fixture_path(srv, c, path, sizeof path);
    if (rc < 0)
        return rc;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = pread(fd, srv->scratch, want_bytes, (off_t)offset);
    rc = n < 0 ? -errno : 0;
    close(fd);
    if (rc < 0)
        return rc;
    if (n == 0)
        return -ENODATA; /* the file shrank under us */
    *got_bytes = (size_t)n;
    return 0;
}

/* Points *bytes at the next slice of the reply, at most one scratch-full. */
static int
reply_slice(struct server *srv, struct conn *c, const char **bytes, size_t *len)
{
    size_t offset = c->reply_sent_bytes;
    size_t remaining = c->reply_total_bytes - offset;
    size_t chunk = remaining < WRITE_CHUNK_MAX_BYTES ? remaining : WRITE_CHUNK_MAX_BYTES;
    switch (c->reply) {
    case REPLY_FIXTURE:
        *bytes = srv->scratch;
        return fixture_bytes_at(srv, c, offset, chunk, len);
    case REPLY_GARBAGE:
        garbage_bytes(c, srv->scratch);
        *bytes = srv->scratch + offset;
        *len = remaining;
        return 0;
    case REPLY_HUGE:
        *bytes = srv->huge_chunk;
        *len = chunk;
        return 0;
    case REPLY_STATS:
        *bytes = c->stats_json + offset;
        *len = remaining;
        return 0;
    default: {
        size_t text_len;
        const char *text = reply_text_bytes(srv, c, &text_len);
        if (text_len != c->reply_total_bytes)
            return -EINVAL;
        *bytes = text + offset;
        *len = remaining;
        return 0;
    }
    }
}

/* Writes until done (then closes), EAGAIN (then waits for EPOLLOUT) or a
 * per-wakeup bound (level-triggered EPOLLOUT brings us back). */
static void
conn_write_reply(struct server *srv, struct conn *c)
{
    for (int round = 0; round < WRITES_PER_WAKEUP; round++) {
        if (c->reply_sent_bytes >= c->reply_total_bytes) {
            conn_close(srv, c);
            return;
        }
        const char *bytes;
        size_t len;
        int rc = reply_slice(srv, c, &bytes, &len);
        if (rc < 0) {
            if (c->reply == REPLY_FIXTURE)
                log_msg("fixture for %.*s: %s; closing without the rest", (int)c->name_bytes,
                        c->line + c->name_offset, strerror(-rc));
            conn_close(srv, c);
            return;
        }
        ssize_t sent = send(c->fd, bytes, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn_set_events(srv, c, EPOLLOUT);
                conn_set_deadline(srv, c, srv->now_ms + WRITE_STALL_TIMEOUT_MS);
                return;
            }
            /* EPIPE, ECONNRESET: the client left; nothing to tell anyone. */
            conn_close(srv, c);
            return;
        }
        c->reply_sent_bytes += (size_t)sent;
    }
    conn_set_events(srv, c, EPOLLOUT);
}

static void
conn_start_reply(struct server *srv, struct conn *c)
{
    if (c->reply == REPLY_EMPTY) {
        conn_close(srv, c);
        return;
    }
    c->state = CONN_WRITING;
    /* Set before writing so an expired deadline is never left behind. */
    conn_set_deadline(srv, c, srv->now_ms + WRITE_STALL_TIMEOUT_MS);
    conn_write_reply(srv, c);
}

/* NAME: the last whitespace-separated token, CR/LF stripped, lower-cased. */
static void
conn_parse_name(struct conn *c, size_t line_len)
{
    size_t end = line_len;
    while (end > 0 && (c->line[end - 1] == '\n' || c->line[end - 1] == '\r'
                       || c->line[end - 1] == ' ' || c->line[end - 1] == '\t'
                       || c->line[end - 1] == '\v' || c->line[end - 1] == '\f'))
        end--;
    size_t start = end;
    while (start > 0 && c->line[start - 1] != ' ' && c->line[start - 1] != '\t'
           && c->line[start - 1] != '\r' && c->line[start - 1] != '\n'
           && c->line[start - 1] != '\v' && c->line[start - 1] != '\f')
        start--;
    for (size_t i = start; i < end; i++) {
        if (c->line[i] >= 'A' && c->line[i] <= 'Z')
            c->line[i] = (char)(c->line[i] - 'A' + 'a');
    }
    c->name_offset = start;
    c->name_bytes = end - start;
}

static bool
fixture_exists(const struct server *srv, const struct conn *c, size_t *size_bytes)
{
    const char *name = c->line + c->name_offset;
    if (srv->opt.fixtures_dir == NULL || c->name_bytes == 0 || name[0] == '.'
        || memchr(name, '/', c->name_bytes) != NULL || memchr(name, '\0', c->name_bytes) != NULL)
        return false;
    char path[PATH_MAX];
    struct stat st;
    if (fixture_path(srv, c, path, sizeof path) < 0 || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return false;
    *size_bytes = (size_t)st.st_size < FIXTURE_MAX_BYTES ? (size_t)st.st_size : FIXTURE_MAX_BYTES;
    return true;
}

/* The rules of README.md, first match wins; returns the extra delay. */
static uint64_t
conn_choose_reply(const struct server *srv, struct conn *c)
{
    const char *name = c->line + c->name_offset;
    size_t len = c->name_bytes;
    size_t fixture_bytes;
    c->reply_total_bytes = 0;
    if (fixture_exists(srv, c, &fixture_bytes)) {
        c->reply = REPLY_FIXTURE;
        c->reply_total_bytes = fixture_bytes;
        return 0;
    }
    if (has_prefix(name, len, "free-"))
        c->reply = REPLY_FREE;
    else if (has_prefix(name, len, "taken-"))
        c->reply = REPLY_TAKEN;
    else if (has_prefix(name, len, "reserved-"))
        c->reply = REPLY_RESERVED;
    else if (has_prefix(name, len, "limit-"))
        c->reply = REPLY_LIMIT;
    else if (has_prefix(name, len, "garbage-"))
        c->reply = REPLY_GARBAGE;
    else if (has_prefix(name, len, "empty-"))
        c->reply = REPLY_EMPTY;
    else if (has_prefix(name, len, "silent-"))
        c->reply = REPLY_SILENT;
    else if (has_prefix(name, len, "slow-")) {
        c->reply = REPLY_FREE;
        return SLOW_EXTRA_DELAY_MS;
    } else if (has_prefix(name, len, "huge-"))
        c->reply = REPLY_HUGE;
    else
        c->reply = fnv1a32(name, len) % 2 == 0 ? REPLY_FREE : REPLY_TAKEN;
    return 0;
}

static void
conn_on_stats_query(struct server *srv, struct conn *c)
{
    /* The asking connection is neither "open" traffic nor a counted one. */
    if (c->stats_epoch == srv->stats.epoch && srv->stats.connections > 0)
        srv->stats.connections--;
    if (srv->stats_replies_inflight >= STATS_REPLIES_INFLIGHT_MAX) {
        log_msg("more than %d !stats replies in flight; closing one", STATS_REPLIES_INFLIGHT_MAX);
        conn_close(srv, c);
        return;
    }
    struct outbuf o = { 0 };
    stats_render_json(&srv->stats, srv->open_conns - 1, &o);
    o.bytes = malloc(o.len);
    if (o.bytes == NULL) {
        log_msg("no memory for a %zu-byte !stats reply", o.len);
        conn_close(srv, c);
        return;
    }
    o.cap_bytes = o.len;
    o.len = 0;
    stats_render_json(&srv->stats, srv->open_conns - 1, &o);
    c->stats_json = o.bytes;
    srv->stats_replies_inflight++;
    c->reply = REPLY_STATS;
    c->reply_total_bytes = o.len;
    conn_start_reply(srv, c);
}

static void
conn_on_query(struct server *srv, struct conn *c, size_t line_len)
{
    conn_parse_name(c, line_len);
    const char *name = c->line + c->name_offset;
    /* Control queries skip --delay-ms: tests ask them between phases. */
    if (c->name_bytes == 6 && memcmp(name, "!stats", 6) == 0) {
        conn_on_stats_query(srv, c);
        return;
    }
    if (c->name_bytes == 6 && memcmp(name, "!reset", 6) == 0) {
        stats_reset(&srv->stats);
        c->reply = REPLY_RESET;
        c->reply_total_bytes = 4;
        conn_start_reply(srv, c);
        return;
    }
    srv->stats.total++;
    stats_count_name(&srv->stats, name, c->name_bytes);
    uint64_t delay_ms = srv->opt.delay_ms + conn_choose_reply(srv, c);
    if (c->reply != REPLY_FIXTURE) {
        if (c->reply == REPLY_GARBAGE)
            c->reply_total_bytes = GARBAGE_REPLY_BYTES;
        else if (c->reply == REPLY_HUGE)
            c->reply_total_bytes = HUGE_REPLY_BYTES;
        else if (c->reply != REPLY_EMPTY && c->reply != REPLY_SILENT)
            reply_text_bytes(srv, c, &c->reply_total_bytes);
    }
    if (c->reply == REPLY_SILENT) {
        /* Read on, only to see the client leave. */
        c->state = CONN_SILENT;
        conn_set_events(srv, c, EPOLLIN);
        conn_set_deadline(srv, c, srv->now_ms + SILENT_HOLD_MS);
        return;
    }
    if (delay_ms == 0) {
        conn_start_reply(srv, c);
        return;
    }
    /* Input after the line is ignored; EPOLLERR/EPOLLHUP still arrive. */
    c->state = CONN_DELAYING;
    conn_set_events(srv, c, 0);
    conn_set_deadline(srv, c, srv->now_ms + delay_ms);
}

static void
conn_on_readable(struct server *srv, struct conn *c)
{
    if (c->state == CONN_SILENT) {
        ssize_t n = recv(c->fd, srv->scratch, sizeof srv->scratch, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            conn_close(srv, c);
        return;
    }
    if (c->state != CONN_READING)
        return;
    size_t room = QUERY_LINE_MAX_BYTES - c->line_bytes;
    ssize_t n = recv(c->fd, c->line + c->line_bytes, room, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_close(srv, c);
        return;
    }
    if (n == 0) {
        /* EOF before a whole line: RFC 3912 queries end in CRLF. */
        conn_close(srv, c);
        return;
    }
    const char *lf = memchr(c->line + c->line_bytes, '\n', (size_t)n);
    c->line_bytes += (size_t)n;
    if (lf != NULL) {
        conn_on_query(srv, c, (size_t)(lf - c->line) + 1);
        return;
    }
    if (c->line_bytes >= QUERY_LINE_MAX_BYTES) {
        conn_close(srv, c);
        return;
    }
    conn_set_deadline(srv, c, srv->now_ms + IDLE_TIMEOUT_MS);
}

static void
conn_on_event(struct server *srv, struct conn *c, uint32_t events)
{
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_close(srv, c);
        return;
    }
    if (c->state == CONN_WRITING && (events & EPOLLOUT)) {
        conn_write_reply(srv, c);
        return;
    }
    if (events & EPOLLIN)
        conn_on_readable(srv, c);
}

static void
conn_on_deadline(struct server *srv, struct conn *c)
{
    switch (c->state) {
    case CONN_DELAYING:
        conn_start_reply(srv, c);
        break;
    case CONN_READING: /* idle */
    case CONN_SILENT:  /* held long enough */
    case CONN_WRITING: /* the client stopped reading */
        conn_close(srv, c);
        break;
    }
}

static void
server_accept(struct server *srv)
{
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        if (srv->open_conns >= srv->conn_limit) {
            /* Clients wait in the listen backlog until a connection closes. */
            listener_set_paused(srv, true);
            return;
        }
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_msg("accept: %s; pausing the listener", strerror(errno));
                listener_set_paused(srv, true);
                return;
            }
            log_msg("accept: %s", strerror(errno));
            return;
        }
        struct conn *c = malloc(sizeof *c);
        if (c == NULL) {
            close(fd);
            listener_set_paused(srv, true);
            return;
        }
        memset(c, 0, offsetof(struct conn, line));
        c->fd = fd;
        c->state = CONN_READING;
        c->events = EPOLLIN;
        c->stats_epoch = srv->stats.epoch;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            log_msg("epoll_ctl(add): %s", strerror(errno));
            close(fd);
            free(c);
            return;
        }
        c->deadline_ms = srv->now_ms + IDLE_TIMEOUT_MS;
        heap_push(srv, c);
        srv->open_conns++;
        srv->stats.connections++;
    }
}

static void
server_run_deadlines(struct server *srv)
{
    for (int i = 0; i < DEADLINES_PER_TURN && srv->heap_len > 0; i++) {
        struct conn *c = srv->heap[0];
        if (c->deadline_ms > srv->now_ms)
            break;
        conn_on_deadline(srv, c);
    }
    if (srv->listener_paused && srv->listener_retry_ms <= srv->now_ms) {
        if (srv->open_conns < srv->conn_limit)
            listener_set_paused(srv, false);
        else
            srv->listener_retry_ms = srv->now_ms + LISTENER_RETRY_MS;
    }
}

static int
server_wait_timeout_ms(const struct server *srv)
{
    uint64_t next_ms = UINT64_MAX;
    if (srv->heap_len > 0)
        next_ms = srv->heap[0]->deadline_ms;
    if (srv->listener_paused && srv->listener_retry_ms < next_ms)
        next_ms = srv->listener_retry_ms;
    if (next_ms == UINT64_MAX)
        return -1;
    if (next_ms <= srv->now_ms)
        return 0;
    uint64_t wait_ms = next_ms - srv->now_ms;
    return wait_ms > INT_MAX ? INT_MAX : (int)wait_ms;
}

static void
on_stop_signal(int signo)
{
    stop_signal = signo;
}

static int
server_run(struct server *srv)
{
    struct epoll_event events[EVENTS_PER_WAIT];
    sigset_t stop_signals, wait_mask;
    struct sigaction sa = { .sa_handler = on_stop_signal };

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* Blocked except inside epoll_pwait, so a stop is never missed between
     * the check of stop_signal and the wait. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);

    while (!stop_signal) {
        srv->now_ms = clock_now_ms();
        int n = epoll_pwait(srv->epoll_fd, events, EVENTS_PER_WAIT, server_wait_timeout_ms(srv),
                            &wait_mask);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_msg("epoll_pwait: %s", strerror(errno));
            return -errno;
        }
        srv->now_ms = clock_now_ms();
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL)
                server_accept(srv);
            else
                conn_on_event(srv, events[i].data.ptr, events[i].events);
        }
        server_run_deadlines(srv);
    }
    return 0;
}

static void
raise_fd_limit(void)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) < 0)
        return;
    if (lim.rlim_cur == lim.rlim_max)
        return;
    rlim_t wanted = lim.rlim_max;
    if (wanted == RLIM_INFINITY)
        wanted = (rlim_t)MAX_CONNS_LIMIT + 64;
    lim.rlim_cur = wanted;
    if (setrlimit(RLIMIT_NOFILE, &lim) < 0)
        log_msg("setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)wanted, strerror(errno));
}

static size_t
fd_budget_for_conns(int highest_fd)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) < 0 || lim.rlim_cur == RLIM_INFINITY)
        return SIZE_MAX;
    /* Descriptors are handed out lowest first, so everything below the
     * highest we hold is taken by stdio and our own sockets. */
    size_t used = (size_t)highest_fd + 1 + FD_HEADROOM;
    return lim.rlim_cur > used ? (size_t)(lim.rlim_cur - used) : 0;
}

static int
server_open(struct server *srv)
{
    srv->epoll_fd = -1;
    srv->listen_fd = -1;
    memset(srv->huge_chunk, 'x', sizeof srv->huge_chunk);
    raise_fd_limit();
    if (stats_open(&srv->stats) < 0) {
        log_msg("no memory for the query statistics");
        return -ENOMEM;
    }
    srv->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->epoll_fd < 0) {
        log_msg("epoll_create1: %s", strerror(errno));
        return -errno;
    }
    srv->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (srv->listen_fd < 0) {
        log_msg("socket: %s", strerror(errno));
        return -errno;
    }
    int one = 1;
    /* A test restarting us on the same port must not wait out TIME_WAIT. */
    setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &srv->opt.listen_addr.sin_addr, host, sizeof host);
    if (bind(srv->listen_fd, (struct sockaddr *)&srv->opt.listen_addr, sizeof srv->opt.listen_addr) < 0) {
        log_msg("bind %s:%u: %s", host, ntohs(srv->opt.listen_addr.sin_port), strerror(errno));
        return -errno;
    }
    /* The kernel clamps this to net.core.somaxconn. */
    if (listen(srv->listen_fd, LISTEN_BACKLOG) < 0) {
        log_msg("listen: %s", strerror(errno));
        return -errno;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->listen_fd, &ev) < 0) {
        log_msg("epoll_ctl(listener): %s", strerror(errno));
        return -errno;
    }
    int highest_fd = srv->listen_fd > srv->epoll_fd ? srv->listen_fd : srv->epoll_fd;
    size_t budget = fd_budget_for_conns(highest_fd);
    srv->conn_limit = srv->opt.max_conns;
    if (budget < srv->conn_limit) {
        log_msg("the open-file limit allows %zu concurrent connections, below --max-conns %zu; "
                "further clients wait in the listen backlog", budget, srv->opt.max_conns);
        srv->conn_limit = budget;
    }
    if (srv->conn_limit == 0) {
        log_msg("no file descriptors left for connections");
        return -EMFILE;
    }
    srv->heap = calloc(srv->conn_limit, sizeof *srv->heap);
    if (srv->heap == NULL) {
        log_msg("no memory for %zu connections", srv->conn_limit);
        return -ENOMEM;
    }
    struct sockaddr_in bound;
    socklen_t bound_len = sizeof bound;
    if (getsockname(srv->listen_fd, (struct sockaddr *)&bound, &bound_len) < 0) {
        log_msg("getsockname: %s", strerror(errno));
        return -errno;
    }
    printf("PORT %u\n", ntohs(bound.sin_port));
    fflush(stdout);
    log_msg("listening on %s:%u, delay %llu ms, fixtures %s, at most %zu connections", host,
            ntohs(bound.sin_port), (unsigned long long)srv->opt.delay_ms,
            srv->opt.fixtures_dir ? srv->opt.fixtures_dir : "(none)", srv->conn_limit);
    return 0;
}

static void
server_close(struct server *srv)
{
    while (srv->heap_len > 0)
        conn_close(srv, srv->heap[0]);
    free(srv->heap);
    srv->heap = NULL;
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->epoll_fd >= 0)
        close(srv->epoll_fd);
    srv->listen_fd = srv->epoll_fd = -1;
    stats_close(&srv->stats);
}

/* ---- command line */

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: " PROGRAM_NAME " [--listen HOST:PORT] [--delay-ms N] [--fixtures DIR]\n"
            "       [--max-conns N] [--help]\n"
            "\n"
            "A loopback-only fake registry whois server (RFC 3912) for availd's tests.\n"
            "Prints `PORT <n>` on stdout once listening; logs go to stderr.\n"
            "\n"
            "  --listen HOST:PORT  IPv4 loopback address to listen on (default 127.0.0.1:0)\n"
            "  --delay-ms N        wait N ms between reading a query and replying (default 0)\n"
            "  --fixtures DIR      reply with the bytes of DIR/NAME when that file exists\n"
            "  --max-conns N       at most N open connections (default %d)\n"
            "  --help              show this and exit\n"
            "\n"
            "Reply rules, !stats and !reset: see tests/registry/README.md.\n",
            MAX_CONNS_DEFAULT);
}

static int
parse_u64(const char *text, uint64_t max, uint64_t *value)
{
    char *end;
    if (text[0] < '0' || text[0] > '9')
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -ERANGE;
    *value = v;
    return 0;
}

static int
parse_listen(const char *text, struct sockaddr_in *addr)
{
    const char *colon = strrchr(text, ':');
    char host[64];
    uint64_t port;
    if (colon == NULL || (size_t)(colon - text) >= sizeof host || parse_u64(colon + 1, 65535, &port) < 0) {
        log_msg("--listen wants HOST:PORT (an IPv4 loopback HOST, PORT 0..65535), got '%s'", text);
        return -EINVAL;
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &addr->sin_addr) != 1) {
        log_msg("refusing --listen %s: HOST must be an IPv4 loopback address (127.0.0.0/8)", text);
        return -EINVAL;
    }
    /* A fake registry that anyone could reach would be a trap. */
    if ((ntohl(addr->sin_addr.s_addr) >> 24) != 127) {
        log_msg("refusing --listen %s: not a loopback address; only 127.0.0.0/8 is allowed", text);
        return -EPERM;
    }
    return 0;
}

static int
parse_options(int argc, char **argv, struct options *opt)
{
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "delay-ms", required_argument, NULL, 'd' },
        { "fixtures", required_argument, NULL, 'f' },
        { "max-conns", required_argument, NULL, 'm' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t value;
    struct stat st;

    memset(opt, 0, sizeof *opt);
    opt->listen_addr.sin_family = AF_INET;
    opt->listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    opt->max_conns = MAX_CONNS_DEFAULT;
    for (;;) {
        int ch = getopt_long(argc, argv, "", longopts, NULL);
        if (ch == -1)
            break;
        switch (ch) {
        case 'l':
            if (parse_listen(optarg, &opt->listen_addr) < 0)
                return -EINVAL;
            break;
        case 'd':
            if (parse_u64(optarg, DELAY_MS_MAX, &value) < 0) {
                log_msg("--delay-ms wants 0..%d, got '%s'", DELAY_MS_MAX, optarg);
                return -EINVAL;
            }
            opt->delay_ms = value;
            break;
        case 'f':
            if (stat(optarg, &st) < 0 || !S_ISDIR(st.st_mode)) {
                log_msg("--fixtures %s: not a directory", optarg);
                return -EINVAL;
            }
            opt->fixtures_dir = optarg;
            break;
        case 'm':
            if (parse_u64(optarg, MAX_CONNS_LIMIT, &value) < 0 || value == 0) {
                log_msg("--max-conns wants 1..%d, got '%s'", MAX_CONNS_LIMIT, optarg);
                return -EINVAL;
            }
            opt->max_conns = (size_t)value;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        log_msg("unexpected argument '%s'", argv[optind]);
        usage(stderr);
        return -EINVAL;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    /* Static: the two write buffers are too big for the stack. */
    static struct server srv;

    if (parse_options(argc, argv, &srv.opt) < 0)
        return 2;
    int rc = server_open(&srv);
    if (rc == 0)
        rc = server_run(&srv);
    server_close(&srv);
    if (rc == 0 && stop_signal)
        log_msg("stopped by signal %d", (int)stop_signal);
    return rc == 0 ? 0 : 1;
}
