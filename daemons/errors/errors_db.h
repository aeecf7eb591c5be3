/* The global error database: events in arrival order under a sequence
 * number, and a count per (registry, code) of the events it holds, with
 * retention bounded by count and by age. */
#ifndef ERRORS_DB_H
#define ERRORS_DB_H

#include "av_daemon.h"
#include "av_proto.h"

typedef struct errors_db errors_db_t;

typedef struct {
    av_str_t daemon;    /* empty = any */
    av_str_t registry;  /* empty = any */
    int max_level;      /* events at this level or more severe */
    uint64_t after_seq; /* only events newer than this */
} errors_filter_t;

/* Creates the database when it does not exist; moves a damaged one aside
 * (data.mdb.damaged-TIMESTAMP), reports it and starts empty
 * (av_lmdb_open_rebuildable). d may be NULL (tests). */
errors_db_t *errors_db_open(av_daemon_t *d, const av_errors_cfg_t *cfg);
void errors_db_close(errors_db_t **self_p);
/* New retention bounds (reload). */
void errors_db_set_retention(errors_db_t *self, uint64_t count, uint32_t age_s);

/* Stores n events in one transaction, received at received_ms; each gets
 * the next sequence number (seq and received_ms set in the event). Returns
 * 0, or -1 (nothing stored). */
int errors_db_append(errors_db_t *self, av_error_t *const *events, size_t n, uint64_t received_ms);
/* Drops events older than the age bound. Returns how many. */
uint64_t errors_db_expire(errors_db_t *self, uint64_t now_ms);
/* Flushes to disk: writers commit without fsync and call this on a timer. */
void errors_db_sync(errors_db_t *self);

/* Calls visit for the newest events matching filter, newest first, until
 * limit events were visited or visit returns false. The event (its seq and
 * received_ms set) lives until visit returns. */
typedef bool (*errors_visit_fn)(void *arg, const av_error_t *ev);
int errors_db_recent(errors_db_t *self, const errors_filter_t *filter, uint32_t limit, errors_visit_fn visit,
                     void *arg);
typedef void (*errors_count_fn)(void *arg, av_str_t registry, av_str_t code, uint64_t count);
int errors_db_counts(errors_db_t *self, errors_count_fn visit, void *arg);
/* Events held. */
uint64_t errors_db_size(errors_db_t *self);

#endif
