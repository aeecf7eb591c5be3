/* Error events to availd-errors. Sending never blocks the daemon: a PUSH
 * socket with a bounded queue and non-blocking sends; when availd-errors is
 * down the queue fills, then events are dropped and counted. A token bucket
 * keeps an error storm from flooding the queue with one repeated event. */
#include "av_daemon_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#define REPORT_QUEUE      1000 /* events held while availd-errors is away */
#define REPORT_RATE_PER_S 200
#define REPORT_BURST      400

int
av_reporter_open(av_daemon_t *d)
{
    d->events_sent = av_daemon_counter(d, "events_sent");
    d->events_dropped = av_daemon_counter(d, "events_dropped");
    d->report_tokens = REPORT_BURST;
    d->report_refill_us = av_mono_us();
    d->reporter = av_daemon_connect(d, ZMQ_PUSH, d->cfg->endpoints.errors_events);
    if (!d->reporter)
        return -1;
    zsock_set_sndhwm(d->reporter, REPORT_QUEUE);
    zsock_set_linger(d->reporter, 200);
    return 0;
}

void
av_reporter_close(av_daemon_t *d)
{
    zsock_destroy(&d->reporter);
}

static bool
take_token(av_daemon_t *d)
{
    uint64_t now = av_mono_us();
    d->report_tokens += (double)(now - d->report_refill_us) * REPORT_RATE_PER_S / 1e6;
    if (d->report_tokens > REPORT_BURST)
        d->report_tokens = REPORT_BURST;
    d->report_refill_us = now;
    if (d->report_tokens < 1)
        return false;
    d->report_tokens -= 1;
    return true;
}

void
av_report(av_daemon_t *d, int level, const char *registry, const char *code, const char *fmt, ...)
{
    char text[AV_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (registry && *registry)
        av_log(level, "[%s] %s: %s", code, registry, text);
    else
        av_log(level, "[%s] %s", code, text);
    if (!d || !d->reporter)
        return;
    if (!take_token(d)) {
        (*d->events_dropped)++;
        return;
    }
    av_error_t ev = {
        .daemon = av_str(d->ident),
        .registry = av_str(registry ? registry : ""),
        .level = (av_level_t)level,
        .code = av_str(code),
        .text = av_str(text),
        .at_ms = av_now_ms(),
        .pid = (uint32_t)getpid(),
    };
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    if (av_encode_error(&sbuf, &ev) == 0 && av_zsock_send_nowait(d->reporter, sbuf.data, sbuf.size) == 0)
        (*d->events_sent)++;
    else
        (*d->events_dropped)++;
    msgpack_sbuffer_destroy(&sbuf);
}
