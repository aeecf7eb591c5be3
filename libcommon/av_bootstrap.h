/* The IANA RDAP bootstrap for domain names (RFC 9224, dns.json): which RDAP
 * base URL serves a TLD. An RDAP registry without base_url takes its URL
 * from here, by the longest matching suffix of its first TLD. */
#ifndef AV_BOOTSTRAP_H
#define AV_BOOTSTRAP_H

#include <stddef.h>

/* 0 and the base URL (https preferred) in out; -1 with why in err when the
 * file cannot be read, is not a bootstrap, or has no entry for tld. */
int av_bootstrap_lookup(const char *path, const char *tld, char *out, size_t size, char *err, size_t errlen);

/* Checks that path is a well-formed bootstrap file: 0, or -1 with why.
 * *services gets the number of service entries. */
int av_bootstrap_check(const char *path, size_t *services, char *err, size_t errlen);

#endif
