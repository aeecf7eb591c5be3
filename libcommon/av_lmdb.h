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

#endif
