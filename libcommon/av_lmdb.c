/* Opening LMDB environments, and the write patterns the stores share; and
 * what availd does about a damaged data file: check it before mapping it,
 * move a rebuildable one aside, read what is left of one that is not. */
#include "av_lmdb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void
av_be64_put(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t
av_be64_get(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | in[i];
    return v;
}

/* av_lmdb_open without the message: 0, or an LMDB error or errno. */
static int
env_open(av_daemon_t *d, const char *path, unsigned flags, uint32_t map_mb, unsigned max_dbs, MDB_env **out)
{
    MDB_env *env = NULL;
    int rc;
    *out = NULL;
    if (!(flags & MDB_RDONLY) && mkdir(path, 0750) < 0 && errno != EEXIST)
        return errno;
    if ((rc = mdb_env_create(&env)) != 0)
        goto fail;
    if (max_dbs && (rc = mdb_env_set_maxdbs(env, max_dbs)) != 0)
        goto fail;
    if (map_mb && (rc = mdb_env_set_mapsize(env, (size_t)map_mb << 20)) != 0)
        goto fail;
    if ((rc = mdb_env_open(env, path, flags | MDB_NOTLS, 0660)) != 0)
        goto fail;
    if (d && !(flags & MDB_RDONLY)) {
        char file[4096];
        av_daemon_own(d, path);
        snprintf(file, sizeof file, "%s/data.mdb", path);
        av_daemon_own(d, file);
        snprintf(file, sizeof file, "%s/lock.mdb", path);
        av_daemon_own(d, file);
    }
    int dead = 0;
    mdb_reader_check(env, &dead); /* slots left by a killed reader */
    *out = env;
    return 0;
fail:
    if (env)
        mdb_env_close(env);
    return rc;
}

int
av_lmdb_open(av_daemon_t *d, const char *path, unsigned flags, uint32_t map_mb, unsigned max_dbs, MDB_env **out)
{
    int rc = env_open(d, path, flags, map_mb, max_dbs, out);
    if (rc != 0) {
        av_log_err("cannot open database %s: %s", path, mdb_strerror(rc));
        return -1;
    }
    return 0;
}

void
av_lmdb_close(MDB_env **env_p)
{
    MDB_env *env = env_p ? *env_p : NULL;
    unsigned flags = 0;
    if (!env)
        return;
    if (mdb_env_get_flags(env, &flags) == 0 && !(flags & MDB_RDONLY))
        mdb_env_sync(env, 1);
    mdb_env_close(env);
    *env_p = NULL;
}

int
av_lmdb_open_dbis(MDB_env *env, bool create, const char *const *names, MDB_dbi *dbis, size_t n)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, create ? 0 : MDB_RDONLY, &txn);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = mdb_dbi_open(txn, names[i], create ? MDB_CREATE : 0, &dbis[i]);
    if (rc != 0) {
        if (txn)
            mdb_txn_abort(txn);
        return rc;
    }
    /* Committing (a read-only transaction too) keeps the handles open; an
     * abort would close them. */
    return mdb_txn_commit(txn);
}

uint64_t
av_lmdb_entries(MDB_env *env, MDB_dbi dbi)
{
    MDB_txn *txn;
    MDB_stat st;
    uint64_t n = 0;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
        return 0;
    if (mdb_stat(txn, dbi, &st) == 0)
        n = st.ms_entries;
    mdb_txn_abort(txn);
    return n;
}

uint64_t
av_lmdb_delete_front(MDB_txn *txn, MDB_dbi dbi, uint64_t max, av_lmdb_front_fn fn, void *arg)
{
    MDB_cursor *cur;
    MDB_val key, val;
    uint64_t deleted = 0;
    if (mdb_cursor_open(txn, dbi, &cur) != 0)
        return 0;
    /* The first entry is always the one to look at: re-seek after each
     * delete instead of trusting where it leaves the cursor. */
    while (deleted < max && mdb_cursor_get(cur, &key, &val, MDB_FIRST) == 0) {
        if (fn && !fn(arg, txn, &key, &val))
            break;
        if (mdb_cursor_del(cur, 0) != 0)
            break;
        deleted++;
    }
    mdb_cursor_close(cur);
    return deleted;
}

/* Past this share of the map's pages in use, a write that may make room
 * makes it first: deleting copies pages too, so a map full to the last
 * page cannot even delete. */
#define NEARLY_FULL_PERCENT 90
/* Room made after a full map is made in small transactions: each commit
 * frees pages for the next. */
#define ROOM_STEP 64

static bool
nearly_full(MDB_env *env)
{
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val key, val;
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0 || st.ms_psize == 0)
        return false;
    size_t limit = info.me_mapsize / st.ms_psize * NEARLY_FULL_PERCENT / 100;
    size_t in_file = info.me_last_pgno + 1;
    if (in_file <= limit)
        return false; /* never filled that far: the common case, and cheap */
    /* Pages freed by earlier writes are reused before the file grows:
     * count them (the free list, database 0, as mdb_stat -f does; LMDB
     * opens it to read-only transactions only). */
    size_t free_pages = 0;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
        return false;
    if (mdb_cursor_open(txn, 0, &cur) == 0) {
        while (mdb_cursor_get(cur, &key, &val, MDB_NEXT) == 0) {
            size_t n;
            if (val.mv_size >= sizeof n) {
                memcpy(&n, val.mv_data, sizeof n);
                free_pages += n;
            }
        }
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return free_pages < in_file && in_file - free_pages > limit;
}

/* Deletes up to max of the entries room wants gone; returns how many. */
static uint64_t
delete_for_room(const av_lmdb_room_t *room, MDB_txn *txn, uint64_t max)
{
    MDB_stat st;
    if (mdb_stat(txn, room->dbi, &st) != 0)
        return 0;
    uint64_t wanted = st.ms_entries / 10 + room->at_least;
    return av_lmdb_delete_front(txn, room->dbi, wanted < max ? wanted : max, room->fn, room->arg);
}

static int
write_once(MDB_env *env, av_lmdb_txn_fn fn, void *arg, const av_lmdb_room_t *room)
{
    MDB_txn *txn;
    bool full = room && nearly_full(env);
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    if (full) {
        delete_for_room(room, txn, UINT64_MAX);
        av_log_warning("%s", room->warning);
    }
    if ((rc = fn(arg, txn)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

typedef struct {
    const av_lmdb_room_t *room;
    uint64_t left;      /* entries still to delete */
    uint64_t deleted;   /* by the last step */
} room_job_t;

static int
room_step(void *arg, MDB_txn *txn)
{
    room_job_t *job = arg;
    job->deleted = delete_for_room(job->room, txn, job->left < ROOM_STEP ? job->left : ROOM_STEP);
    return 0;
}

/* After a full map: what one nearly-full write deletes, in steps. */
static int
make_room(MDB_env *env, const av_lmdb_room_t *room)
{
    room_job_t job = { room, av_lmdb_entries(env, room->dbi) / 10 + room->at_least, 0 };
    int rc;
    do {
        if ((rc = write_once(env, room_step, &job, NULL)) != 0)
            return rc;
        job.left -= job.deleted < job.left ? job.deleted : job.left;
    } while (job.left > 0 && job.deleted > 0);
    return 0;
}

int
av_lmdb_write(MDB_env *env, av_lmdb_txn_fn fn, void *arg, const av_lmdb_room_t *room)
{
    int rc = write_once(env, fn, arg, room);
    if (rc != MDB_MAP_FULL || !room)
        return rc;
    /* Fuller than the headroom allowed for (a batch larger than planned):
     * make room, say so, try again. */
    int room_rc = make_room(env, room);
    if (room_rc != 0)
        av_log_err("cannot make room in a full database: %s", mdb_strerror(room_rc));
    av_log_warning("%s", room->warning);
    return write_once(env, fn, arg, room);
}

/* ---- damaged files ----------------------------------------------------------
 * LMDB 0.9's data file as mdb.c writes it on a 64-bit host, in the host's
 * byte order. Page 0 and 1 are the meta pages; a commit writes its pages,
 * then its meta page (the two alternate), so the newest meta page (the
 * higher txnid) is the state of the last commit. Every page starts with a
 * 16-byte header; branch and leaf pages then hold 16-bit offsets of their
 * nodes, an overflow run (a value too big for a leaf) holds a page count. */
_Static_assert(sizeof(size_t) == 8, "the checks read LMDB's 64-bit layout");

#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATA_VERSION 1
#define PAGE_HEADER_BYTES 16    /* pgno u64, pad u16, flags u16, lower u16, upper u16 | pages u32 */
#define META_BYTES (PAGE_HEADER_BYTES + 136)
#define META_TREES_AT (PAGE_HEADER_BYTES + 24)  /* the free list's MDB_db, then the main one's */
#define META_LAST_PGNO_AT (PAGE_HEADER_BYTES + 120)
#define META_TXNID_AT (PAGE_HEADER_BYTES + 128)
#define TREE_RECORD_BYTES 48    /* MDB_db: pad u32, flags u16, depth u16, 3 page counts, entries, root */
#define NODE_HEADER_BYTES 8     /* lo u16, hi u16, flags u16, ksize u16 */
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define P_LEAF2 0x20
#define F_BIGDATA 0x01          /* the value is in an overflow run */
#define F_SUBDATA 0x02          /* the value is a tree's MDB_db */
#define F_DUPDATA 0x04          /* the value is a key's duplicates */
#define NO_PAGE UINT64_MAX      /* an empty tree's root */
#define PAGE_BYTES_MIN 512
#define PAGE_BYTES_MAX 65536
#define TREE_DEPTH_MAX 32       /* LMDB's cursor stack */
#define TREE_NESTING_MAX 3      /* the main tree > a named database > a key's duplicates */
/* A check that met damage looks again when a writer may have reused pages
 * of the state it read meanwhile; this many times, then "cannot tell". */
#define CHECK_ATTEMPTS 5

static uint16_t
get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint32_t
get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t
get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

typedef struct {
    uint16_t flags;           /* MDB_DUPSORT... */
    uint16_t depth;
    uint64_t overflow_pages;
    uint64_t entries;
    uint64_t root;            /* NO_PAGE when empty */
} tree_t;

typedef struct {
    uint8_t raw[META_BYTES];
    uint32_t page_bytes;
    uint64_t last_pgno;
    uint64_t txnid;
    tree_t free_tree;
    tree_t main_tree;
} meta_t;

static void
tree_read(const uint8_t *p, tree_t *t)
{
    t->flags = get16(p + 4);
    t->depth = get16(p + 6);
    t->overflow_pages = get64(p + 24);
    t->entries = get64(p + 32);
    t->root = get64(p + 40);
}

static void
say(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
say(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    if (!why || !whylen)
        return;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* What LMDB checks of a meta page before it maps the file (P_META, the
 * magic, the version), and a page size it could have written. raw holds
 * META_BYTES. 0, or -1 with why. */
static int
meta_parse(const uint8_t *raw, unsigned i, meta_t *m, char *why, size_t whylen)
{
    memcpy(m->raw, raw, META_BYTES);
    uint32_t magic = get32(raw + PAGE_HEADER_BYTES), version = get32(raw + PAGE_HEADER_BYTES + 4);
    if (!(get16(raw + 10) & P_META) || magic != LMDB_MAGIC) {
        say(why, whylen, "meta page %u is not LMDB's (magic 0x%08x): garbage, or not an LMDB file", i, magic);
        return -1;
    }
    if (version != LMDB_DATA_VERSION) {
        say(why, whylen, "meta page %u is of LMDB format version %u, not %u", i, version, LMDB_DATA_VERSION);
        return -1;
    }
    m->page_bytes = get32(raw + META_TREES_AT); /* the free list's pad */
    if (m->page_bytes < PAGE_BYTES_MIN || m->page_bytes > PAGE_BYTES_MAX || (m->page_bytes & (m->page_bytes - 1))) {
        say(why, whylen, "meta page %u gives a page size of %u bytes", i, m->page_bytes);
        return -1;
    }
    tree_read(raw + META_TREES_AT, &m->free_tree);
    tree_read(raw + META_TREES_AT + TREE_RECORD_BYTES, &m->main_tree);
    m->last_pgno = get64(raw + META_LAST_PGNO_AT);
    m->txnid = get64(raw + META_TXNID_AT);
    return 0;
}

/* The newest meta page's trees: roots among the pages it counts. */
static int
meta_trees_sane(const meta_t *m, unsigned i, char *why, size_t whylen)
{
    const tree_t *trees[2] = { &m->free_tree, &m->main_tree };
    const char *names[2] = { "free list", "main database" };
    if (m->last_pgno < 1) {
        say(why, whylen, "meta page %u counts %llu pages, fewer than the meta pages", i,
            (unsigned long long)m->last_pgno + 1);
        return -1;
    }
    for (int t = 0; t < 2; t++) {
        if (trees[t]->root == NO_PAGE)
            continue;
        if (trees[t]->root < 2 || trees[t]->root > m->last_pgno || trees[t]->depth < 1 ||
            trees[t]->depth > TREE_DEPTH_MAX) {
            say(why, whylen, "meta page %u: the %s's root is page %llu of depth %u, outside pages 2 to %llu", i,
                names[t], (unsigned long long)trees[t]->root, trees[t]->depth, (unsigned long long)m->last_pgno);
            return -1;
        }
    }
    return 0;
}

/* pread until n bytes or the end; the bytes read, or -1 (errno). */
static ssize_t
read_at(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Meta page i at off: 0, -1 damaged, -2 unreadable (why for both). */
static int
meta_read(int fd, unsigned i, uint64_t off, meta_t *m, char *why, size_t whylen)
{
    uint8_t raw[META_BYTES];
    ssize_t n = read_at(fd, raw, sizeof raw, off);
    if (n < 0) {
        say(why, whylen, "cannot read meta page %u: %s", i, strerror(errno));
        return -2;
    }
    if ((size_t)n < sizeof raw && i == 0) {
        say(why, whylen, "not an LMDB file: %llu bytes, less than a meta page", (unsigned long long)n);
        return -1;
    }
    if ((size_t)n < sizeof raw) {
        say(why, whylen, "truncated: the file ends within meta page %u (at byte %llu)", i,
            (unsigned long long)off + (unsigned long long)n);
        return -1;
    }
    return meta_parse(raw, i, m, why, whylen);
}

/* Both meta pages, as LMDB reads them (page 1 at page 0's page size), and
 * which is newer (LMDB's choice: page 1 only when its txnid is higher). */
static int
metas_read(int fd, meta_t m[2], unsigned *newest, char *why, size_t whylen)
{
    int rc = meta_read(fd, 0, 0, &m[0], why, whylen);
    if (rc == 0)
        rc = meta_read(fd, 1, m[0].page_bytes, &m[1], why, whylen);
    if (rc == 0 && m[1].page_bytes != m[0].page_bytes) {
        say(why, whylen, "the meta pages disagree on the page size (%u and %u bytes)", m[0].page_bytes,
            m[1].page_bytes);
        rc = -1;
    }
    *newest = m[1].txnid > m[0].txnid;
    return rc;
}

/* What a tree is to the walk: what its leaves may point to. */
typedef enum {
    TREE_FREE,     /* txnid -> page list, maybe in an overflow run */
    TREE_MAIN,     /* name -> a named database's MDB_db */
    TREE_NAMED,    /* a named database: overflow values, duplicates */
    TREE_DUPS,     /* a key's duplicates: keys only */
    TREE_TARGET,   /* the named database av_lmdb_salvage reads */
} tree_role_t;

typedef struct {
    int fd;
    uint64_t file_bytes;
    uint32_t page_bytes;
    uint64_t last_pgno;
    uint64_t visits_left;   /* a tree that loops, or shares pages, ends the walk */
    bool deep;              /* read every page, leaves too */
    /* av_lmdb_salvage: skip what is damaged instead of stopping there */
    bool salvaging;
    const char *name;
    av_lmdb_entry_fn fn;
    void *arg;
    av_lmdb_salvage_t *salvage;
    bool found;
    char *why;
    size_t whylen;
} walk_t;

static int walk_tree(walk_t *w, const tree_t *t, tree_role_t role, unsigned nesting);

/* A page (or run) that is not what its parent says: the check's verdict
 * (-1, why), or while salvaging one more page lost and the walk goes on. */
static int
damaged(walk_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
damaged(walk_t *w, const char *fmt, ...)
{
    if (w->salvaging) {
        w->salvage->pages_lost++;
        return 0;
    }
    va_list ap;
    va_start(ap, fmt);
    if (w->why && w->whylen)
        vsnprintf(w->why, w->whylen, fmt, ap);
    va_end(ap);
    return -1;
}

static int
unreadable(walk_t *w, uint64_t pgno)
{
    say(w->why, w->whylen, "cannot read page %llu: %s", (unsigned long long)pgno, strerror(errno));
    return -2;
}

/* Pages [pgno, pgno + pages) are among those the meta page counts and lie
 * wholly in the file. pages >= 1. */
static bool
within_file(const walk_t *w, uint64_t pgno, uint64_t pages)
{
    uint64_t in_file = w->file_bytes / w->page_bytes;
    return pgno <= w->last_pgno && pages - 1 <= w->last_pgno - pgno && pgno < in_file && pages <= in_file - pgno;
}

/* An overflow run holding a value of size bytes; while salvaging a target
 * leaf's value, it is read into *value (malloc'd). */
static int
walk_overflow(walk_t *w, uint64_t pgno, uint32_t size, uint8_t **value)
{
    uint8_t head[PAGE_HEADER_BYTES];
    uint64_t needed = (PAGE_HEADER_BYTES + (uint64_t)size + w->page_bytes - 1) / w->page_bytes;
    if (pgno < 2 || pgno > w->last_pgno)
        return damaged(w, "a value's overflow run starts at page %llu, outside pages 2 to %llu",
                       (unsigned long long)pgno, (unsigned long long)w->last_pgno);
    if (!within_file(w, pgno, needed))
        return damaged(w, "truncated: the %llu pages of a value from page %llu lie past the end of the file "
                          "(%llu bytes, %llu pages)",
                       (unsigned long long)needed, (unsigned long long)pgno, (unsigned long long)w->file_bytes,
                       (unsigned long long)(w->file_bytes / w->page_bytes));
    if (w->visits_left < needed)
        return damaged(w, "more pages reachable than the file holds (its trees loop)");
    w->visits_left -= needed;
    if (!w->deep && !value)
        return 0;
    ssize_t n = read_at(w->fd, head, sizeof head, pgno * w->page_bytes);
    if (n < 0)
        return unreadable(w, pgno);
    if ((size_t)n < sizeof head || get64(head) != pgno || !(get16(head + 10) & P_OVERFLOW) ||
        get32(head + 12) < needed)
        return damaged(w, "page %llu is not the overflow run of %llu pages a value says it is",
                       (unsigned long long)pgno, (unsigned long long)needed);
    if (value) {
        if (!(*value = malloc(size ? size : 1))) {
            say(w->why, w->whylen, "out of memory");
            return -2;
        }
        n = read_at(w->fd, *value, size, pgno * w->page_bytes + PAGE_HEADER_BYTES);
        if (n < 0 || (size_t)n < size) {
            free(*value);
            *value = NULL;
            return n < 0 ? unreadable(w, pgno) : damaged(w, "a value's overflow run is cut short");
        }
    }
    return 0;
}

/* Node i of page, bounds-checked: its offset, flags, key size and, for a
 * leaf's value held in the page, that it fits. */
static bool
node_at(const walk_t *w, const uint8_t *page, unsigned i, uint16_t upper, uint32_t *off)
{
    *off = get16(page + PAGE_HEADER_BYTES + 2 * i);
    return *off >= upper && *off + NODE_HEADER_BYTES <= w->page_bytes &&
           *off + NODE_HEADER_BYTES + get16(page + *off + 6) <= w->page_bytes;
}

static int walk_page(walk_t *w, const tree_t *t, tree_role_t role, unsigned nesting, uint64_t pgno,
                     unsigned level);

static int
walk_branch(walk_t *w, const tree_t *t, tree_role_t role, unsigned nesting, const uint8_t *page, unsigned n,
            uint16_t upper, uint64_t pgno, unsigned level)
{
    if (n == 0)
        return damaged(w, "branch page %llu has no children", (unsigned long long)pgno);
    for (unsigned i = 0; i < n; i++) {
        uint32_t off;
        if (!node_at(w, page, i, upper, &off)) {
            int rc = damaged(w, "node %u of branch page %llu lies outside the page", i, (unsigned long long)pgno);
            if (rc != 0)
                return rc;
            continue;
        }
        const uint8_t *node = page + off;
        uint64_t child = get16(node) | (uint64_t)get16(node + 2) << 16 | (uint64_t)get16(node + 4) << 32;
        int rc = walk_page(w, t, role, nesting, child, level + 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* A leaf's node: the value it holds or points to. */
static int
walk_leaf_node(walk_t *w, tree_role_t role, unsigned nesting, const uint8_t *node, uint32_t room, uint64_t pgno)
{
    uint16_t flags = get16(node + 4), key_bytes = get16(node + 6);
    uint32_t size = get16(node) | (uint32_t)get16(node + 2) << 16;
    const uint8_t *data = node + NODE_HEADER_BYTES + key_bytes;
    uint32_t held = room - NODE_HEADER_BYTES - key_bytes; /* what the page has after the key */
    if (flags & F_BIGDATA) {
        if (held < 8)
            return damaged(w, "a value of leaf page %llu lies outside the page", (unsigned long long)pgno);
        uint8_t *value = NULL;
        int rc = walk_overflow(w, get64(data), size, role == TREE_TARGET ? &value : NULL);
        if (rc == 0 && value) {
            MDB_val k = { key_bytes, (void *)(node + NODE_HEADER_BYTES) }, v = { size, value };
            w->fn(w->arg, &k, &v);
            w->salvage->read++;
        }
        free(value);
        return rc;
    }
    if (size > held)
        return damaged(w, "a value of leaf page %llu lies outside the page", (unsigned long long)pgno);
    if (flags & F_SUBDATA) {
        tree_t sub;
        if (size != TREE_RECORD_BYTES)
            return damaged(w, "a database record of leaf page %llu is %u bytes", (unsigned long long)pgno, size);
        tree_read(data, &sub);
        if (role == TREE_MAIN && !(flags & F_DUPDATA)) {
            /* A named database. */
            if (!w->salvaging)
                return walk_tree(w, &sub, TREE_NAMED, nesting + 1);
            if (key_bytes != strlen(w->name) || memcmp(node + NODE_HEADER_BYTES, w->name, key_bytes) != 0)
                return 0;
            w->found = true;
            w->salvage->entries = sub.entries;
            return walk_tree(w, &sub, TREE_TARGET, nesting + 1);
        }
        if (role == TREE_NAMED && (flags & F_DUPDATA))
            return walk_tree(w, &sub, TREE_DUPS, nesting + 1);
        return 0;
    }
    if (role == TREE_TARGET && !(flags & F_DUPDATA)) {
        MDB_val k = { key_bytes, (void *)(node + NODE_HEADER_BYTES) }, v = { size, (void *)data };
        w->fn(w->arg, &k, &v);
        w->salvage->read++;
    }
    return 0; /* a value in the page, or duplicates in a page of their own within it: no pointers */
}

static int
walk_leaf(walk_t *w, tree_role_t role, unsigned nesting, const uint8_t *page, unsigned n, uint16_t upper,
          uint64_t pgno)
{
    for (unsigned i = 0; i < n; i++) {
        uint32_t off;
        int rc;
        if (!node_at(w, page, i, upper, &off))
            rc = damaged(w, "node %u of leaf page %llu lies outside the page", i, (unsigned long long)pgno);
        else
            rc = walk_leaf_node(w, role, nesting, page + off, w->page_bytes - off, pgno);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Whether a leaf of the tree must be read, not only found in the file. */
static bool
leaves_wanted(const walk_t *w, const tree_t *t, tree_role_t role)
{
    if (w->deep || role == TREE_MAIN || role == TREE_TARGET)
        return true;
    if (t->overflow_pages)
        return true; /* overflow runs to find */
    return role == TREE_NAMED && (t->flags & MDB_DUPSORT);
}

static int
walk_page(walk_t *w, const tree_t *t, tree_role_t role, unsigned nesting, uint64_t pgno, unsigned level)
{
    if (w->visits_left == 0)
        return damaged(w, "more pages reachable than the file holds (its trees loop)");
    w->visits_left--;
    if (pgno < 2 || pgno > w->last_pgno)
        return damaged(w, "a tree points to page %llu, outside pages 2 to %llu", (unsigned long long)pgno,
                       (unsigned long long)w->last_pgno);
    if (level > TREE_DEPTH_MAX)
        return damaged(w, "a tree deeper than %d pages", TREE_DEPTH_MAX);
    if (!within_file(w, pgno, 1))
        return damaged(w, "truncated: page %llu lies past the end of the file (%llu bytes, %llu pages)",
                       (unsigned long long)pgno, (unsigned long long)w->file_bytes,
                       (unsigned long long)(w->file_bytes / w->page_bytes));
    /* By the tree's depth a leaf: found in the file is enough, unless it
     * may point elsewhere. (A wrong depth is the tree's damage: LMDB goes
     * by the pages' flags, and so does the walk of a page it reads.) */
    if (level == t->depth && !leaves_wanted(w, t, role))
        return 0;
    uint8_t *page = calloc(1, w->page_bytes);
    if (!page) {
        say(w->why, w->whylen, "out of memory");
        return -2;
    }
    int rc = 0;
    ssize_t n = read_at(w->fd, page, w->page_bytes, pgno * w->page_bytes);
    if (n >= 0 && (size_t)n < w->page_bytes)
        memset(page + n, 0, w->page_bytes - (size_t)n);
    uint16_t flags = get16(page + 10), lower = get16(page + 12), upper = get16(page + 14);
    if (n < 0)
        rc = unreadable(w, pgno);
    else if ((size_t)n < w->page_bytes)
        rc = damaged(w, "truncated: the file ends within page %llu", (unsigned long long)pgno);
    else if (get64(page) != pgno)
        rc = damaged(w, "page %llu says it is page %llu", (unsigned long long)pgno, (unsigned long long)get64(page));
    else if (!(flags & (P_BRANCH | P_LEAF)) || (flags & (P_OVERFLOW | P_META)))
        rc = damaged(w, "page %llu, in a tree, is neither a branch nor a leaf (flags 0x%x)",
                     (unsigned long long)pgno, flags);
    else if (lower < PAGE_HEADER_BYTES || lower > upper || upper > w->page_bytes || (lower - PAGE_HEADER_BYTES) % 2)
        rc = damaged(w, "page %llu has its free space at %u to %u", (unsigned long long)pgno, lower, upper);
    else if (flags & P_BRANCH)
        rc = walk_branch(w, t, role, nesting, page, (lower - PAGE_HEADER_BYTES) / 2, upper, pgno, level);
    else if (!(flags & P_LEAF2)) /* keys of duplicates packed side by side: no pointers */
        rc = walk_leaf(w, role, nesting, page, (lower - PAGE_HEADER_BYTES) / 2, upper, pgno);
    free(page);
    return rc;
}

static int
walk_tree(walk_t *w, const tree_t *t, tree_role_t role, unsigned nesting)
{
    if (t->root == NO_PAGE)
        return 0;
    if (nesting > TREE_NESTING_MAX)
        return damaged(w, "databases nested deeper than LMDB nests them");
    return walk_page(w, t, role, nesting, t->root, 1);
}

/* A healthy walk reads each page once, and only pages in the file and
 * among those the meta page counts. */
static uint64_t
visits_bound(const meta_t *m, uint64_t file_bytes)
{
    uint64_t in_file = file_bytes / m->page_bytes;
    return m->last_pgno < in_file ? m->last_pgno + 1 : in_file;
}

/* One look at the file: its meta pages, then the newest one's trees.
 * *walked gets the meta page walked. */
static int
check_once(int fd, bool deep, meta_t *walked, char *why, size_t whylen)
{
    meta_t m[2];
    unsigned newest;
    struct stat st;
    int rc = metas_read(fd, m, &newest, why, whylen);
    if (rc != 0)
        return rc;
    *walked = m[newest];
    if ((rc = meta_trees_sane(walked, newest, why, whylen)) != 0)
        return rc;
    /* The size after the meta pages: a commit writes its pages first. */
    if (fstat(fd, &st) < 0) {
        say(why, whylen, "cannot stat: %s", strerror(errno));
        return -2;
    }
    if ((uint64_t)st.st_size < 2ull * walked->page_bytes) {
        say(why, whylen, "truncated: %llu bytes, less than its two meta pages", (unsigned long long)st.st_size);
        return -1;
    }
    walk_t w = {
        .fd = fd,
        .file_bytes = (uint64_t)st.st_size,
        .page_bytes = walked->page_bytes,
        .last_pgno = walked->last_pgno,
        .visits_left = visits_bound(walked, (uint64_t)st.st_size),
        .deep = deep,
        .why = why,
        .whylen = whylen,
    };
    rc = walk_tree(&w, &walked->free_tree, TREE_FREE, 0);
    if (rc == 0)
        rc = walk_tree(&w, &walked->main_tree, TREE_MAIN, 0);
    return rc;
}

static int
check_file(const char *path, bool deep, char *why, size_t whylen)
{
    struct stat st;
    say(why, whylen, "%s", "");
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0) {
        say(why, whylen, "cannot open: %s", strerror(errno));
        return -2;
    }
    int rc = 1;
    if (fstat(fd, &st) < 0) {
        say(why, whylen, "cannot stat: %s", strerror(errno));
        rc = -2;
    } else if (!S_ISREG(st.st_mode)) {
        say(why, whylen, "not a regular file");
        rc = -1;
    }
    for (int attempt = 0; rc == 1 && st.st_size > 0; attempt++) {
        meta_t walked, now[2];
        unsigned newest;
        rc = check_once(fd, deep, &walked, why, whylen);
        if (rc != -1)
            break;
        /* Damage, or a writer that reused pages of the state walked: it
         * reuses a page no sooner than two commits after the one that
         * freed it. The verdict stands when the meta page walked is still
         * there as read (not torn by a commit) and at most one commit
         * followed it. */
        char again_why[8];
        if (metas_read(fd, now, &newest, again_why, sizeof again_why) != 0)
            break; /* the meta pages themselves are damaged now */
        bool same = memcmp(now[0].raw, walked.raw, META_BYTES) == 0 || memcmp(now[1].raw, walked.raw, META_BYTES) == 0;
        if (same && now[newest].txnid <= walked.txnid + 1)
            break;
        if (attempt + 1 == CHECK_ATTEMPTS) {
            say(why, whylen, "written to faster than it can be checked");
            rc = -2;
        } else {
            rc = 1;
        }
    }
    close(fd);
    return rc;
}

int
av_lmdb_check_file(const char *path, char *why, size_t whylen)
{
    return check_file(path, false, why, whylen);
}

int
av_lmdb_check_file_deep(const char *path, char *why, size_t whylen)
{
    return check_file(path, true, why, whylen);
}

int
av_lmdb_check_mapped(MDB_env *env, int fd, uint64_t *seen_bytes, char *why, size_t whylen)
{
    struct stat st;
    MDB_stat env_st;
    meta_t m[2];
    unsigned newest;
    if (fstat(fd, &st) < 0) {
        say(why, whylen, "cannot stat: %s", strerror(errno));
        return -1;
    }
    if ((uint64_t)st.st_size < *seen_bytes) {
        say(why, whylen, "cut short to %llu bytes from %llu (an LMDB file never shrinks)",
            (unsigned long long)st.st_size, (unsigned long long)*seen_bytes);
        return -1;
    }
    *seen_bytes = (uint64_t)st.st_size;
    /* The meta pages LMDB will read in its map, read here with pread (LMDB
     * does not say where its map is; a pread cannot fault). */
    if (metas_read(fd, m, &newest, why, whylen) != 0 || mdb_env_stat(env, &env_st) != 0)
        return -1;
    uint64_t psize = env_st.ms_psize;
    if (m[0].page_bytes != psize) {
        say(why, whylen, "the meta pages give a page size of %u bytes, not %llu", m[0].page_bytes,
            (unsigned long long)psize);
        return -1;
    }
    /* The main database's root (what a reader reads first) within the
     * file. Not compared with the meta page's other fields: a commit may
     * be writing them as they are read. A commit after the fstat grew the
     * file before it wrote its meta page. */
    uint64_t root = m[newest].main_tree.root;
    if (root != NO_PAGE && (root < 2 || root >= UINT64_MAX / psize)) {
        say(why, whylen, "the main database's root is page %llu", (unsigned long long)root);
        return -1;
    }
    if (root != NO_PAGE && (root + 1) * psize > (uint64_t)st.st_size &&
        (fstat(fd, &st) < 0 || (root + 1) * psize > (uint64_t)st.st_size)) {
        say(why, whylen, "truncated: the main database's root, page %llu, lies past the end of the file",
            (unsigned long long)root);
        return -1;
    }
    *seen_bytes = (uint64_t)st.st_size;
    return 0;
}

/* ---- moving a damaged file aside ------------------------------------------ */

#define DAMAGED_PREFIX "data.mdb.damaged-"

static int
is_damaged_copy(const struct dirent *e)
{
    return strncmp(e->d_name, DAMAGED_PREFIX, strlen(DAMAGED_PREFIX)) == 0;
}

/* Keeps the newest AV_LMDB_DAMAGED_KEEP copies: their names sort by time. */
static void
prune_damaged(const char *dir)
{
    struct dirent **list;
    int n = scandir(dir, &list, is_damaged_copy, alphasort);
    for (int i = 0; i < n; i++) {
        if (i < n - AV_LMDB_DAMAGED_KEEP) {
            char path[PATH_MAX];
            if (snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name) < (int)sizeof path && unlink(path) == 0)
                av_log_notice("removed %s: only the newest %d damaged copies are kept", path, AV_LMDB_DAMAGED_KEEP);
        }
        free(list[i]);
    }
    if (n >= 0)
        free(list);
}

int
av_lmdb_set_aside(const char *dir, char *aside, size_t size)
{
    char data[PATH_MAX], lock[PATH_MAX], stamp[32];
    struct tm tm;
    time_t now = time(NULL);
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    if (snprintf(data, sizeof data, "%s/data.mdb", dir) >= (int)sizeof data ||
        snprintf(lock, sizeof lock, "%s/lock.mdb", dir) >= (int)sizeof lock) {
        errno = ENAMETOOLONG;
        return -1;
    }
    /* A second one within the second gets -2 (up to -9: they sort). */
    int rc = -1;
    for (int n = 1; n <= 9 && rc < 0; n++) {
        int len = n == 1 ? snprintf(aside, size, "%s/" DAMAGED_PREFIX "%s", dir, stamp)
                         : snprintf(aside, size, "%s/" DAMAGED_PREFIX "%s-%d", dir, stamp, n);
        if (len < 0 || (size_t)len >= size) {
            errno = ENAMETOOLONG;
            return -1;
        }
        rc = renameat2(AT_FDCWD, data, AT_FDCWD, aside, RENAME_NOREPLACE);
        if (rc < 0 && errno != EEXIST)
            return -1;
    }
    if (rc < 0)
        return -1;
    if (unlink(lock) < 0 && errno != ENOENT)
        av_log_warning("cannot remove %s: %s", lock, strerror(errno));
    prune_damaged(dir);
    return 0;
}

/* ---- a store that can be rebuilt ------------------------------------------ */

static bool
says_damaged(int rc)
{
    return rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND;
}

static int
store_open(av_daemon_t *d, const av_lmdb_store_t *s, MDB_env **env, MDB_dbi *dbis)
{
    int rc = env_open(d, s->path, s->flags, s->map_mb, s->max_dbs, env);
    if (rc == 0)
        rc = av_lmdb_open_dbis(*env, true, s->names, dbis, s->n_names);
    if (rc == 0 && s->verify)
        rc = s->verify(s->arg, *env, dbis);
    if (rc != 0 && *env) {
        mdb_env_close(*env);
        *env = NULL;
    }
    return rc;
}

static int
store_set_aside(av_daemon_t *d, const av_lmdb_store_t *s, const char *why)
{
    char aside[PATH_MAX];
    if (av_lmdb_set_aside(s->path, aside, sizeof aside) < 0) {
        av_log_err("the %s in %s is damaged (%s) and cannot be moved aside: %s", s->what, s->path, why,
                   strerror(errno));
        return -1;
    }
    av_report(d, AV_LOG_ERR, NULL, "database_damaged",
              "the %s in %s was damaged (%s): moved aside to %s, and started empty", s->what, s->path, why, aside);
    return 0;
}

int
av_lmdb_open_rebuildable(av_daemon_t *d, const av_lmdb_store_t *s, MDB_env **env, MDB_dbi *dbis)
{
    char data[PATH_MAX], why[256];
    *env = NULL;
    if (snprintf(data, sizeof data, "%s/data.mdb", s->path) >= (int)sizeof data) {
        av_log_err("the %s's path is too long: %s", s->what, s->path);
        return -1;
    }
    int rc = av_lmdb_check_file(data, why, sizeof why);
    if (rc == -1 && store_set_aside(d, s, why) < 0)
        return -1;
    /* (-2, cannot tell: LMDB's own open says what it finds.) */
    rc = store_open(d, s, env, dbis);
    if (says_damaged(rc)) {
        snprintf(why, sizeof why, "%s", mdb_strerror(rc));
        if (store_set_aside(d, s, why) < 0)
            return -1;
        rc = store_open(d, s, env, dbis);
    }
    if (rc != 0) {
        av_log_err("cannot open the %s in %s: %s", s->what, s->path, mdb_strerror(rc));
        return -1;
    }
    return 0;
}

/* ---- reading what is left --------------------------------------------------- */

/* The meta page to salvage from: the newest one that is LMDB's. Page 1 is
 * looked for at each page size when page 0 is garbage. */
static int
salvage_meta(int fd, meta_t *out, bool *one_garbage, char *why, size_t whylen)
{
    meta_t m[2];
    char ignored[8];
    bool ok0 = meta_read(fd, 0, 0, &m[0], why, whylen) == 0 && meta_trees_sane(&m[0], 0, ignored, sizeof ignored) == 0;
    bool ok1 = false;
    for (uint32_t size = ok0 ? m[0].page_bytes : PAGE_BYTES_MIN; size <= PAGE_BYTES_MAX && !ok1; size *= 2) {
        ok1 = meta_read(fd, 1, size, &m[1], ignored, sizeof ignored) == 0 && m[1].page_bytes == size &&
              meta_trees_sane(&m[1], 1, ignored, sizeof ignored) == 0;
        if (ok0)
            break;
    }
    *one_garbage = ok0 != ok1;
    if (!ok0 && !ok1)
        return -1; /* why: meta page 0's */
    *out = ok0 && (!ok1 || m[0].txnid >= m[1].txnid) ? m[0] : m[1];
    return 0;
}

int
av_lmdb_salvage(const char *path, const char *name, av_lmdb_entry_fn fn, void *arg, av_lmdb_salvage_t *out,
                char *why, size_t whylen)
{
    struct stat st;
    meta_t m;
    memset(out, 0, sizeof *out);
    say(why, whylen, "%s", "");
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        say(why, whylen, "cannot open: %s", strerror(errno));
        return -1;
    }
    int rc = -1;
    if (fstat(fd, &st) < 0)
        say(why, whylen, "cannot stat: %s", strerror(errno));
    else if (salvage_meta(fd, &m, &out->one_meta_garbage, why, whylen) == 0) {
        walk_t w = {
            .fd = fd,
            .file_bytes = (uint64_t)st.st_size,
            .page_bytes = m.page_bytes,
            .last_pgno = m.last_pgno,
            .visits_left = visits_bound(&m, (uint64_t)st.st_size),
            .salvaging = true,
            .name = name,
            .fn = fn,
            .arg = arg,
            .salvage = out,
            .why = why,
            .whylen = whylen,
        };
        rc = walk_tree(&w, &m.main_tree, TREE_MAIN, 0);
        if (rc == 0 && !w.found) {
            say(why, whylen, "no database '%s' in what is left of it", name);
            rc = -1;
        } else if (rc != 0) {
            rc = -1;
        }
    }
    close(fd);
    return rc;
}
