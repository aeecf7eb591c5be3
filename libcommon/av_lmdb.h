/* LMDB environments the availd way: created with their directory, owned by
 * the daemons' user, NOTLS so one read transaction per loop turn is cheap.
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

/* Big-endian u64 keys keep LMDB's byte order equal to numeric order. */
void av_be64_put(uint8_t out[8], uint64_t v);
uint64_t av_be64_get(const uint8_t in[8]);

#endif
