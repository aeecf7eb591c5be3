/* Reading RFC 9224 bootstrap files with jansson. */
#include "av_bootstrap.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define BOOTSTRAP_MAX_BYTES (16 << 20)

static json_t *
load(const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    json_t *services = json_object_get(root, "services");
    if (!json_is_array(services)) {
        snprintf(err, errlen, "%s: not an RDAP bootstrap file (no \"services\" array)", path);
        json_decref(root);
        return NULL;
    }
    size_t i;
    json_t *entry;
    json_array_foreach(services, i, entry) {
        if (!json_is_array(entry) || json_array_size(entry) != 2 || !json_is_array(json_array_get(entry, 0)) ||
            !json_is_array(json_array_get(entry, 1))) {
            snprintf(err, errlen, "%s: services[%zu] is not [[TLDs], [URLs]]", path, i);
            json_decref(root);
            return NULL;
        }
    }
    return root;
}

int
av_bootstrap_check(const char *path, size_t *services, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    if (size < 0 || size > BOOTSTRAP_MAX_BYTES) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, BOOTSTRAP_MAX_BYTES);
        return -1;
    }
    json_t *root = load(path, err, errlen);
    if (!root)
        return -1;
    *services = json_array_size(json_object_get(root, "services"));
    json_decref(root);
    return 0;
}

int
av_bootstrap_lookup(const char *path, const char *tld, char *out, size_t size, char *err, size_t errlen)
{
    json_t *root = load(path, err, errlen);
    if (!root)
        return -1;
    json_t *services = json_object_get(root, "services");
    const char *best = NULL;
    size_t best_len = 0;
    /* Longest suffix: co.uk before uk. */
    for (const char *suffix = tld; suffix; suffix = strchr(suffix, '.') ? strchr(suffix, '.') + 1 : NULL) {
        size_t i;
        json_t *entry;
        json_array_foreach(services, i, entry) {
            size_t j;
            json_t *name;
            json_array_foreach(json_array_get(entry, 0), j, name) {
                const char *n = json_string_value(name);
                if (!n || strcasecmp(n, suffix) != 0 || strlen(n) <= best_len)
                    continue;
                size_t k;
                json_t *url;
                const char *pick = NULL;
                json_array_foreach(json_array_get(entry, 1), k, url) {
                    const char *u = json_string_value(url);
                    if (u && (!pick || strncmp(u, "https://", 8) == 0))
                        pick = u;
                }
                if (pick) {
                    best = pick;
                    best_len = strlen(n);
                }
            }
        }
        if (best)
            break;
    }
    int rc = -1;
    if (!best)
        snprintf(err, errlen, "%s has no RDAP service for '%s'", path, tld);
    else if ((size_t)snprintf(out, size, "%s", best) >= size)
        snprintf(err, errlen, "%s: the URL for '%s' is too long", path, tld);
    else
        rc = 0;
    json_decref(root);
    return rc;
}
