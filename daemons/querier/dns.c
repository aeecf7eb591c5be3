/* The DNS pre-check (c-ares on the querier's loop): before a check spends
 * the registry's quota, ask for the name's NS records. Whether a delegation
 * (NS records owned by the name, in the answer of a resolver or the
 * referral of the TLD's own servers) decides anything is the verdict's
 * business: it means registered; none proves nothing. */
#include "resolver.h"

#include <arpa/nameser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    resolver_t *resolver;
    char servers[1024];          /* the dns_servers it was made with */
} dns_precheck_t;

/* Does the reply hold NS records owned by name (answer or authority)? */
static bool
delegated(const unsigned char *buf, int len, const char *name)
{
    if (len < NS_HFIXEDSZ)
        return false;
    int qd = (buf[4] << 8) | buf[5], an = (buf[6] << 8) | buf[7], ns = (buf[8] << 8) | buf[9];
    if ((buf[3] & 0x0f) != 0) /* rcode: NXDOMAIN and errors say nothing */
        return false;
    const unsigned char *p = buf + NS_HFIXEDSZ, *end = buf + len;
    char *owner;
    long n;
    for (int i = 0; i < qd; i++) {
        if (ares_expand_name(p, buf, len, &owner, &n) != ARES_SUCCESS)
            return false;
        ares_free_string(owner);
        p += n + NS_QFIXEDSZ;
        if (p > end)
            return false;
    }
    for (int i = 0; i < an + ns; i++) {
        if (ares_expand_name(p, buf, len, &owner, &n) != ARES_SUCCESS)
            return false;
        p += n;
        if (end - p < NS_RRFIXEDSZ) {
            ares_free_string(owner);
            return false;
        }
        int type = (p[0] << 8) | p[1], rdlen = (p[8] << 8) | p[9];
        bool match = type == ns_t_ns && strcasecmp(owner, name) == 0;
        ares_free_string(owner);
        if (match)
            return true;
        p += NS_RRFIXEDSZ + rdlen;
        if (p > end)
            return false;
    }
    return false;
}

/* A lookup under way: c-ares cannot take one back, so its callback gets
 * this ticket, which an abort empties. */
typedef struct {
    query_t *x;                  /* NULL: the query went (answered, handed back) */
} lookup_t;

static void
on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    lookup_t *lookup = arg;
    query_t *x = lookup->x;
    free(lookup);
    if (!x)
        return;
    x->dns_lookup = NULL;
    /* A referral has no answer records: c-ares calls that ENODATA, and the
     * delegation is in the authority section of abuf. A resolver going
     * away (ARES_EDESTRUCTION) sends the check on to the registry. */
    evidence_t e = { .kind = EVIDENCE_DELEGATION, .dns = DNS_NO_ANSWER };
    if ((status == ARES_SUCCESS || status == ARES_ENODATA) && abuf)
        e.dns = delegated(abuf, alen, x->name) ? DNS_DELEGATED : DNS_NOT_DELEGATED;
    else if (status == ARES_ENOTFOUND)
        e.dns = DNS_NOT_DELEGATED; /* NXDOMAIN: the name is not in the zone */
    registry_evidence(x->registry, x, &e);
}

static void
precheck_start(registry_t *r, void *self, query_t *x)
{
    dns_precheck_t *p = self;
    lookup_t *lookup = malloc(sizeof *lookup);
    if (!lookup) {
        evidence_t e = { .kind = EVIDENCE_DELEGATION, .dns = DNS_NO_ANSWER };
        registry_evidence(r, x, &e);
        return;
    }
    lookup->x = x;
    x->dns_lookup = lookup;
    ares_query(resolver_channel(p->resolver), x->name, ns_c_in, ns_t_ns, on_answer, lookup);
    resolver_kick(p->resolver);
}

static void
precheck_abort(registry_t *r, void *self, query_t *x)
{
    (void)r;
    (void)self;
    lookup_t *lookup = x->dns_lookup;
    if (lookup)
        lookup->x = NULL; /* its answer, when it comes, is for no one */
    x->dns_lookup = NULL;
}

static void
servers_text(const av_strlist_t *servers, char *out, size_t size)
{
    out[0] = '\0';
    for (uint32_t i = 0; i < servers->count; i++)
        snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? "," : "", servers->items[i]);
}

static void *
precheck_open(registry_t *r, const av_registry_cfg_t *cfg)
{
    char who[AV_REGISTRY_MAX + 32];
    dns_precheck_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(who, sizeof who, "registry '%s'", cfg->name);
    if (!(p->resolver = resolver_get(r->q, &cfg->dns_servers, who))) {
        free(p);
        return NULL;
    }
    servers_text(&cfg->dns_servers, p->servers, sizeof p->servers);
    r->q->dns_delegated = querier_counter(r->q, "dns_delegated");
    r->q->dns_not_delegated = querier_counter(r->q, "dns_not_delegated");
    return p;
}

/* New dns_servers: the channel of those servers (lookups under way on the
 * old one still come back). */
static int
precheck_configure(registry_t *r, void *self, const av_registry_cfg_t *next)
{
    dns_precheck_t *p = self;
    char servers[sizeof p->servers], who[AV_REGISTRY_MAX + 32];
    servers_text(&next->dns_servers, servers, sizeof servers);
    if (strcmp(servers, p->servers) == 0)
        return 0;
    snprintf(who, sizeof who, "registry '%s'", next->name);
    resolver_t *fresh = resolver_get(r->q, &next->dns_servers, who);
    if (!fresh)
        return -1;
    resolver_put(&p->resolver);
    p->resolver = fresh;
    memcpy(p->servers, servers, sizeof servers);
    return 0;
}

/* The registry's queries asked in the DNS are aborted first (registry.c). */
static void
precheck_close(registry_t *r, void **self_p)
{
    (void)r;
    dns_precheck_t *p = *self_p;
    if (!p)
        return;
    *self_p = NULL;
    resolver_put(&p->resolver);
    free(p);
}

const protocol_t dns_precheck_protocol = {
    .name = "dns",
    .source = AV_SOURCE_DNS,
    .query_state_size = 0,
    .open = precheck_open,
    .configure = precheck_configure,
    .start = precheck_start,
    .abort = precheck_abort,
    .close = precheck_close,
};
