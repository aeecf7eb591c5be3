/* LMDB environments the availd way: created with their directory, owned by
 * the daemons' user, NOTLS so one read transaction per loop turn is cheap;
 * and the write patterns the stores share (a transaction per batch, room
 * made when the map is full, bounded deletion from the front).
 * See DESIGN.md "LMDB across processes". */
#ifndef AV_LMDB_H
#define AV_LMDB_H

#include "av_daemon.h"

#include <lmdb.h>

/* Opens (creating when writable) the environment in directory `path`.
 * flags: MDB_RDONLY for readers, MDB_NOSYNC for writers that sync on a
 * timer. map_mb 0 keeps the size the file has. d may be NULL (tools). */
int av_lmdb_open(av_daemon_t *d, const char *path, unsigned flags, uint32_t map_mb, unsigned max_dbs,
                 MDB_env **out);
/* Flushes what a writer committed without fsync, closes the environment
 * and sets *env_p to NULL; NULL-safe. */
void av_lmdb_close(MDB_env **env_p);
/* Opens the named databases names[0..n) into dbis (creating them when
 * `create`), in one transaction. Returns 0 or an LMDB error. */
int av_lmdb_open_dbis(MDB_env *env, bool create, const char *const *names, MDB_dbi *dbis, size_t n);

/* Entries in dbi now (a read transaction of its own); 0 when unreadable. */
uint64_t av_lmdb_entries(MDB_env *env, MDB_dbi dbi);

/* Big-endian u64 keys keep LMDB's byte order equal to numeric order. */
void av_be64_put(uint8_t out[8], uint64_t v);
uint64_t av_be64_get(const uint8_t in[8]);

/* Deletes entries from the front of dbi (in key order: the oldest, or the
 * soonest to expire, first), at most max of them. Before each deletion fn
 * sees the first entry and returns false to keep it and stop, or true after
 * doing what goes with the deletion (an index entry, a count): it may write
 * to other databases of txn, and keeps nothing of key and val, which die
 * with the entry. fn NULL deletes without asking. Returns how many went. */
typedef bool (*av_lmdb_front_fn)(void *arg, MDB_txn *txn, const MDB_val *key, const MDB_val *val);
uint64_t av_lmdb_delete_front(MDB_txn *txn, MDB_dbi dbi, uint64_t max, av_lmdb_front_fn fn, void *arg);

/* What a write transaction does: returns 0 or an LMDB error code. */
typedef int (*av_lmdb_txn_fn)(void *arg, MDB_txn *txn);

/* For a store that would rather lose its oldest entries than refuse new
 * ones. A write that finds over 90% of the map's pages in use first deletes
 * a tenth of dbi's entries plus `at_least` from its front (through fn, as
 * av_lmdb_delete_front) and logs `warning`: deleting needs free pages too,
 * so room is made while there are some. A write that still fills the map
 * makes the same room in small transactions and is tried once more. */
typedef struct {
    MDB_dbi dbi;
    av_lmdb_front_fn fn;
    void *arg;
    uint64_t at_least;   /* the batch being written: room for all of it */
    const char *warning;
} av_lmdb_room_t;

/* Runs fn in a write transaction and commits it, or aborts it when fn
 * fails. room (may be NULL) makes room as above. Returns 0 or the LMDB
 * error (MDB_MAP_FULL too); on an error nothing fn wrote is kept. */
int av_lmdb_write(MDB_env *env, av_lmdb_txn_fn fn, void *arg, const av_lmdb_room_t *room);

/* ---- damaged files --------------------------------------------------------
 * A data file cut short, or whose meta pages are garbage, must never be
 * mapped: LMDB would die of SIGBUS reading a page past its end. These read
 * it with pread and bounds checks instead (LMDB 0.9's layout, 64-bit). */

/* Whether the data file at path (an environment's data.mdb) can be opened
 * and read by LMDB without a read past its end. 0 sound; 1 absent or empty
 * (LMDB creates it); -1 damaged, with why: truncated, garbage or foreign
 * meta pages, another format version, a tree pointing outside the file or
 * at pages that are not what it says; -2 cannot tell (a read error, or a
 * writer changing it faster than it can be checked), with why: not damage,
 * try again later. Sound: both meta pages must be LMDB's (LMDB refuses a
 * file when either is not), and every page that the newest one's trees
 * reach (the main database, the named and sub-databases in it, the free
 * list, overflow values) must lie wholly within the file. A file shorter
 * than its last page number is not damaged by itself: pages freed in the
 * transaction that allocated them are never written. A leaf is read where
 * it may point elsewhere (the main database, overflow values, sub-
 * databases), else only bounds-checked. Safe beside a live writer. */
int av_lmdb_check_file(const char *path, char *why, size_t whylen);
/* The same, reading every reachable page, leaves too, and checking that
 * each is what its parent says: for files small enough (the journal). */
int av_lmdb_check_file_deep(const char *path, char *why, size_t whylen);

/* What a reader that already has env open (read-only) checks before each
 * read, cheaply (an fstat, two small preads): its data file (fd, LMDB's)
 * is no shorter than *seen_bytes (an LMDB file never shrinks; raised to its
 * size now), both meta pages are still LMDB's, and the newest one's main
 * root lies within the file. 0, or -1 with why: let go of env without
 * reading (a SIGBUS otherwise). */
int av_lmdb_check_mapped(MDB_env *env, int fd, uint64_t *seen_bytes, char *why, size_t whylen);

/* Damaged copies kept beside a store (data.mdb.damaged-*): the newest. */
#define AV_LMDB_DAMAGED_KEEP 3

/* Moves DIR/data.mdb aside to DIR/data.mdb.damaged-YYYYMMDDTHHMMSSZ (its
 * path into aside) and removes DIR/lock.mdb: readers that still have the
 * old file keep their lock file, and the new environment gets a reader
 * table of its own. Keeps the newest AV_LMDB_DAMAGED_KEEP such copies.
 * Returns 0, or -1 with errno set. */
int av_lmdb_set_aside(const char *dir, char *aside, size_t size);

/* A store that can be rebuilt from nothing (the cache, the error database):
 * better empty than in a restart loop. */
typedef struct {
    const char *path;          /* the environment's directory */
    const char *what;          /* "cache": for the messages */
    unsigned flags;            /* as av_lmdb_open */
    uint32_t map_mb;
    unsigned max_dbs;
    const char *const *names;  /* the named databases, created */
    size_t n_names;
    /* A first read once the databases are open (may be NULL): an LMDB
     * error it returns that says the file is damaged rebuilds it too. */
    int (*verify)(void *arg, MDB_env *env, const MDB_dbi *dbis);
    void *arg;
} av_lmdb_store_t;

/* Opens the store as av_lmdb_open and av_lmdb_open_dbis, into *env and
 * dbis[0..n_names). A damaged one (av_lmdb_check_file, or LMDB's
 * MDB_INVALID, MDB_VERSION_MISMATCH, MDB_CORRUPTED or MDB_PAGE_NOTFOUND
 * while opening it) is moved aside (av_lmdb_set_aside), reported (log and
 * error event `database_damaged`) and created anew, empty. Returns 0, or
 * -1 (logged) when not even an empty one can be opened. d may be NULL. */
int av_lmdb_open_rebuildable(av_daemon_t *d, const av_lmdb_store_t *store, MDB_env **env, MDB_dbi *dbis);

/* What av_lmdb_salvage read of a database. */
typedef struct {
    uint64_t entries;      /* the database's own count of its entries */
    uint64_t read;         /* entries handed to fn */
    uint64_t pages_lost;   /* pages of it past the end or not what they should be */
    /* One meta page was garbage: the other, read, may be one commit older
     * than the last (entries deleted by the last commit read back). */
    bool one_meta_garbage;
} av_lmdb_salvage_t;

/* Called for each entry av_lmdb_salvage can read; key and val live until
 * it returns. */
typedef void (*av_lmdb_entry_fn)(void *arg, const MDB_val *key, const MDB_val *val);

/* Reads what is left of the named database `name` of a damaged data file,
 * without LMDB and without mapping it: the trees of the newest meta page
 * that is LMDB's, every entry on a page within the file, skipping the
 * pages that are past its end or not what their parent says. Returns 0
 * with *out, or -1 with why when no meta page is LMDB's or the database
 * cannot be found (nothing read). */
int av_lmdb_salvage(const char *path, const char *name, av_lmdb_entry_fn fn, void *arg, av_lmdb_salvage_t *out,
                    char *why, size_t whylen);

#endif
