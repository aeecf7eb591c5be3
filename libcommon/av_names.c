/* Name normalisation with libidn2 and suffix routing with a CZMQ hash. Pure
 * LDH input, nearly all of it, skips libidn2 (which allocates) and only
 * gets lower-cased; any other byte and every xn-- label go through it. */
#include "av_names.h"

#include "av_proto.h"

#include <czmq.h>
#include <idn2.h>
#include <libpsl.h>
#include <string.h>

struct av_names {
    zhashx_t *by_suffix;  /* "co.uk" -> const av_registry_cfg_t * (not owned) */
    const psl_ctx_t *psl; /* the Public Suffix List */
    psl_ctx_t *psl_loaded; /* ...when it was loaded from a file: freed with us */
};

static bool
is_ldh(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* Label rules on an A-label name: lengths, LDH, hyphens (RFC 1035, 5891). */
static int
check_labels(const char *name, const char **reason)
{
    size_t len = strlen(name);
    int labels = 0;
    if (len == 0)
        return *reason = AV_INVALID_EMPTY, -1;
    if (len > AV_DOMAIN_MAX)
        return *reason = AV_INVALID_TOO_LONG, -1;
    if (name[len - 1] == '.')
        return *reason = AV_INVALID_EMPTY_LABEL, -1; /* "a.com.." had one root dot taken */
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0)
            return *reason = AV_INVALID_EMPTY_LABEL, -1;
        if (n > AV_LABEL_MAX)
            return *reason = AV_INVALID_LABEL_LONG, -1;
        for (size_t i = 0; i < n; i++)
            if (!is_ldh((unsigned char)p[i]))
                return *reason = AV_INVALID_CHARACTER, -1;
        if (p[0] == '-' || p[n - 1] == '-')
            return *reason = AV_INVALID_HYPHEN, -1;
        /* "ab--" is reserved for ACE prefixes; only xn-- is one. */
        if (n >= 4 && p[2] == '-' && p[3] == '-' && !(p[0] == 'x' && p[1] == 'n'))
            return *reason = AV_INVALID_HYPHEN, -1;
        labels++;
        p += n;
        if (*p == '.')
            p++;
    }
    if (labels < 2)
        return *reason = AV_INVALID_SINGLE_LABEL, -1;
    return 0;
}

int
av_name_normalize(const char *input, size_t len, char *out, const char **reason)
{
    char buf[1024];
    /* Surrounding blanks are a frontend's slip, not part of a name. */
    while (len && (*input == ' ' || *input == '\t' || *input == '\r' || *input == '\n'))
        input++, len--;
    while (len && (input[len - 1] == ' ' || input[len - 1] == '\t' || input[len - 1] == '\r' ||
                   input[len - 1] == '\n'))
        len--;
    if (len && input[len - 1] == '.')
        len--; /* the root's dot */
    if (len == 0)
        return *reason = AV_INVALID_EMPTY, -1;
    if (len >= sizeof buf || len > 4 * AV_DOMAIN_MAX)
        return *reason = AV_INVALID_TOO_LONG, -1;
    if (memchr(input, '\0', len))
        return *reason = AV_INVALID_CHARACTER, -1;
    memcpy(buf, input, len);
    buf[len] = '\0';

    bool plain = true;
    for (size_t i = 0; i < len && plain; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 'A' && c <= 'Z')
            buf[i] = (char)(c + 32);
        else if (!(is_ldh(c) || c == '.'))
            plain = false;
    }
    if (plain && !strstr(buf, "xn--")) {
        if (len > AV_DOMAIN_MAX)
            return *reason = AV_INVALID_TOO_LONG, -1;
        if (check_labels(buf, reason) < 0)
            return -1;
        memcpy(out, buf, len + 1);
        return 0;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] < 0x80 && !(is_ldh((unsigned char)buf[i]) || buf[i] == '.' ||
                                              (buf[i] >= 'A' && buf[i] <= 'Z')))
            return *reason = AV_INVALID_CHARACTER, -1;
    char *ascii = NULL;
    int rc = idn2_to_ascii_8z(buf, &ascii, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK) {
        *reason = rc == IDN2_TOO_BIG_DOMAIN ? AV_INVALID_TOO_LONG
                  : rc == IDN2_TOO_BIG_LABEL || rc == IDN2_PUNYCODE_BIG_OUTPUT ? AV_INVALID_LABEL_LONG
                                             : AV_INVALID_IDNA;
        return -1;
    }
    size_t n = strlen(ascii);
    for (size_t i = 0; i < n; i++)
        if (ascii[i] >= 'A' && ascii[i] <= 'Z')
            ascii[i] = (char)(ascii[i] + 32);
    if (n > AV_DOMAIN_MAX) {
        idn2_free(ascii);
        return *reason = AV_INVALID_TOO_LONG, -1;
    }
    rc = check_labels(ascii, reason);
    if (rc == 0)
        memcpy(out, ascii, n + 1);
    idn2_free(ascii);
    return rc;
}

av_names_t *
av_names_new(const av_config_t *cfg)
{
    av_names_t *self = calloc(1, sizeof *self);
    if (!self || !(self->by_suffix = zhashx_new())) {
        free(self);
        return NULL;
    }
    for (uint32_t i = 0; i < cfg->n_registries; i++) {
        const av_registry_cfg_t *r = &cfg->registries[i];
        for (uint32_t t = 0; t < r->tlds.count; t++)
            zhashx_insert(self->by_suffix, r->tlds.items[t], (void *)r);
    }
    /* Debian's publicsuffix data when it is newer than libpsl's own copy.
     * Without either, routing falls back to the configured suffixes alone. */
    self->psl_loaded = psl_latest(NULL);
    self->psl = self->psl_loaded ? self->psl_loaded : psl_builtin();
    return self;
}

void
av_names_destroy(av_names_t **self_p)
{
    av_names_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    zhashx_destroy(&self->by_suffix);
    psl_free(self->psl_loaded);
    free(self);
    *self_p = NULL;
}

static const char *
next_label(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot ? dot + 1 : NULL;
}

/* The public suffix of name (a pointer into it): the longest suffix that is
 * a public suffix of the Public Suffix List, or has a registry of its own in
 * the config (za.org). *private: it is one of the list's private section
 * (github.io), which no registry serves. Unknown TLDs are their own suffix. */
static const char *
public_suffix(const av_names_t *self, const char *name, bool skip_private, bool *private)
{
    const char *tld = name;
    *private = false;
    for (const char *s = name; s; s = next_label(s)) {
        tld = s;
        if (zhashx_lookup(self->by_suffix, s))
            return s;
        if (!self->psl)
            continue;
        if (psl_is_public_suffix2(self->psl, s, PSL_TYPE_ICANN | PSL_TYPE_NO_STAR_RULE))
            return s;
        if (!skip_private && psl_is_public_suffix2(self->psl, s, PSL_TYPE_PRIVATE | PSL_TYPE_NO_STAR_RULE)) {
            *private = true;
            return s;
        }
    }
    return tld;
}

av_route_t
av_names_route(const av_names_t *self, const char *input, size_t len, char *out,
               const av_registry_cfg_t **registry, const char **reason)
{
    *registry = NULL;
    *reason = NULL;
    if (av_name_normalize(input, len, out, reason) < 0)
        return AV_ROUTE_INVALID;
    /* The common case first: a name one label under a suffix with a
     * registry, which is not itself a public suffix (one lookup in the
     * list instead of one per label). */
    const char *under = next_label(out);
    if (under && (*registry = zhashx_lookup(self->by_suffix, under)) && !zhashx_lookup(self->by_suffix, out) &&
        (!self->psl || !psl_is_public_suffix2(self->psl, out, PSL_TYPE_ANY | PSL_TYPE_NO_STAR_RULE)))
        return AV_ROUTE_OK;
    *registry = NULL;
    bool private;
    const char *suffix = public_suffix(self, out, false, &private);
    if (suffix == out && private) {
        /* github.io itself: a name of .io, like any other */
        suffix = public_suffix(self, next_label(out), true, &private);
    } else if (suffix == out) {
        *reason = AV_INVALID_PUBLIC_SUFFIX; /* co.uk: names are registered under it */
        return AV_ROUTE_INVALID;
    }
    const char *registrable = out;
    while (next_label(registrable) != suffix)
        registrable = next_label(registrable);
    if (registrable != out) {
        *reason = AV_INVALID_SUBDOMAIN; /* www.example.com: below a registrable name */
        return AV_ROUTE_INVALID;
    }
    /* The suffix's own registry, never its TLD's by guess: .io's registry
     * would read example.github.io as available, JISC and not Nominet runs
     * ac.uk. The table names every suffix a registry serves. */
    if ((*registry = zhashx_lookup(self->by_suffix, suffix)))
        return AV_ROUTE_OK;
    *reason = AV_REASON_UNSUPPORTED;
    return AV_ROUTE_UNSUPPORTED;
}
