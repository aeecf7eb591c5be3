/* From a name as a user typed it to the name availd asks about and the
 * registry to ask: IDNA2008 (UTS #46 non-transitional) to A-labels, lower
 * case, no trailing dot, LDH and length rules, and the registry by the
 * public suffix (so co.uk and uk can go to different ones; see av_names_route). */
#ifndef AV_NAMES_H
#define AV_NAMES_H

#include "av_config.h"

#include <stddef.h>

#define AV_DOMAIN_MAX 253  /* bytes of an A-label name without the final dot */
#define AV_LABEL_MAX 63

typedef struct av_names av_names_t;

/* Reasons an input is invalid (the `reason` of an `invalid` answer). */
#define AV_INVALID_EMPTY        "empty_name"
#define AV_INVALID_TOO_LONG     "name_too_long"
#define AV_INVALID_LABEL_LONG   "label_too_long"
#define AV_INVALID_EMPTY_LABEL  "empty_label"
#define AV_INVALID_CHARACTER    "bad_character"
#define AV_INVALID_HYPHEN       "bad_hyphen"
#define AV_INVALID_IDNA         "idna_error"
#define AV_INVALID_SINGLE_LABEL "single_label"
#define AV_INVALID_SUBDOMAIN    "subdomain"
#define AV_INVALID_PUBLIC_SUFFIX "public_suffix"

/* Normalises input (UTF-8, len bytes) into out (AV_DOMAIN_MAX + 1 bytes).
 * Returns 0, or -1 with *reason set to one of AV_INVALID_*. */
int av_name_normalize(const char *input, size_t len, char *out, const char **reason);

/* The routing table of a config: suffix -> registry. */
av_names_t *av_names_new(const av_config_t *cfg);
void av_names_destroy(av_names_t **self_p);

typedef enum {
    AV_ROUTE_OK = 0,        /* *registry set */
    AV_ROUTE_INVALID,       /* *reason: AV_INVALID_* */
    AV_ROUTE_UNSUPPORTED,   /* no configured registry serves the TLD */
} av_route_t;

/* Normalises input and finds its registry. A registrable name is exactly
 * one label under its public suffix (the Public Suffix List's, or a suffix
 * with a registry of its own): deeper names are `subdomain`, a public
 * suffix itself `public_suffix`. The registry is the one whose TLDs list
 * that very suffix; a suffix no registry lists is unsupported
 * (example.github.io, example.ac.uk without an entry for ac.uk). */
av_route_t av_names_route(const av_names_t *self, const char *input, size_t len, char *out,
                          const av_registry_cfg_t **registry, const char **reason);

#endif
