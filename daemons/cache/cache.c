/* availd-cache's job: puts stored in batches, sweeps, control commands (get,
 * purge, stats). The daemon's manual is in main.c. */
#include "av_batch.h"
#include "av_daemon.h"
#include "av_names.h"
#include "cache.h"
#include "cache_store.h"

#include <stdlib.h>
#include <string.h>

#define SWEEP_BATCH 10000
#define SYNC_INTERVAL_MS 1000
#define READER_CHECK_MS 10000

typedef struct {
    cache_store_t *cache;
    zsock_t *puts;
    av_batch_t *batch;
    sd_event_source *sweep_timer;
    sd_event_source *sync_timer;
    sd_event_source *reader_timer;
    uint64_t *stored;
    uint64_t *store_failed;
    uint64_t *expired;
    uint64_t *purged;
} cache_t;

/* The puts read in one loop turn: one write transaction. */
static void
store_batch(av_daemon_t *d, av_msg_t *const *msgs, uint32_t n)
{
    cache_t *c = av_daemon_state(d);
    const av_put_t *puts[n];
    for (uint32_t i = 0; i < n; i++)
        puts[i] = &msgs[i]->u.put;
    if (cache_store_put_batch(c->cache, puts, n, av_now_ms()) == 0)
        *c->stored += n;
    else
        *c->store_failed += n;
}

static void
on_sweep(av_daemon_t *d, void *arg)
{
    (void)arg;
    cache_t *c = av_daemon_state(d);
    /* Bounded per turn, so a sweep never holds the loop for long. */
    uint64_t n = cache_store_sweep(c->cache, av_now_ms(), SWEEP_BATCH);
    *c->expired += n;
}

static void
on_sync(av_daemon_t *d, void *arg)
{
    (void)arg;
    cache_store_sync(((cache_t *)av_daemon_state(d))->cache);
}

static void
on_reader_check(av_daemon_t *d, void *arg)
{
    (void)arg;
    int dead = cache_store_reader_check(((cache_t *)av_daemon_state(d))->cache);
    if (dead)
        av_log_info("freed %d reader slots left by stopped processes", dead);
}

/* ---- control commands --------------------------------------------------- */

static int
name_arg(const msgpack_object *req, char *name, char *err, size_t errlen)
{
    av_str_t raw;
    const char *reason;
    if (!av_obj_get_str(req, "name", &raw)) {
        snprintf(err, errlen, "missing 'name'");
        return -1;
    }
    if (av_name_normalize(raw.ptr, raw.len, name, &reason) < 0) {
        snprintf(err, errlen, "invalid name: %s", reason);
        return -1;
    }
    return 0;
}

static int
cmd_get(av_daemon_t *d, const msgpack_object *req, msgpack_packer *pk, char *err, size_t errlen)
{
    cache_t *c = av_daemon_state(d);
    char name[AV_DOMAIN_MAX + 1];
    av_cached_t e;
    if (name_arg(req, name, err, errlen) < 0)
        return -1;
    av_batch_flush(c->batch);
    int rc = cache_store_get(c->cache, name, &e);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read the cache");
        return -1;
    }
    if (rc == 1) {
        av_pack_ctl_reply_begin(pk, true, NULL, 2);
        av_pack_kv_str(pk, "name", name);
        av_pack_kv_bool(pk, "found", false);
        return 0;
    }
    uint64_t now = av_now_ms();
    av_pack_ctl_reply_begin(pk, true, NULL, 11);
    av_pack_kv_str(pk, "name", name);
    av_pack_kv_bool(pk, "found", true);
    av_pack_kv_bool(pk, "fresh", e.expires_ms > now);
    av_pack_kv_str(pk, "status", av_status_name(e.status));
    av_pack_kv_str(pk, "reason", e.reason);
    av_pack_kv_str(pk, "registry", e.registry);
    av_pack_kv_str(pk, "source", av_source_name(e.source));
    av_pack_kv_uint(pk, "at", e.at_ms);
    av_pack_kv_uint(pk, "expires", e.expires_ms);
    av_pack_kv_uint(pk, "ttl_left_s", e.expires_ms > now ? (e.expires_ms - now) / 1000 : 0);
    av_pack_kv_uint(pk, "latency_us", e.latency_us);
    return 0;
}

static int
cmd_purge(av_daemon_t *d, const msgpack_object *req, msgpack_packer *pk, char *err, size_t errlen)
{
    cache_t *c = av_daemon_state(d);
    char name[AV_DOMAIN_MAX + 1];
    bool all = false;
    av_obj_get_bool(req, "all", &all);
    if (!all && name_arg(req, name, err, errlen) < 0)
        return -1;
    av_batch_flush(c->batch); /* a purge must not be undone by a put already received */
    int64_t n = cache_store_purge(c->cache, all ? NULL : name);
    if (n < 0) {
        snprintf(err, errlen, "cannot purge the cache");
        return -1;
    }
    *c->purged += (uint64_t)n;
    av_log_notice("purged %s: %lld entries", all ? "everything" : name, (long long)n);
    av_pack_ctl_reply_begin(pk, true, NULL, 1);
    av_pack_kv_uint(pk, "removed", (uint64_t)n);
    return 0;
}

static void
pack_counts(msgpack_packer *pk, const timing_counts_t *t)
{
    msgpack_pack_map(pk, 6);
    av_pack_kv_uint(pk, "count", t->count);
    av_pack_kv_uint(pk, "errors", t->errors);
    av_pack_kv_uint(pk, "rate_limited", t->rate_limited);
    av_pack_kv_uint(pk, "p50_us", timing_quantile(t, 0.50));
    av_pack_kv_uint(pk, "p90_us", timing_quantile(t, 0.90));
    av_pack_kv_uint(pk, "p99_us", timing_quantile(t, 0.99));
}

typedef struct {
    msgpack_sbuffer body;
    msgpack_packer pk;
    uint32_t count;
    bool buckets;
} timing_list_t;

static void
collect_timing(void *arg, const timing_t *t)
{
    timing_list_t *l = arg;
    msgpack_pack_map(&l->pk, l->buckets ? 5 : 4);
    av_pack_kv_str(&l->pk, "registry", t->registry);
    av_pack_kv_uint(&l->pk, "last", t->last_ms);
    av_pack_str(&l->pk, "total");
    pack_counts(&l->pk, &t->total);
    av_pack_str(&l->pk, "recent");
    pack_counts(&l->pk, &t->recent);
    if (l->buckets) {
        /* The lifetime histogram as [upper bound in us, count] pairs,
         * empty buckets left out: for Prometheus exporters. */
        uint32_t used = 0;
        for (int b = 0; b < TIMING_BUCKETS; b++)
            used += t->total.hist[b] != 0;
        av_pack_str(&l->pk, "buckets");
        msgpack_pack_array(&l->pk, used);
        for (int b = 0; b < TIMING_BUCKETS; b++) {
            if (!t->total.hist[b])
                continue;
            msgpack_pack_array(&l->pk, 2);
            msgpack_pack_uint64(&l->pk, timing_bucket_upper_us(b));
            msgpack_pack_uint32(&l->pk, t->total.hist[b]);
        }
    }
    l->count++;
}

static int
cmd_stats(av_daemon_t *d, const msgpack_object *req, msgpack_packer *pk, char *err, size_t errlen)
{
    cache_t *c = av_daemon_state(d);
    timing_list_t l = { .count = 0 };
    av_obj_get_bool(req, "buckets", &l.buckets);
    av_batch_flush(c->batch);
    msgpack_sbuffer_init(&l.body);
    msgpack_packer_init(&l.pk, &l.body, msgpack_sbuffer_write);
    if (cache_store_timing(c->cache, av_now_ms(), collect_timing, &l) < 0) {
        msgpack_sbuffer_destroy(&l.body);
        snprintf(err, errlen, "cannot read the timing database");
        return -1;
    }
    av_pack_ctl_reply_begin(pk, true, NULL, 2);
    av_pack_kv_uint(pk, "entries", cache_store_entries(c->cache));
    av_pack_str(pk, "timing");
    msgpack_pack_array(pk, l.count);
    msgpack_sbuffer_write(pk->data, l.body.data, l.body.size);
    msgpack_sbuffer_destroy(&l.body);
    return 0;
}

static uint64_t
gauge_entries(av_daemon_t *d)
{
    return cache_store_entries(((cache_t *)av_daemon_state(d))->cache);
}

/* ---- lifecycle ---------------------------------------------------------- */

int
cache_init(av_daemon_t *d)
{
    const av_config_t *cfg = av_daemon_config(d);
    cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    av_daemon_set_state(d, c);
    c->stored = av_daemon_counter(d, "stored");
    c->store_failed = av_daemon_counter(d, "store_failed");
    c->expired = av_daemon_counter(d, "expired");
    c->purged = av_daemon_counter(d, "purged");
    if (!(c->cache = cache_store_open(d, &cfg->cache)))
        return -1;
    if (!(c->puts = av_daemon_bind(d, ZMQ_PULL, cfg->endpoints.cache_puts)))
        return -1;
    if (!(c->batch = av_batch_new(d, c->puts, AV_MSG_PUT, cfg->cache.batch_max, true, store_batch)))
        return -1;
    c->sweep_timer = av_daemon_every(d, (uint64_t)cfg->cache.sweep_interval_s * 1000, on_sweep, NULL);
    c->sync_timer = av_daemon_every(d, SYNC_INTERVAL_MS, on_sync, NULL);
    c->reader_timer = av_daemon_every(d, READER_CHECK_MS, on_reader_check, NULL);
    if (!c->sweep_timer || !c->sync_timer || !c->reader_timer)
        return -1;
    if (av_daemon_command(d, "get", cmd_get) < 0 || av_daemon_command(d, "purge", cmd_purge) < 0 ||
        av_daemon_command(d, "stats", cmd_stats) < 0 || av_daemon_gauge(d, "entries", gauge_entries) < 0)
        return -1;
    on_sweep(d, NULL);
    av_daemon_status_text(d, "caching");
    return 0;
}

/* What the store was opened with, the endpoint it binds, the batch and
 * sweep set up at start: kept until a restart (cache_restart_settings). */
const av_setting_t cache_restart_settings[] = {
    AV_SETTING("endpoints.cache_puts", endpoints.cache_puts, AV_SETTING_STR),
    AV_SETTING("cache.path", cache.path, AV_SETTING_STR),
    AV_SETTING("cache.map_size_mb", cache.map_size_mb, AV_SETTING_U32),
    AV_SETTING("cache.max_entries", cache.max_entries, AV_SETTING_U64),
    AV_SETTING("cache.sweep_interval_s", cache.sweep_interval_s, AV_SETTING_U32),
    AV_SETTING("cache.batch_max", cache.batch_max, AV_SETTING_U32),
    { NULL, 0, 0 },
};

/* Every setting of the cache applies only at start: nothing to adopt. */
int
cache_reload(av_daemon_t *d, const av_config_t *next)
{
    (void)d;
    (void)next;
    return 0;
}

int
cache_stop(av_daemon_t *d)
{
    cache_t *c = av_daemon_state(d);
    av_batch_finish(c->batch, 10 * av_daemon_config(d)->cache.batch_max);
    return 1;
}

void
cache_fini(av_daemon_t *d)
{
    cache_t *c = av_daemon_state(d);
    if (!c)
        return;
    av_batch_destroy(&c->batch);
    sd_event_source_disable_unref(c->sweep_timer);
    sd_event_source_disable_unref(c->sync_timer);
    sd_event_source_disable_unref(c->reader_timer);
    zsock_destroy(&c->puts);
    cache_store_close(&c->cache);
    free(c);
    av_daemon_set_state(d, NULL);
}

