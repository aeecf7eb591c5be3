/* Error events to availd-errors. Sending never blocks the daemon: a PUSH
 * socket with a bounded queue and non-blocking sends; when availd-errors is
 * down the queue fills, then events are dropped and counted. A token bucket
 * keeps an error storm from flooding the queue with one repeated event. */
#include "av_daemon_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define REPORT_QUEUE      1000 /* events held while availd-errors is away */
#define REPORT_RATE_PER_S 200
#define REPORT_BURST      400
/* The same code about the same registry at most once per interval: a storm
 * of timeouts is one line and one event a second that says how many. */
#define REPEAT_INTERVAL_US 1000000
#define REPEAT_SLOTS 32

typedef struct {
    char key[AV_CODE_MAX + AV_REGISTRY_MAX + 2];
    uint64_t last_us;
    uint64_t suppressed;
} repeat_t;

/* Per process, like the logger; reset with the reporter. */
static repeat_t repeats[REPEAT_SLOTS];
/* The clock of the repeat window and the token bucket. */
static uint64_t (*clock_us)(void) = av_mono_us;

void
av_report_set_clock(uint64_t (*mono_us)(void))
{
    clock_us = mono_us ? mono_us : av_mono_us;
}

/* Returns false when this (code, registry) was reported less than a
 * second ago; else true, with *earlier the number held back since. */
static bool
repeat_allows(const char *code, const char *registry, uint64_t now, uint64_t *earlier)
{
    char key[sizeof repeats[0].key];
    snprintf(key, sizeof key, "%s/%s", code, registry ? registry : "");
    repeat_t *slot = NULL, *oldest = &repeats[0];
    for (int i = 0; i < REPEAT_SLOTS && !slot; i++) {
        if (strcmp(repeats[i].key, key) == 0)
            slot = &repeats[i];
        else if (repeats[i].last_us < oldest->last_us)
            oldest = &repeats[i];
    }
    if (!slot) {
        slot = oldest;
        snprintf(slot->key, sizeof slot->key, "%s", key);
        slot->last_us = 0;
        slot->suppressed = 0;
    }
    if (slot->last_us && now - slot->last_us < REPEAT_INTERVAL_US) {
        slot->suppressed++;
        return false;
    }
    *earlier = slot->suppressed;
    slot->suppressed = 0;
    slot->last_us = now;
    return true;
}

int
av_reporter_open(av_daemon_t *d)
{
    d->events_sent = av_daemon_counter(d, "events_sent");
    d->events_dropped = av_daemon_counter(d, "events_dropped");
    d->events_suppressed = av_daemon_counter(d, "events_repeated");
    d->report_tokens = REPORT_BURST;
    d->report_refill_us = clock_us();
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
    memset(repeats, 0, sizeof repeats);
}

static bool
take_token(av_daemon_t *d)
{
    uint64_t now = clock_us();
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
    uint64_t earlier = 0;
    if (!repeat_allows(code, registry, clock_us(), &earlier)) {
        if (d && d->events_suppressed)
            (*d->events_suppressed)++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (earlier && n >= 0 && (size_t)n < sizeof text)
        snprintf(text + n, sizeof text - (size_t)n, " (and %llu more like it)", (unsigned long long)earlier);
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
