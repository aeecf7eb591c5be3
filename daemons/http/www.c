/* The search page: a fixed list of files read into memory at start and on
 * reload (no path from a request ever reaches the file system). */
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WWW_FILE_MAX (1024 * 1024)

static const struct {
    const char *path;    /* as requested */
    const char *file;
    const char *type;
} files[] = {
    { "/", "index.html", "text/html; charset=utf-8" },
    { "/index.html", "index.html", "text/html; charset=utf-8" },
    { "/app.js", "app.js", "text/javascript; charset=utf-8" },
    { "/style.css", "style.css", "text/css; charset=utf-8" },
};
#define N_FILES (sizeof files / sizeof files[0])

struct www {
    char *body[N_FILES];
    size_t len[N_FILES];
};

void
www_free(www_t **self_p)
{
    www_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    for (size_t i = 0; i < N_FILES; i++)
        free(self->body[i]);
    free(self);
    *self_p = NULL;
}

static int
read_file(const char *dir, const char *name, char **out, size_t *len, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1;
    char *buf = malloc(WWW_FILE_MAX);
    size_t n = buf ? fread(buf, 1, WWW_FILE_MAX, f) : 0;
    bool more = buf && fgetc(f) != EOF;
    fclose(f);
    if (!buf || more) {
        free(buf);
        return snprintf(err, errlen, "%s: larger than %d bytes", path, WWW_FILE_MAX), -1;
    }
    *out = realloc(buf, n ? n : 1);
    *len = n;
    return 0;
}

www_t *
www_load(const char *dir, char *err, size_t errlen)
{
    www_t *self = calloc(1, sizeof *self);
    if (!self)
        return snprintf(err, errlen, "out of memory"), NULL;
    for (size_t i = 0; i < N_FILES; i++) {
        if (read_file(dir, files[i].file, &self->body[i], &self->len[i], err, errlen) < 0) {
            www_free(&self);
            return NULL;
        }
    }
    return self;
}

const char *
www_get(const www_t *self, const char *path, size_t *len, const char **content_type)
{
    for (size_t i = 0; i < N_FILES; i++) {
        if (strcmp(files[i].path, path) == 0) {
            *len = self->len[i];
            *content_type = files[i].type;
            return self->body[i];
        }
    }
    return NULL;
}
