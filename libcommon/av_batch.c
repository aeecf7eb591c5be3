/* Batching of incoming messages per loop turn. */
#include "av_batch.h"

#include <stdlib.h>

typedef struct {
    zframe_t *frame;  /* the message's strings point into it */
    av_msg_t msg;
} pending_t;

struct av_batch {
    av_daemon_t *d;
    zsock_t *sock;
    av_msg_type_t type;
    uint32_t max;
    bool report_malformed;
    av_batch_fn fn;
    pending_t *pending;
    av_msg_t **msgs;
    uint32_t n;
    sd_event_source *flush;
    uint64_t *received;
    uint64_t *malformed;
};

void
av_batch_flush(av_batch_t *self)
{
    if (self->n == 0)
        return;
    for (uint32_t i = 0; i < self->n; i++)
        self->msgs[i] = &self->pending[i].msg;
    self->fn(self->d, self->msgs, self->n);
    for (uint32_t i = 0; i < self->n; i++) {
        av_msg_release(&self->pending[i].msg);
        zframe_destroy(&self->pending[i].frame);
    }
    self->n = 0;
}

static int
on_flush(sd_event_source *s, void *userdata)
{
    (void)s;
    av_batch_flush(userdata);
    return 0;
}

static bool
on_message(av_daemon_t *d, zsock_t *sock, void *arg)
{
    av_batch_t *self = arg;
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return false;
    (*self->received)++;
    /* One frame: the message. Anything else is not ours. */
    zframe_t *frame = zmsg_size(msg) == 1 ? zmsg_pop(msg) : NULL;
    zmsg_destroy(&msg);
    pending_t *p = &self->pending[self->n];
    av_msg_init(&p->msg);
    int rc = frame ? av_msg_decode(&p->msg, zframe_data(frame), zframe_size(frame)) : AV_PROTO_E_NOT_MSGPACK;
    if (rc != 0 || p->msg.type != self->type) {
        char why[128];
        (*self->malformed)++;
        if (rc)
            av_msg_strerror(&p->msg, rc, why, sizeof why);
        else
            snprintf(why, sizeof why, "a %s message, not %s", av_msg_type_name(p->msg.type),
                     av_msg_type_name(self->type));
        if (self->report_malformed)
            av_report(d, AV_LOG_WARNING, NULL, "malformed_message", "dropped a message: %s", why);
        else
            av_log_debug("dropped a malformed message: %s", why);
        av_msg_release(&p->msg);
        zframe_destroy(&frame);
        return true;
    }
    p->frame = frame;
    if (++self->n == self->max)
        av_batch_flush(self);
    else
        sd_event_source_set_enabled(self->flush, SD_EVENT_ONESHOT);
    return true;
}

av_batch_t *
av_batch_new(av_daemon_t *d, zsock_t *sock, av_msg_type_t type, uint32_t max, bool report_malformed, av_batch_fn fn)
{
    av_batch_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    *self = (av_batch_t){ .d = d, .sock = sock, .type = type, .max = max ? max : 1,
                          .report_malformed = report_malformed, .fn = fn };
    self->received = av_daemon_counter(d, "received");
    self->malformed = av_daemon_counter(d, "malformed");
    if (!(self->pending = calloc(self->max, sizeof *self->pending)) ||
        !(self->msgs = calloc(self->max, sizeof *self->msgs)) ||
        sd_event_add_defer(av_daemon_loop(d), &self->flush, on_flush, self) < 0 ||
        av_daemon_watch(d, sock, on_message, self) < 0) {
        av_batch_destroy(&self);
        return NULL;
    }
    sd_event_source_set_enabled(self->flush, SD_EVENT_OFF);
    return self;
}

void
av_batch_finish(av_batch_t *self, uint32_t limit)
{
    for (uint32_t n = 0; n < limit && (zsock_events(self->sock) & ZMQ_POLLIN); n++)
        on_message(self->d, self->sock, self);
    av_batch_flush(self);
    av_daemon_unwatch(self->d, self->sock);
}

void
av_batch_destroy(av_batch_t **self_p)
{
    av_batch_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    av_batch_flush(self);
    av_daemon_unwatch(self->d, self->sock);
    sd_event_source_disable_unref(self->flush);
    free(self->pending);
    free(self->msgs);
    free(self);
    *self_p = NULL;
}
