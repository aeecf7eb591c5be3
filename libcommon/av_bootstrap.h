/* The IANA RDAP bootstrap for domain names (RFC 9224, dns.json): which RDAP
 * base URL serves a TLD. An RDAP registry without base_url takes its URL
 * from here, by the longest matching suffix of its first TLD; a TLD without
 * an explicit registry gets an implicit one per base URL (av_rootzone). */
#ifndef AV_BOOTSTRAP_H
#define AV_BOOTSTRAP_H

#include <stddef.h>

typedef struct av_bootstrap av_bootstrap_t;

/* Reads and checks the file; NULL with why in err. */
av_bootstrap_t *av_bootstrap_load(const char *path, char *err, size_t errlen);
void av_bootstrap_free(av_bootstrap_t **self_p);
/* The base URL (https preferred) of the longest suffix of tld listed, or
 * NULL. Valid while self is. */
const char *av_bootstrap_find(const av_bootstrap_t *self, const char *tld);
/* Calls fn for every TLD listed, with its service's base URL (https
 * preferred), in the file's order. */
typedef void (*av_bootstrap_fn)(void *arg, const char *tld, const char *base_url);
void av_bootstrap_each(const av_bootstrap_t *self, av_bootstrap_fn fn, void *arg);

/* 0 and the base URL in out; -1 with why in err when the file cannot be
 * read, is not a bootstrap, or has no entry for tld. */
int av_bootstrap_lookup(const char *path, const char *tld, char *out, size_t size, char *err, size_t errlen);

/* Checks that path is a well-formed bootstrap file: 0, or -1 with why.
 * *services gets the number of service entries. */
int av_bootstrap_check(const char *path, size_t *services, char *err, size_t errlen);

#endif
