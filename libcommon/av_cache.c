/* The cache's record layout and its read-only side. A reader keeps one read
 * transaction, reset between lookups and renewed on use, and adopts the
 * writer's map size when it grew (MDB_MAP_RESIZED). It maps only a file
 * that av_lmdb_check_file found whole, and lets go of it when it is cut
 * short, its meta pages damaged, or it is replaced (availd-cache rebuilt
 * it): a cache is never worth a SIGBUS. */
#include "av_cache.h"

#include "av_lmdb.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RECORD_VERSION 1
/* How often a reader looks at the file at its path: whether it is still
 * the one it has open (availd-cache moves a damaged one aside and starts a
 * new one). Every lookup checks the file it has open (cheaply: fstat and
 * the meta pages, av_lmdb_check_mapped), so one cut short or overwritten
 * is let go of before a read past its end. */
#define PATH_LOOK_INTERVAL_US 1000000

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
    char path[PATH_MAX];   /* the environment's directory */
    char data[PATH_MAX + 16];
    dev_t dev;             /* the data file it has open */
    ino_t ino;
    int fd;                /* LMDB's descriptor of it */
    uint64_t seen_bytes;   /* its size at the last lookup: it never shrinks */
    uint64_t looked_us;    /* when the path was last looked at */
};

/* The damaged file last warned about: a reader tried again every second
 * says so once per file, not once per try. */
static struct {
    dev_t dev;
    ino_t ino;
    off_t size;
    char why[256];
} warned;

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

/* 0 when the file at the reader's path is sound; -1 when it is absent,
 * damaged (said once per file) or cannot be checked now. st gets what stat
 * says of it. */
static int
check_file(const char *path, const char *data, struct stat *st)
{
    char why[256];
    if (stat(data, st) < 0)
        return -1;
    int rc = av_lmdb_check_file(data, why, sizeof why);
    if (rc == -2)
        av_log_debug("cache in %s not read for now: %s", path, why);
    if (rc == -1 && !(warned.dev == st->st_dev && warned.ino == st->st_ino && warned.size == st->st_size &&
                      strcmp(warned.why, why) == 0)) {
        av_log_warning("cache in %s is damaged (%s): not read until availd-cache has rebuilt it", path, why);
        warned.dev = st->st_dev;
        warned.ino = st->st_ino;
        warned.size = st->st_size;
        snprintf(warned.why, sizeof warned.why, "%s", why);
    }
    return rc == 0 ? 0 : -1;
}

av_cache_t *
av_cache_open_reader(const char *path)
{
    struct stat before, opened;
    av_cache_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->path, sizeof self->path, "%s", path);
    snprintf(self->data, sizeof self->data, "%s/data.mdb", path);
    self->fd = -1;
    /* Absent (the writer has not created it yet) or damaged: no cache for
     * now, every lookup a miss until the caller tries again. */
    if (check_file(path, self->data, &before) < 0) {
        free(self);
        return NULL;
    }
    if (av_lmdb_open(NULL, path, MDB_RDONLY, 0, 4, &self->env) < 0) {
        free(self);
        return NULL;
    }
    /* The file checked must be the file opened: one that availd-cache put
     * in its place meanwhile is looked at on the next try. */
    if (mdb_env_get_fd(self->env, &self->fd) != 0 || fstat(self->fd, &opened) < 0 ||
        opened.st_dev != before.st_dev || opened.st_ino != before.st_ino) {
        av_cache_close(&self);
        return NULL;
    }
    self->dev = opened.st_dev;
    self->ino = opened.st_ino;
    self->seen_bytes = (uint64_t)before.st_size;
    self->looked_us = av_mono_us();
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

/* Whether the file open can still be read (before LMDB reads any of it):
 * not cut short, its meta pages LMDB's; and, once a second, still the file
 * at the path. */
static bool
file_usable(av_cache_t *self)
{
    char why[256];
    struct stat st;
    if (av_lmdb_check_mapped(self->env, self->fd, &self->seen_bytes, why, sizeof why) != 0) {
        av_log_warning("cache in %s is damaged (%s): not read until availd-cache has rebuilt it", self->path, why);
        return false;
    }
    uint64_t now_us = av_mono_us();
    if (now_us - self->looked_us < PATH_LOOK_INTERVAL_US)
        return true;
    self->looked_us = now_us;
    if (stat(self->data, &st) < 0 || st.st_dev != self->dev || st.st_ino != self->ino) {
        av_log_info("cache in %s was replaced: reading the new one once it is whole", self->path);
        return false;
    }
    return true;
}

int
av_cache_get(av_cache_t *self, const char *name, av_cached_t *out)
{
    MDB_txn *txn;
    MDB_val key = { strlen(name), (void *)name }, val;
    if (key.mv_size == 0 || key.mv_size > AV_DOMAIN_MAX)
        return 1;
    if (!file_usable(self))
        return -1;
    if (read_txn(self, &txn) != 0)
        return -1;
    int rc = mdb_get(txn, self->answers, &key, &val);
    if (rc == 0)
        av_cache_record_decode(val.mv_data, val.mv_size, out);
    mdb_txn_reset(txn);
    return rc == 0 ? 0 : rc == MDB_NOTFOUND ? 1 : -1;
}
