/* The intake's request journal (LMDB): what was accepted and not yet
 * answered, so a restarted intake can ask again. */
#ifndef JOURNAL_H
#define JOURNAL_H

#include "intake.h"

#include <limits.h>

typedef struct journal journal_t;

/* One request as the journal keeps it: a msgpack map (record version 1:
 * version, origin, id, batch, fresh, raw, deadline_at, peer, delimiter,
 * names) under the big-endian rid. Names go by their position in the
 * request; the ones already answered are not in the record, so a restart
 * does not publish them again. */
typedef struct {
    uint64_t rid;             /* the key, not in the map */
    origin_t origin;          /* ORIGIN_PULL or ORIGIN_ROUTER */
    av_str_t id;
    bool batch;
    bool fresh;
    bool raw;
    uint64_t deadline_at_ms;  /* wall clock: it outlives the process */
    av_str_t peer;            /* ROUTER: the frontend's routing id, or empty */
    bool delimiter;
    uint32_t n_names;         /* the request's positions */
    av_str_t *names;          /* [n_names] */
    uint8_t *answered;        /* [n_names]: 1 leaves the name out */
    /* Decoded records own their memory: the arrays above and one block
     * with every string. */
    char *strings;
} journal_record_t;

/* Appends the record's encoding to sbuf. Returns 0, or -1 out of memory. */
int journal_record_encode(msgpack_sbuffer *sbuf, const journal_record_t *rec);
/* Reads a record back from its bytes (which it need not outlive). Returns
 * 0, or -1 for a record that is damaged or not ours (nothing to clear). */
int journal_record_decode(journal_record_t *rec, uint64_t rid, const void *data, size_t size);
/* Frees what a decoded record still owns. */
void journal_record_clear(journal_record_t *rec);

/* NULL on failure (logged). d may be NULL (tests): no counters, no sync
 * timer (the journal is synced when it closes), no error events. */
journal_t *journal_open(av_daemon_t *d, const av_intake_cfg_t *cfg);
void journal_close(journal_t **self_p);

/* Queue changes for the next commit. Returns 0, or -1 out of memory.
 * journal_put (a record rewritten: names answered) and journal_delete (a
 * request answered) stay queued until a commit writes them, however many
 * commits fail meanwhile: what was answered must leave the journal before
 * the answer goes out, or a restart answers it again.
 * journal_put_new is a new request's record: it is written with the next
 * commit or not at all. */
int journal_put(journal_t *j, const journal_record_t *rec);
int journal_put_new(journal_t *j, const journal_record_t *rec);
int journal_delete(journal_t *j, uint64_t rid);

/* After a failed commit, commits are tried at most this often. */
#define JOURNAL_RETRY_MS 100

/* One transaction for everything queued. Returns 0 when all of it is on
 * disk. Else -1: the new records are dropped (their requests are not
 * durable: the caller refuses them), and the other changes, when they
 * could not be written on their own either, stay queued (journal_pending)
 * for the next commit. After a failure, a commit sooner than
 * JOURNAL_RETRY_MS later tries nothing and returns -1 (dropping the new
 * records); journal_commit_now tries at once (a stopping intake).
 * Failures are logged and reported (at most once a second, with counts)
 * with their cause. */
int journal_commit(journal_t *j);
int journal_commit_now(journal_t *j);
/* Changes queued that a commit must still write (not new records). */
size_t journal_pending(const journal_t *j);
/* A retry of what is pending is due (JOURNAL_RETRY_MS after a failure). */
bool journal_retry_due(const journal_t *j, uint64_t now_us);

/* What a failed write means, for the log: into cause, and the event's
 * code as the return value. LMDB returns errno values besides its own:
 * MDB_MAP_FULL (journal_map_full: intake.journal_map_mb is too small),
 * ENOSPC or EDQUOT (journal_no_space), EIO (journal_no_space when the
 * filesystem of dir is full, for LMDB reports a short write as EIO; else
 * journal_io_error); anything else journal_failed. */
const char *journal_describe_failure(int rc, const char *dir, char *cause, size_t len);

/* At start: calls fn for every record. fn may take the record's memory
 * (setting its pointers to NULL); what is left is freed after. A record fn
 * refuses (returns <0), or one that cannot be read, is queued for
 * deletion. */
typedef int (*journal_load_fn)(void *arg, journal_record_t *rec);
int journal_load(journal_t *j, journal_load_fn fn, void *arg);

/* ---- a damaged journal ----------------------------------------------------
 * The journal holds accepted work: intake does not start on a damaged one
 * (it would die of SIGBUS reading a page past the end, or lose what LMDB
 * cannot read), and the operator salvages it with availctl. */

/* Checks cfg->journal's data file, every page of it (av_lmdb_check_file_deep):
 * 0 sound, 1 absent or empty, -1 damaged (why), -2 cannot tell (why). */
int journal_check(const av_intake_cfg_t *cfg, char *why, size_t whylen);

typedef struct {
    char damage[256];       /* what journal_check found */
    char aside[PATH_MAX];   /* where the damaged file went */
    uint64_t saved;         /* records in the new journal */
    uint64_t unreadable;    /* records found whose bytes do not decode */
    bool counted;           /* the damaged journal's own count was read: */
    uint64_t lost;          /* what it counted that was not saved */
    uint64_t pages_lost;    /* pages of it past the end or not what they should be */
    bool one_meta_garbage;  /* read from the meta page before the last commit */
    char unread[256];       /* why nothing could be read, or "" */
} journal_salvage_t;

/* Salvages a damaged journal (intake must not run): reads every record it
 * can still read (av_lmdb_salvage, journal_record_decode), moves the file
 * aside (data.mdb.damaged-TIMESTAMP), and writes what it read into a new
 * journal, owned as the old one was. Returns 0 with *out; 1 when there is
 * nothing to salvage (no journal, or a sound one: why says which); -1 when
 * it failed (why; the journal is then as it was, or moved aside with the
 * new one incomplete, as why says). */
int journal_salvage(const av_intake_cfg_t *cfg, journal_salvage_t *out, char *why, size_t whylen);

#endif
