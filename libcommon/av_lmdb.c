/* Opening LMDB environments. */
#include "av_lmdb.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

void
av_be64_put(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t
av_be64_get(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | in[i];
    return v;
}

int
av_lmdb_open(av_daemon_t *d, const char *path, unsigned flags, uint32_t map_mb, unsigned max_dbs, MDB_env **out)
{
    MDB_env *env = NULL;
    int rc;
    *out = NULL;
    if (!(flags & MDB_RDONLY) && mkdir(path, 0750) < 0 && errno != EEXIST) {
        av_log_err("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if ((rc = mdb_env_create(&env)) != 0)
        goto fail;
    if (max_dbs && (rc = mdb_env_set_maxdbs(env, max_dbs)) != 0)
        goto fail;
    if (map_mb && (rc = mdb_env_set_mapsize(env, (size_t)map_mb << 20)) != 0)
        goto fail;
    if ((rc = mdb_env_open(env, path, flags | MDB_NOTLS, 0660)) != 0)
        goto fail;
    if (d && !(flags & MDB_RDONLY)) {
        char file[4096];
        av_daemon_own(d, path);
        snprintf(file, sizeof file, "%s/data.mdb", path);
        av_daemon_own(d, file);
        snprintf(file, sizeof file, "%s/lock.mdb", path);
        av_daemon_own(d, file);
    }
    int dead = 0;
    mdb_reader_check(env, &dead); /* slots left by a killed reader */
    *out = env;
    return 0;
fail:
    av_log_err("cannot open database %s: %s", path, mdb_strerror(rc));
    if (env)
        mdb_env_close(env);
    return -1;
}
