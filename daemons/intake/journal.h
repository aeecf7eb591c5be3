/* The intake's request journal (LMDB): what was accepted and not yet
 * answered, so a restarted intake can ask again. */
#ifndef JOURNAL_H
#define JOURNAL_H

#include "intake.h"

typedef struct journal journal_t;

/* NULL on failure (logged). */
journal_t *journal_open(av_daemon_t *d, const av_intake_cfg_t *cfg);
void journal_close(journal_t **self_p);

/* Queue changes for the next commit. put writes the request as it is now
 * (names already answered are left out). */
int journal_put(journal_t *j, const request_t *r);
int journal_delete(journal_t *j, uint64_t rid);
bool journal_pending(const journal_t *j);
/* One transaction for everything queued. */
int journal_commit(journal_t *j);

/* At start: calls fn for every record; a record fn refuses (returns <0),
 * or one that cannot be read, is queued for deletion. */
typedef int (*journal_load_fn)(void *arg, uint64_t rid, const msgpack_object *record);
int journal_load(journal_t *j, journal_load_fn fn, void *arg);

#endif
