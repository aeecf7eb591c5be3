/* The cache's record layout and its read-only side. A reader keeps one read
 * transaction, reset between lookups and renewed on use, and adopts the
 * writer's map size when it grew (MDB_MAP_RESIZED). */
#include "av_cache.h"

#include "av_lmdb.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RECORD_VERSION 1

typedef struct {
    uint8_t version;
    uint8_t status;
    uint8_t source;
    uint8_t registry_len;
    uint8_t reason_len;
    uint8_t pad[3];
    uint32_t latency_us;
    uint32_t pad2;
    uint64_t at_ms;
    uint64_t expires_ms;
} record_head_t;

_Static_assert(sizeof(record_head_t) == AV_CACHE_RECORD_HEAD, "the record header is 32 bytes on disk");

struct av_cache {
    MDB_env *env;
    MDB_dbi answers;
    MDB_txn *read_txn;     /* reset between lookups, renewed on use */
};

size_t
av_cache_record_encode(const av_cached_t *c, uint8_t buf[AV_CACHE_RECORD_MAX])
{
    size_t registry_len = strnlen(c->registry, AV_REGISTRY_MAX);
    size_t reason_len = strnlen(c->reason, AV_CACHE_REASON_MAX);
    record_head_t h = {
        .version = RECORD_VERSION,
        .status = (uint8_t)c->status,
        .source = (uint8_t)c->source,
        .registry_len = (uint8_t)registry_len,
        .reason_len = (uint8_t)reason_len,
        .latency_us = c->latency_us,
        .at_ms = c->at_ms,
        .expires_ms = c->expires_ms,
    };
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, c->registry, registry_len);
    memcpy(buf + sizeof h + registry_len, c->reason, reason_len);
    return sizeof h + registry_len + reason_len;
}

void
av_cache_record_decode(const void *data, size_t size, av_cached_t *out)
{
    record_head_t h;
    memset(out, 0, sizeof *out);
    out->status = AV_STATUS_UNKNOWN;
    if (size < sizeof h)
        return;
    memcpy(&h, data, sizeof h);
    if (h.version != RECORD_VERSION || sizeof h + h.registry_len + h.reason_len > size ||
        h.status >= AV_STATUS_COUNT || h.source >= AV_SOURCE_COUNT)
        return;
    const char *p = (const char *)data + sizeof h;
    out->status = (av_status_t)h.status;
    out->source = (av_source_t)h.source;
    out->at_ms = h.at_ms;
    out->expires_ms = h.expires_ms;
    out->latency_us = h.latency_us;
    av_str_copy(out->registry, sizeof out->registry, (av_str_t){ p, h.registry_len });
    av_str_copy(out->reason, sizeof out->reason, (av_str_t){ p + h.registry_len, h.reason_len });
}

av_cache_t *
av_cache_open_reader(const char *path)
{
    char data[4096];
    struct stat st;
    snprintf(data, sizeof data, "%s/data.mdb", path);
    if (stat(data, &st) < 0)
        return NULL; /* the writer has not created it yet */
    av_cache_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (av_lmdb_open(NULL, path, MDB_RDONLY, 0, 4, &self->env) < 0) {
        free(self);
        return NULL;
    }
    int rc = av_lmdb_open_dbis(self->env, false, (const char *const[]){ AV_CACHE_ANSWERS }, &self->answers, 1);
    if (rc != 0) {
        av_log_warning("cache in %s not readable yet: %s", path, mdb_strerror(rc));
        av_cache_close(&self);
    }
    return self;
}

void
av_cache_close(av_cache_t **self_p)
{
    av_cache_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    if (self->read_txn)
        mdb_txn_abort(self->read_txn);
    av_lmdb_close(&self->env);
    free(self);
    *self_p = NULL;
}

static int
read_txn(av_cache_t *self, MDB_txn **txn)
{
    int rc;
    if (!self->read_txn)
        rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &self->read_txn);
    else
        rc = mdb_txn_renew(self->read_txn);
    if (rc == MDB_MAP_RESIZED) {
        /* The writer grew the map: adopt its size and try again. */
        if (self->read_txn) {
            mdb_txn_abort(self->read_txn);
            self->read_txn = NULL;
        }
        mdb_env_set_mapsize(self->env, 0);
        rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &self->read_txn);
    }
    *txn = self->read_txn;
    return rc;
}

int
av_cache_get(av_cache_t *self, const char *name, av_cached_t *out)
{
    MDB_txn *txn;
    MDB_val key = { strlen(name), (void *)name }, val;
    if (key.mv_size == 0 || key.mv_size > AV_DOMAIN_MAX)
        return 1;
    if (read_txn(self, &txn) != 0)
        return -1;
    int rc = mdb_get(txn, self->answers, &key, &val);
    if (rc == 0)
        av_cache_record_decode(val.mv_data, val.mv_size, out);
    mdb_txn_reset(txn);
    return rc == 0 ? 0 : rc == MDB_NOTFOUND ? 1 : -1;
}
