/* Every TLD of the root zone gets a route. The registries of the file (the
 * tuned table) come first; a TLD they do not name goes to the RDAP service
 * the IANA bootstrap lists for it (one implicit registry per base URL), else
 * to the port-43 server whois-servers.txt names for it (one implicit registry
 * per server, read with the generic reading and a DNS pre-check; a server
 * that an explicit registry already asks adds the TLD to that registry),
 * else it has none (`unknown unsupported_tld`). Then every registry joins a
 * querier group. */
#include "av_bootstrap.h"
#include "av_config_internal.h"
#include "av_proto.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WHOIS_SERVERS_MAX_BYTES (4 << 20)
#define IMPLICIT_RDAP_GROUP "rdap"
#define IMPLICIT_WHOIS_GROUP "whois"

const char *
av_registry_origin_name(av_registry_origin_t origin)
{
    switch (origin) {
    case AV_ORIGIN_EXPLICIT: return "explicit";
    case AV_ORIGIN_BOOTSTRAP: return "bootstrap";
    case AV_ORIGIN_IANA_WHOIS: return "iana-whois";
    }
    return "?";
}

const char *
av_registry_proto_name(av_registry_proto_t protocol)
{
    switch (protocol) {
    case AV_PROTO_WHOIS: return "whois";
    case AV_PROTO_DAS: return "das";
    case AV_PROTO_RDAP: return "rdap";
    }
    return "?";
}

/* Conservative: a registry we know nothing of gets a few queries at a time,
 * paced, and a long pause when it says we ask too much. Whois servers are
 * asked more gently than RDAP services, which are built for machines. */
void
av_implicit_defaults(av_registry_cfg_t *r, av_registry_proto_t protocol)
{
    av_registry_defaults(r);
    r->protocol = protocol;
    r->timeout_ms = 10000;
    r->ttl_s[AV_STATUS_UNKNOWN] = 0; /* an unknown is asked again */
    if (protocol == AV_PROTO_RDAP) {
        r->concurrency = 4;
        r->connections = 2;
        r->queue = 500;
        r->rate_queries = 5;
        r->rate_period_s = 1;
        r->rate_burst = 5;
        r->backoff_s = 60;
    } else {
        r->concurrency = 2;
        r->queue = 200;
        r->rate_queries = 1;
        r->rate_period_s = 1;
        r->rate_burst = 2;
        r->backoff_s = 300;
        r->dns_precheck = true;
        r->reading = AV_READING_GENERIC;
    }
}

void
av_group_clear(av_group_cfg_t *g)
{
    free(g->name);
    for (uint32_t i = 0; i < g->named.count; i++)
        free(g->named.items[i]);
    free(g->named.items);
    free(g->members);
    memset(g, 0, sizeof *g);
}

int
av_config_add_group(av_config_t *c, av_group_cfg_t *g)
{
    av_group_cfg_t *grown = realloc(c->groups, (c->n_groups + 1) * sizeof *grown);
    if (!grown)
        return -1;
    c->groups = grown;
    c->groups[c->n_groups++] = *g;
    memset(g, 0, sizeof *g);
    return 0;
}

const av_group_cfg_t *
av_config_group(const av_config_t *self, const char *instance)
{
    size_t n = strcspn(instance, ".");
    unsigned long nth = 1;
    if (instance[n]) {
        char *end;
        errno = 0;
        nth = strtoul(instance + n + 1, &end, 10);
        if (errno || *end || nth < 2)
            return NULL;
    }
    for (uint32_t i = 0; i < self->n_groups; i++)
        if (strlen(self->groups[i].name) == n && memcmp(self->groups[i].name, instance, n) == 0)
            return nth <= self->groups[i].instances ? &self->groups[i] : NULL;
    return NULL;
}

/* ---- building ------------------------------------------------------------ */

typedef struct {
    av_config_t *c;
    zhashx_t *routed;          /* suffix -> 1 + registry index */
    zhashx_t *implicit;        /* base URL or whois host -> 1 + registry index */
    zhashx_t *names;           /* every registry's name (for unique implicit names) */
    zhashx_t *explicit_hosts;  /* lower-case host of an explicit registry -> 1 + its index */
    char *err;
    size_t errlen;
    int rc;
} builder_t;

static int
nomem(builder_t *b)
{
    snprintf(b->err, b->errlen, "%s: out of memory", b->c->path);
    b->rc = -1;
    return -1;
}

static int
add_string(av_strlist_t *list, const char *s)
{
    char **grown = realloc(list->items, (list->count + 1) * sizeof *grown);
    if (!grown)
        return -1;
    list->items = grown;
    if (!(list->items[list->count] = strdup(s)))
        return -1;
    list->count++;
    return 0;
}

static int
route(builder_t *b, const char *suffix, uint32_t registry)
{
    if (add_string(&b->c->registries[registry].tlds, suffix) < 0)
        return nomem(b);
    zhashx_insert(b->routed, suffix, (void *)(uintptr_t)(registry + 1));
    return 0;
}

/* A registry name from a host: "rdap-" + "rdap.nic.xyz" -> "rdap-rdap-nic-xyz",
 * unique among the registries. */
static int
implicit_name(builder_t *b, const char *prefix, const char *host, char *out, size_t size)
{
    char base[AV_REGISTRY_MAX - 4];
    size_t n = (size_t)snprintf(base, sizeof base, "%s-", prefix);
    for (const char *h = host; *h && n + 1 < sizeof base; h++) {
        char ch = *h >= 'A' && *h <= 'Z' ? (char)(*h + 32) : *h;
        base[n++] = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ? ch : '-';
    }
    base[n] = '\0';
    snprintf(out, size, "%s", base);
    for (int k = 2; zhashx_lookup(b->names, out); k++)
        snprintf(out, size, "%s-%d", base, k);
    zhashx_insert(b->names, out, (void *)1);
    return 0;
}

/* The host of an http(s) URL, into out. */
static void
url_host(const char *url, char *out, size_t size)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    size_t n = strcspn(h, ":/");
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), h);
}

/* The implicit registry of a base URL or a whois host, made when first met. */
static int
implicit_registry(builder_t *b, av_registry_origin_t origin, const char *where, uint32_t *index)
{
    uintptr_t known = (uintptr_t)zhashx_lookup(b->implicit, where);
    if (known) {
        *index = (uint32_t)(known - 1);
        return 0;
    }
    av_config_t *c = b->c;
    const av_registry_cfg_t *tmpl = origin == AV_ORIGIN_BOOTSTRAP ? &c->implicit_rdap : &c->implicit_whois;
    char name[AV_REGISTRY_MAX + 1], host[256];
    av_registry_cfg_t r = *tmpl;
    r.name = r.host = r.base_url = r.query = r.ca_file = NULL;
    memset(&r.tlds, 0, sizeof r.tlds);
    memset(&r.dns_servers, 0, sizeof r.dns_servers);
    memset(r.patterns, 0, sizeof r.patterns);
    r.origin = origin;
    if (origin == AV_ORIGIN_BOOTSTRAP) {
        url_host(where, host, sizeof host);
        implicit_name(b, "rdap", host, name, sizeof name);
        r.base_url = strdup(where);
    } else {
        implicit_name(b, "whois", where, name, sizeof name);
        r.host = strdup(where);
        r.port = 43;
    }
    r.name = strdup(name);
    r.query = strdup("%s\r\n");
    r.ca_file = tmpl->ca_file ? strdup(tmpl->ca_file) : NULL;
    bool ok = r.name && r.query && (r.base_url || r.host) && (!tmpl->ca_file || r.ca_file);
    for (uint32_t i = 0; ok && i < tmpl->dns_servers.count; i++)
        ok = add_string(&r.dns_servers, tmpl->dns_servers.items[i]) == 0;
    av_registry_cfg_t *grown = ok ? realloc(c->registries, (c->n_registries + 1) * sizeof *grown) : NULL;
    if (!grown) {
        av_registry_clear(&r);
        return nomem(b);
    }
    c->registries = grown;
    c->registries[c->n_registries] = r;
    *index = c->n_registries++;
    zhashx_insert(b->implicit, where, (void *)(uintptr_t)(*index + 1));
    return 0;
}

static void
route_by_bootstrap(void *arg, const char *tld, const char *base_url)
{
    builder_t *b = arg;
    uint32_t index;
    if (b->rc < 0 || zhashx_lookup(b->routed, tld))
        return;
    if (implicit_registry(b, AV_ORIGIN_BOOTSTRAP, base_url, &index) == 0)
        route(b, tld, index);
}

static void
lower(char *s)
{
    for (; *s; s++)
        *s = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
}

/* A whois server an explicit registry already asks: that registry's. */
static int
explicit_by_host(builder_t *b, const char *host)
{
    char key[256];
    snprintf(key, sizeof key, "%s", host);
    lower(key);
    uintptr_t index = (uintptr_t)zhashx_lookup(b->explicit_hosts, key);
    return index ? (int)(index - 1) : -1;
}

static int
route_by_whois_servers(builder_t *b)
{
    av_config_t *c = b->c;
    FILE *f = fopen(c->whois_servers, "r");
    if (!f) {
        snprintf(b->err, b->errlen, "%s: cannot read the whois server list %s: %s", c->implicit_at, c->whois_servers,
                 strerror(errno));
        return b->rc = -1;
    }
    char line[1024];
    long lineno = 0, bytes = 0;
    while (b->rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        bytes += (long)strlen(line);
        char suffix[256], server[256], extra[2];
        if (line[0] == '#' || line[strspn(line, " \t\r\n")] == '\0')
            continue;
        int n = sscanf(line, "%255s %255s %1s", suffix, server, extra);
        if (n != 2 || bytes > WHOIS_SERVERS_MAX_BYTES) {
            snprintf(b->err, b->errlen, "%s:%ld:1: want \"SUFFIX SERVER\" (or \"SUFFIX -\")", c->whois_servers,
                     lineno);
            b->rc = -1;
            break;
        }
        if (!av_tld_valid(suffix)) {
            snprintf(b->err, b->errlen, "%s:%ld:1: \"%s\" is not a suffix (lower-case A-labels: letters, digits, '-')",
                     c->whois_servers, lineno, suffix);
            b->rc = -1;
            break;
        }
        if (zhashx_lookup(b->routed, suffix))
            continue;
        if (strcmp(server, "-") == 0) {
            if (!strchr(suffix, '.') && add_string(&c->unrouted, suffix) < 0)
                nomem(b);
            continue;
        }
        int owner = explicit_by_host(b, server);
        uint32_t index;
        if (owner >= 0)
            route(b, suffix, (uint32_t)owner);
        else if (implicit_registry(b, AV_ORIGIN_IANA_WHOIS, server, &index) == 0)
            route(b, suffix, index);
    }
    fclose(f);
    return b->rc;
}

/* RDAP registries of the file without a base URL take the bootstrap's. */
static int
explicit_base_urls(builder_t *b, const av_bootstrap_t *bootstrap, const char *why)
{
    av_config_t *c = b->c;
    for (uint32_t i = 0; i < c->n_registries; i++) {
        av_registry_cfg_t *r = &c->registries[i];
        if (r->protocol != AV_PROTO_RDAP || r->base_url)
            continue;
        const char *url = bootstrap ? av_bootstrap_find(bootstrap, r->tlds.items[0]) : NULL;
        if (!url) {
            if (bootstrap)
                snprintf(b->err, b->errlen, "%s:%u:%u: registry '%s' (protocol rdap) has no base_url, and %s has "
                         "no RDAP service for '%s'", c->path, r->line, r->column, r->name, c->rdap_bootstrap,
                         r->tlds.items[0]);
            else
                snprintf(b->err, b->errlen, "%s:%u:%u: registry '%s' (protocol rdap) has no base_url, and %s",
                         c->path, r->line, r->column, r->name, why);
            return b->rc = -1;
        }
        if (!(r->base_url = strdup(url)))
            return nomem(b);
    }
    return 0;
}

static bool
needs_bootstrap(const av_config_t *c)
{
    if (c->implicit_registries)
        return true;
    for (uint32_t i = 0; i < c->n_registries; i++)
        if (c->registries[i].protocol == AV_PROTO_RDAP && !c->registries[i].base_url)
            return true;
    return false;
}

/* ---- querier groups -------------------------------------------------------- */

static int
group_index(const av_config_t *c, const char *name)
{
    for (uint32_t i = 0; i < c->n_groups; i++)
        if (strcmp(c->groups[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int
new_group(builder_t *b, const char *name, uint32_t instances)
{
    av_group_cfg_t g = { .instances = instances };
    if (!(g.name = strdup(name)) || av_config_add_group(b->c, &g) < 0) {
        av_group_clear(&g);
        return nomem(b);
    }
    return (int)b->c->n_groups - 1;
}

static int
add_member(builder_t *b, uint32_t group, uint32_t registry)
{
    av_group_cfg_t *g = &b->c->groups[group];
    uint32_t *grown = realloc(g->members, (g->n_members + 1) * sizeof *grown);
    if (!grown)
        return nomem(b);
    g->members = grown;
    g->members[g->n_members++] = registry;
    b->c->registries[registry].group = group;
    return 0;
}

static int
build_groups(builder_t *b)
{
    av_config_t *c = b->c;
    uint32_t declared = c->n_groups;
    uint8_t *placed = calloc(c->n_registries ? c->n_registries : 1, 1);
    if (!placed)
        return nomem(b);
    for (uint32_t g = 0; g < declared && b->rc == 0; g++) {
        for (uint32_t k = 0; k < c->groups[g].named.count && b->rc == 0; k++) {
            const char *name = c->groups[g].named.items[k];
            const av_registry_cfg_t *r = av_config_registry(c, name);
            if (!r) {
                snprintf(b->err, b->errlen, "%s:%u:%u: querier group '%s' names registry '%s', which is not "
                         "configured", c->path, c->groups[g].line, c->groups[g].column, c->groups[g].name, name);
                b->rc = -1;
            } else if (placed[r - c->registries]) {
                snprintf(b->err, b->errlen, "%s:%u:%u: registry '%s' is named by two querier groups ('%s' and '%s')",
                         c->path, c->groups[g].line, c->groups[g].column, name,
                         c->groups[r->group].name, c->groups[g].name);
                b->rc = -1;
            } else {
                placed[r - c->registries] = 1;
                add_member(b, g, (uint32_t)(r - c->registries));
            }
        }
    }
    for (uint32_t i = 0; i < c->n_registries && b->rc == 0; i++) {
        av_registry_cfg_t *r = &c->registries[i];
        if (placed[i])
            continue;
        int g = -1;
        for (uint32_t k = 0; k < declared && g < 0; k++)
            if (c->groups[k].serves & (1u << r->protocol))
                g = (int)k;
        if (g < 0 && r->origin != AV_ORIGIN_EXPLICIT) {
            const char *name = r->protocol == AV_PROTO_RDAP ? IMPLICIT_RDAP_GROUP : IMPLICIT_WHOIS_GROUP;
            if ((g = group_index(c, name)) < 0)
                g = new_group(b, name, 1);
        } else if (g < 0) {
            if ((g = group_index(c, r->name)) >= 0 && (uint32_t)g < declared) {
                snprintf(b->err, b->errlen, "%s:%u:%u: registry '%s' is in no querier group, and the group of "
                         "that name does not name it", c->path, r->line, r->column, r->name);
                b->rc = -1;
                break;
            }
            if (g < 0)
                g = new_group(b, r->name, r->queriers);
        }
        if (g >= 0)
            add_member(b, (uint32_t)g, i);
    }
    free(placed);
    return b->rc;
}

int
av_routes_build(av_config_t *c, char *err, size_t errlen)
{
    builder_t b = { .c = c, .err = err, .errlen = errlen };
    av_bootstrap_t *bootstrap = NULL;
    char why[AV_CONFIG_ERR_MAX] = "";
    if (!(b.routed = zhashx_new()) || !(b.implicit = zhashx_new()) || !(b.names = zhashx_new()) ||
        !(b.explicit_hosts = zhashx_new())) {
        nomem(&b);
        goto out;
    }
    for (uint32_t i = 0; i < c->n_registries; i++) {
        const av_registry_cfg_t *r = &c->registries[i];
        for (uint32_t k = 0; k < r->tlds.count; k++)
            zhashx_insert(b.routed, r->tlds.items[k], (void *)(uintptr_t)(i + 1));
        zhashx_insert(b.names, r->name, (void *)1);
        if (r->host) {
            char key[256];
            snprintf(key, sizeof key, "%s", r->host);
            lower(key);
            zhashx_insert(b.explicit_hosts, key, (void *)(uintptr_t)(i + 1)); /* the first one wins */
        }
    }
    if (needs_bootstrap(c) && !(bootstrap = av_bootstrap_load(c->rdap_bootstrap, why, sizeof why)) &&
        c->implicit_registries) {
        snprintf(err, errlen, "%s: the RDAP bootstrap: %s", c->implicit_at, why);
        b.rc = -1;
        goto out;
    }
    if (explicit_base_urls(&b, bootstrap, why) < 0)
        goto out;
    if (c->implicit_registries) {
        av_bootstrap_each(bootstrap, route_by_bootstrap, &b);
        if (b.rc < 0 || route_by_whois_servers(&b) < 0)
            goto out;
    }
    build_groups(&b);
out:
    av_bootstrap_free(&bootstrap);
    zhashx_destroy(&b.routed);
    zhashx_destroy(&b.implicit);
    zhashx_destroy(&b.names);
    zhashx_destroy(&b.explicit_hosts);
    return b.rc;
}
