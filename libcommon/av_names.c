/* Name normalisation with libidn2 and suffix routing with a CZMQ hash. Pure
 * LDH input, nearly all of it, skips libidn2 (which allocates) and only
 * gets lower-cased; any other byte and every xn-- label go through it. */
#include "av_names.h"

#include <czmq.h>
#include <idn2.h>
#include <string.h>

struct av_names {
    zhashx_t *by_suffix;  /* "co.uk" -> const av_registry_cfg_t * (not owned) */
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
    return self;
}

void
av_names_destroy(av_names_t **self_p)
{
    av_names_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    zhashx_destroy(&self->by_suffix);
    free(self);
    *self_p = NULL;
}

av_route_t
av_names_route(const av_names_t *self, const char *input, size_t len, char *out,
               const av_registry_cfg_t **registry, const char **reason)
{
    *registry = NULL;
    *reason = NULL;
    if (av_name_normalize(input, len, out, reason) < 0)
        return AV_ROUTE_INVALID;
    /* Longest suffix first: every proper suffix, left to right. */
    const char *first_dot = strchr(out, '.');
    for (const char *suffix = first_dot; suffix; suffix = strchr(suffix + 1, '.')) {
        const av_registry_cfg_t *r = zhashx_lookup(self->by_suffix, suffix + 1);
        if (!r)
            continue;
        if (suffix != first_dot) {
            *reason = AV_INVALID_SUBDOMAIN;
            return AV_ROUTE_INVALID;
        }
        *registry = r;
        return AV_ROUTE_OK;
    }
    *reason = "unsupported_tld";
    return AV_ROUTE_UNSUPPORTED;
}
