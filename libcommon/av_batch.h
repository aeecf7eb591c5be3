/* Reads one kind of message from a socket and hands them to the daemon in
 * batches: everything read in one loop turn, at most `max`, so a writer can
 * commit one transaction per batch instead of one per message. Malformed
 * messages are counted (counter `malformed`), optionally reported, dropped. */
#ifndef AV_BATCH_H
#define AV_BATCH_H

#include "av_daemon.h"

typedef struct av_batch av_batch_t;

/* msgs[i] stay valid until fn returns. */
typedef void (*av_batch_fn)(av_daemon_t *d, av_msg_t *const *msgs, uint32_t n);

av_batch_t *av_batch_new(av_daemon_t *d, zsock_t *sock, av_msg_type_t type, uint32_t max, bool report_malformed,
                         av_batch_fn fn);
void av_batch_destroy(av_batch_t **self_p);
/* Hands over what has been read so far (before a query or a purge). */
void av_batch_flush(av_batch_t *self);
/* Graceful stop: read what is queued on the socket (at most `limit`
 * messages), flush, and stop watching the socket. */
void av_batch_finish(av_batch_t *self, uint32_t limit);

#endif
