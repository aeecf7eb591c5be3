/* Reading RFC 9224 bootstrap files with jansson. */
#include "av_bootstrap.h"

#include "av_config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BOOTSTRAP_MAX_BYTES (16 << 20)

struct av_bootstrap {
    json_t *root;
    json_t *by_tld;            /* lower-case TLD -> the service's preferred URL (a JSON string) */
};

/* A service's URL: https where it offers one. */
static const char *
preferred_url(json_t *urls)
{
    size_t k;
    json_t *url;
    const char *pick = NULL;
    json_array_foreach(urls, k, url) {
        const char *u = json_string_value(url);
        if (u && (!pick || strncmp(u, "https://", 8) == 0))
            pick = u;
    }
    return pick;
}

av_bootstrap_t *
av_bootstrap_load(const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    if (size < 0 || size > BOOTSTRAP_MAX_BYTES) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, BOOTSTRAP_MAX_BYTES);
        return NULL;
    }
    av_bootstrap_t *self = calloc(1, sizeof *self);
    if (!self || !(self->by_tld = json_object())) {
        snprintf(err, errlen, "%s: out of memory", path);
        av_bootstrap_free(&self);
        return NULL;
    }
    if (!(self->root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr))) {
        snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        av_bootstrap_free(&self);
        return NULL;
    }
    json_t *services = json_object_get(self->root, "services");
    if (!json_is_array(services)) {
        snprintf(err, errlen, "%s: not an RDAP bootstrap file (no \"services\" array)", path);
        av_bootstrap_free(&self);
        return NULL;
    }
    size_t i;
    json_t *entry;
    json_array_foreach(services, i, entry) {
        json_t *tlds = json_array_get(entry, 0), *urls = json_array_get(entry, 1);
        if (!json_is_array(entry) || json_array_size(entry) != 2 || !json_is_array(tlds) || !json_is_array(urls)) {
            snprintf(err, errlen, "%s: services[%zu] is not [[TLDs], [URLs]]", path, i);
            av_bootstrap_free(&self);
            return NULL;
        }
        const char *url = preferred_url(urls);
        size_t j;
        json_t *name;
        json_array_foreach(tlds, j, name) {
            char tld[256];
            const char *n = json_string_value(name);
            if (!url)
                continue; /* a service without an https URL serves nothing of ours */
            if (!n || strlen(n) >= sizeof tld) {
                snprintf(err, errlen, "%s: services[%zu] has a TLD that is not a string of at most 255 bytes", path, i);
                av_bootstrap_free(&self);
                return NULL;
            }
            for (size_t c = 0; n[c]; c++)
                tld[c] = (char)((n[c] >= 'A' && n[c] <= 'Z') ? n[c] + 32 : n[c]);
            tld[strlen(n)] = '\0';
            if (!av_tld_valid(tld)) {
                /* IANA's file holds A-labels only: anything else is a damaged file. */
                snprintf(err, errlen, "%s: services[%zu] names \"%s\", not a TLD (A-labels: letters, digits, '-')",
                         path, i, n);
                av_bootstrap_free(&self);
                return NULL;
            }
            json_object_set_new(self->by_tld, tld, json_string(url));
        }
    }
    return self;
}

void
av_bootstrap_free(av_bootstrap_t **self_p)
{
    av_bootstrap_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    json_decref(self->by_tld);
    json_decref(self->root);
    free(self);
    *self_p = NULL;
}

const char *
av_bootstrap_find(const av_bootstrap_t *self, const char *tld)
{
    /* Longest suffix: co.uk before uk. */
    for (const char *suffix = tld; suffix; suffix = strchr(suffix, '.') ? strchr(suffix, '.') + 1 : NULL) {
        const char *url = json_string_value(json_object_get(self->by_tld, suffix));
        if (url)
            return url;
    }
    return NULL;
}

void
av_bootstrap_each(const av_bootstrap_t *self, av_bootstrap_fn fn, void *arg)
{
    const char *tld;
    json_t *url;
    json_object_foreach(self->by_tld, tld, url)
        fn(arg, tld, json_string_value(url));
}

int
av_bootstrap_check(const char *path, size_t *services, char *err, size_t errlen)
{
    av_bootstrap_t *self = av_bootstrap_load(path, err, errlen);
    if (!self)
        return -1;
    *services = json_array_size(json_object_get(self->root, "services"));
    av_bootstrap_free(&self);
    return 0;
}

int
av_bootstrap_lookup(const char *path, const char *tld, char *out, size_t size, char *err, size_t errlen)
{
    av_bootstrap_t *self = av_bootstrap_load(path, err, errlen);
    if (!self)
        return -1;
    int rc = -1;
    const char *url = av_bootstrap_find(self, tld);
    if (!url)
        snprintf(err, errlen, "%s has no RDAP service for '%s'", path, tld);
    else if ((size_t)snprintf(out, size, "%s", url) >= size)
        snprintf(err, errlen, "%s: the URL for '%s' is too long", path, tld);
    else
        rc = 0;
    av_bootstrap_free(&self);
    return rc;
}
