/* Fresh cached answers read straight from the cache's LMDB (read-only, as
 * the dispatcher reads it, with the dispatcher's rules: the name
 * normalised and routed the same way, an entry used only before it
 * expires, never for `fresh`): a cached name costs no round trip through
 * intake and the dispatcher. Everything else goes to intake. */
#include "http.h"

#include <string.h>

/* How long to wait before opening the cache again when it is absent or was
 * let go of (availd-cache creates it, and rebuilds a damaged one). */
#define CACHE_RETRY_MS 1000

int
lookup_cached(http_t *h, const char *asked, av_answer_t *out, char name[AV_DOMAIN_MAX + 1], av_cached_t *e)
{
    const av_config_t *cfg = av_daemon_config(h->d);
    if (!cfg->http.cache_direct)
        return 0;
    uint64_t now_us = av_mono_us();
    if (!h->cache && now_us >= h->cache_retry_us) {
        h->cache = av_cache_open_reader(cfg->cache.path);
        h->cache_retry_us = now_us + CACHE_RETRY_MS * 1000;
    }
    if (!h->cache)
        return 0;
    const av_registry_cfg_t *registry;
    const char *reason;
    if (av_names_route(h->names, asked, strlen(asked), name, &registry, &reason) != AV_ROUTE_OK)
        return 0; /* invalid or unsupported: intake says why */
    int rc = av_cache_get(h->cache, name, e);
    if (rc < 0) {
        av_cache_close(&h->cache);
        h->cache_retry_us = now_us + CACHE_RETRY_MS * 1000;
    }
    if (rc != 0 || e->expires_ms <= av_now_ms())
        return 0;
    *out = (av_answer_t){
        .name = av_str(name),
        .query = av_str(asked),
        .status = e->status,
        .reason = av_str(e->reason),
        .registry = av_str(e->registry),
        .source = AV_SOURCE_CACHE,
        .at_ms = e->at_ms,
    };
    return 1;
}
