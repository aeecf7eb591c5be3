/* Scratch files for the unit tests: a private mkdtemp directory per test, and
 * small helpers to write an input there and read an output back. Tests write
 * their YAML inline so each input sits next to the assertion that uses it. */
#ifndef UNIT_FILES_H
#define UNIT_FILES_H

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Returns a new directory "$TMPDIR/availd-<tag>-XXXXXX" (malloc'd), or NULL. */
static inline char *
unit_tmpdir_new(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *dir;
    if (!base || !*base)
        base = "/tmp";
    if (asprintf(&dir, "%s/availd-%s-XXXXXX", base, tag) < 0)
        return NULL;
    if (!mkdtemp(dir)) {
        free(dir);
        return NULL;
    }
    return dir;
}

static inline int
unit_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes the directory and everything in it, then frees and clears *dir_p. */
static inline void
unit_tmpdir_remove(char **dir_p)
{
    if (!dir_p || !*dir_p)
        return;
    nftw(*dir_p, unit_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(*dir_p);
    *dir_p = NULL;
}

/* dir/name into buf; returns buf. */
static inline const char *
unit_path(char *buf, size_t size, const char *dir, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
    return buf;
}

/* Writes text to path, replacing it. Returns 0 or -1. */
static inline int
unit_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = strlen(text);
    int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

/* The whole file as a NUL-terminated malloc'd string; NULL when unreadable. */
static inline char *
unit_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (cap - len - 1 == 0) {
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* How many times needle occurs in haystack. */
static inline size_t
unit_count(const char *haystack, const char *needle)
{
    size_t n = 0, len = strlen(needle);
    for (const char *at = haystack; (at = strstr(at, needle)) != NULL; at += len)
        n++;
    return n;
}

#endif
