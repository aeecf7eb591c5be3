/* Loads availd.yaml with libyaml's document API, walking the node tree with
 * tables of keys, so that every key has a type, a bound and a default in one
 * place, and every error can point at the line and column it is about. */
#include "av_config.h"

#include "av_config_internal.h"
#include "av_curve.h"
#include "av_patterns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef enum {
    K_STR,       /* char *            */
    K_PATH,      /* char *, relative to state_dir (or runtime_dir) later */
    K_U32,       /* uint32_t, min..max */
    K_U64,       /* uint64_t, min..max */
    K_BOOL,      /* bool */
    K_ENDPOINT,  /* char *, a ZeroMQ endpoint; "" allowed when min == 1 */
    K_CIDRS,     /* av_cidr_list_t */
    K_LOG,       /* av_log_target_t[AV_LOG_TARGETS_MAX] + n_log after it */
    K_STRLIST,   /* av_strlist_t */
    K_SECTION,   /* a nested map, parsed with `sub` at this offset */
    K_PROTOCOL,  /* av_registry_proto_t */
    K_SYNTAX,    /* bool: "posix" -> true, "pcre2" -> false */
    K_READING,   /* av_reading_t: "patterns" or "generic" */
    K_CUSTOM,    /* parsed by `custom` */
} kind_t;

typedef struct parser parser_t;
typedef struct table table_t;

typedef struct {
    const char *key;
    kind_t kind;
    size_t offset;
    uint64_t min, max;
    bool required;
    const table_t *sub;
    int (*custom)(parser_t *p, yaml_node_t *node, void *base);
} field_t;

struct table {
    const char *what;      /* for messages: "registry", "intake"... */
    const field_t *fields;
    size_t n_fields;
    long set_offset;       /* where a uint64_t bit set lives, or -1 */
};

struct parser {
    yaml_document_t *doc;
    const char *path;
    char *err;
    size_t errlen;
    av_config_t *cfg;
    int depth;             /* include depth */
};

#define OFF(type, field) offsetof(type, field)
#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static int
error_at(parser_t *p, const yaml_node_t *node, const char *fmt, ...)
{
    int n = snprintf(p->err, p->errlen, "%s:%zu:%zu: ", p->path,
                     node ? node->start_mark.line + 1 : 0,
                     node ? node->start_mark.column + 1 : 0);
    if (n < 0 || (size_t)n >= p->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *
scalar(const yaml_node_t *node)
{
    return node && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value : NULL;
}

static const char *
node_kind(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a map";
    default: return "nothing";
    }
}

/* ---- values ------------------------------------------------------------- */

static int
get_string(parser_t *p, yaml_node_t *node, const char *key, char **out)
{
    const char *s = scalar(node);
    if (!s)
        return error_at(p, node, "'%s' must be a string, not %s", key, node_kind(node));
    char *copy = strdup(s);
    if (!copy)
        return error_at(p, node, "out of memory");
    free(*out);
    *out = copy;
    return 0;
}

static int
get_uint(parser_t *p, yaml_node_t *node, const field_t *f, uint64_t *out)
{
    const char *s = scalar(node);
    if (!s)
        return error_at(p, node, "'%s' must be an unsigned integer, not %s", f->key, node_kind(node));
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return error_at(p, node, "'%s' must be an unsigned integer, not '%s'", f->key, s);
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno || v < f->min || v > f->max)
        return error_at(p, node, "'%s' must be between %llu and %llu, not %s", f->key,
                        (unsigned long long)f->min, (unsigned long long)f->max, s);
    *out = v;
    return 0;
}

static int
get_bool(parser_t *p, yaml_node_t *node, const char *key, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on" }, *const no[] = { "false", "no", "off" };
    const char *s = scalar(node);
    if (s) {
        for (size_t i = 0; i < 3; i++) {
            if (strcasecmp(s, yes[i]) == 0)
                return *out = true, 0;
            if (strcasecmp(s, no[i]) == 0)
                return *out = false, 0;
        }
    }
    return error_at(p, node, "'%s' must be true or false, not %s", key, s ? s : node_kind(node));
}

/* A string or a list of strings, each handed to fn. */
static int
each_string(parser_t *p, yaml_node_t *node, const char *key, size_t max,
            int (*fn)(parser_t *, yaml_node_t *, const char *, void *), void *arg)
{
    if (node->type == YAML_SCALAR_NODE) {
        if (!*scalar(node))
            return 0; /* `key:` with nothing: an empty list */
        return fn(p, node, scalar(node), arg);
    }
    if (node->type != YAML_SEQUENCE_NODE)
        return error_at(p, node, "'%s' must be a string or a list of strings", key);
    size_t n = node->data.sequence.items.top - node->data.sequence.items.start;
    if (n > max)
        return error_at(p, node, "'%s' has %zu entries, at most %zu allowed", key, n, max);
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(p->doc, *it);
        if (!scalar(item))
            return error_at(p, item, "'%s' entries must be strings, not %s", key, node_kind(item));
        if (fn(p, item, scalar(item), arg) < 0)
            return -1;
    }
    return 0;
}

static int
add_cidr(parser_t *p, yaml_node_t *node, const char *s, void *arg)
{
    av_cidr_list_t *list = arg;
    if (list->count >= AV_CIDRS_MAX)
        return error_at(p, node, "at most %d CIDRs", AV_CIDRS_MAX);
    if (!av_cidr_parse(s, &list->items[list->count]))
        return error_at(p, node, "bad CIDR '%s' (want ADDRESS/BITS, e.g. 10.0.0.0/8 or ::1/128)", s);
    list->count++;
    return 0;
}

static int
add_string(parser_t *p, yaml_node_t *node, const char *s, void *arg)
{
    av_strlist_t *list = arg;
    char **grown = realloc(list->items, (list->count + 1) * sizeof *grown);
    if (!grown)
        return error_at(p, node, "out of memory");
    list->items = grown;
    if (!(list->items[list->count] = strdup(s)))
        return error_at(p, node, "out of memory");
    list->count++;
    return 0;
}

typedef struct {
    av_log_target_t *targets;
    uint32_t *count;
} log_arg_t;

static int
add_log(parser_t *p, yaml_node_t *node, const char *s, void *arg)
{
    log_arg_t *la = arg;
    if (*la->count >= AV_LOG_TARGETS_MAX)
        return error_at(p, node, "at most %d log targets", AV_LOG_TARGETS_MAX);
    av_log_target_t *t = &la->targets[*la->count];
    if (strcmp(s, "stderr") == 0)
        t->kind = AV_LOG_STDERR;
    else if (strcmp(s, "syslog") == 0)
        t->kind = AV_LOG_SYSLOG;
    else if (strcmp(s, "journald") == 0)
        t->kind = AV_LOG_JOURNALD;
    else if (s[0] == '/') {
        t->kind = AV_LOG_FILE;
        if (!(t->path = strdup(s)))
            return error_at(p, node, "out of memory");
    } else
        return error_at(p, node, "bad log target '%s' (stderr, syslog, journald or an absolute file path)", s);
    (*la->count)++;
    return 0;
}

/* ---- tables ------------------------------------------------------------- */

static int parse_map(parser_t *p, yaml_node_t *node, void *base, const table_t *const *tables, size_t n_tables);

/* ---- endpoints as maps, and CURVE (av_curve.c checks the files) --------- */

static int
parse_endpoint_map(parser_t *p, yaml_node_t *node, const char *key, char **out, bool *insecure, yaml_node_t **at)
{
    bool have = false;
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(p->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(p->doc, pair->value);
        const char *ks = scalar(k);
        if (ks && strcmp(ks, "endpoint") == 0) {
            if (get_string(p, v, "endpoint", out) < 0)
                return -1;
            *at = v;
            have = true;
        } else if (ks && strcmp(ks, "insecure") == 0) {
            if (get_bool(p, v, "insecure", insecure) < 0)
                return -1;
        } else {
            return error_at(p, k, "unknown key '%s' in endpoint '%s' (endpoint, insecure)", ks ? ks : "?", key);
        }
    }
    if (!have)
        return error_at(p, node, "endpoint '%s' as a map needs 'endpoint: ipc://PATH or tcp://HOST:PORT'", key);
    return 0;
}

static int
note_endpoint(parser_t *p, yaml_node_t *at, const char *endpoint, bool insecure)
{
    av_config_t *c = p->cfg;
    if (c->n_endpoint_notes >= 256)
        return error_at(p, at, "more than 256 endpoints");
    av_endpoint_note_t *grown = realloc(c->endpoint_notes, (c->n_endpoint_notes + 1) * sizeof *grown);
    if (!grown)
        return error_at(p, at, "out of memory");
    c->endpoint_notes = grown;
    av_endpoint_note_t *n = &grown[c->n_endpoint_notes];
    n->insecure = insecure;
    n->endpoint = strdup(endpoint);
    if (asprintf(&n->at, "%s:%zu:%zu", p->path, at->start_mark.line + 1, at->start_mark.column + 1) < 0)
        n->at = NULL;
    if (!n->endpoint || !n->at) {
        free(n->endpoint);
        free(n->at);
        return error_at(p, at, "out of memory");
    }
    c->n_endpoint_notes++;
    return 0;
}

/* A key file or directory named in curve:, relative to the file that names it. */
static int
get_curve_path(parser_t *p, yaml_node_t *node, const char *key, char **out)
{
    if (get_string(p, node, key, out) < 0)
        return -1;
    if (!**out)
        return error_at(p, node, "'%s' must not be empty", key);
    if ((*out)[0] != '/') {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", p->path);
        char *full;
        if (asprintf(&full, "%s/%s", dirname(dir), *out) < 0)
            return error_at(p, node, "out of memory");
        free(*out);
        *out = full;
    }
    char why[256];
    if (av_curve_path_check(key, *out, why, sizeof why) < 0)
        return error_at(p, node, "%s", why);
    return 0;
}

static int
add_runs(parser_t *p, yaml_node_t *node, const char *s, void *arg)
{
    uint32_t *runs = arg;
    for (int i = 0; i < AV_RUNS_KINDS; i++)
        if (strcmp(s, av_daemon_kind_name((av_daemon_kind_t)i)) == 0)
            return *runs |= 1u << i, 0;
    return error_at(p, node, "'runs' names daemons (intake, dispatcher, cache, errors, querier), not '%s'", s);
}

static int
parse_runs(parser_t *p, yaml_node_t *node, void *base)
{
    (void)base;
    p->cfg->runs = 0;
    if (each_string(p, node, "runs", AV_RUNS_KINDS, add_runs, &p->cfg->runs) < 0)
        return -1;
    if (!p->cfg->runs)
        return error_at(p, node, "'runs' names no daemon (leave it out to run every one)");
    return 0;
}

static int
parse_curve(parser_t *p, yaml_node_t *node, void *base)
{
    (void)base;
    av_curve_cfg_t *cv = &p->cfg->curve;
    if (node->type != YAML_MAPPING_NODE)
        return error_at(p, node, "'curve' must be a map (secret_key, server_key, allow), not %s", node_kind(node));
    free(cv->at);
    if (asprintf(&cv->at, "%s:%zu:%zu", p->path, node->start_mark.line + 1, node->start_mark.column + 1) < 0) {
        cv->at = NULL;
        return error_at(p, node, "out of memory");
    }
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(p->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(p->doc, pair->value);
        const char *ks = scalar(k);
        if (ks && strcmp(ks, "secret_key") == 0) {
            if (get_curve_path(p, v, "secret_key", &cv->secret_key) < 0)
                return -1;
        } else if (ks && strcmp(ks, "server_key") == 0) {
            if (get_curve_path(p, v, "server_key", &cv->server_key) < 0)
                return -1;
        } else if (ks && strcmp(ks, "allow") == 0) {
            if (v->type != YAML_MAPPING_NODE)
                return error_at(p, v, "'allow' must be a map of directories (frontends, queriers, monitoring, "
                                      "control, core), not %s", node_kind(v));
            for (yaml_node_pair_t *ap = v->data.mapping.pairs.start; ap < v->data.mapping.pairs.top; ap++) {
                yaml_node_t *ak = yaml_document_get_node(p->doc, ap->key);
                yaml_node_t *av = yaml_document_get_node(p->doc, ap->value);
                const char *aks = scalar(ak);
                int kind = -1;
                for (int i = 0; i < AV_PEERS_KINDS && aks; i++)
                    if (strcmp(aks, av_peers_name((av_peers_t)i)) == 0)
                        kind = i;
                if (kind < 0)
                    return error_at(p, ak, "unknown key '%s' in curve.allow (frontends, queriers, monitoring, "
                                           "control, core)", aks ? aks : "?");
                if (get_curve_path(p, av, "allow directory", &cv->allow[kind]) < 0)
                    return -1;
            }
        } else {
            return error_at(p, k, "unknown key '%s' in curve (secret_key, server_key, allow)", ks ? ks : "?");
        }
    }
    if (!cv->secret_key)
        return error_at(p, node, "'curve' needs 'secret_key: FILE' (made by availctl keys new NAME)");
    return 0;
}

static void
free_log(av_log_target_t *targets, uint32_t *count)
{
    for (uint32_t i = 0; i < *count; i++) {
        free(targets[i].path);
        targets[i].path = NULL;
    }
    *count = 0;
}

static void
free_strlist(av_strlist_t *list)
{
    for (uint32_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static int
parse_field(parser_t *p, const field_t *f, yaml_node_t *val, char *base)
{
    void *dst = base + f->offset;
    uint64_t u;
    switch (f->kind) {
    case K_STR:
    case K_PATH:
        return get_string(p, val, f->key, (char **)dst);
    case K_ENDPOINT: {
        char why[128];
        bool insecure = false;
        yaml_node_t *at = val;
        if (val->type == YAML_MAPPING_NODE) {
            /* {endpoint: tcp://..., insecure: true}: plain tcp beyond this host, on purpose */
            if (parse_endpoint_map(p, val, f->key, (char **)dst, &insecure, &at) < 0)
                return -1;
        } else if (get_string(p, val, f->key, (char **)dst) < 0)
            return -1;
        if (note_endpoint(p, at, *(char **)dst, insecure) < 0)
            return -1;
        const char *s = *(char **)dst;
        if (!*s && f->min == 1)
            return 0; /* optional endpoint, disabled */
        if (!av_endpoint_valid(s, why, sizeof why))
            return error_at(p, val, "bad endpoint '%s' for '%s': %s", s, f->key, why);
        /* min 2: a template with the daemon's name in place of one %s */
        const char *pct = strchr(s, '%');
        if (f->min == 2 && (!pct || pct[1] != 's' || strchr(pct + 2, '%')))
            return error_at(p, val, "'%s' must hold exactly one %%s (the daemon's name), as in "
                                    "ipc://control-%%s.sock", f->key);
        return 0;
    }
    case K_U32:
        if (get_uint(p, val, f, &u) < 0)
            return -1;
        *(uint32_t *)dst = (uint32_t)u;
        return 0;
    case K_U64:
        return get_uint(p, val, f, (uint64_t *)dst);
    case K_BOOL:
        return get_bool(p, val, f->key, (bool *)dst);
    case K_CIDRS:
        ((av_cidr_list_t *)dst)->count = 0;
        return each_string(p, val, f->key, AV_CIDRS_MAX, add_cidr, dst);
    case K_LOG: {
        /* Only process settings have a log key: the count is their n_log. */
        log_arg_t la = { dst, (uint32_t *)(base + OFF(av_process_cfg_t, n_log)) };
        free_log(la.targets, la.count);
        if (each_string(p, val, f->key, AV_LOG_TARGETS_MAX, add_log, &la) < 0)
            return -1;
        if (*la.count == 0)
            return error_at(p, val, "'log' needs at least one target (stderr, syslog, journald or a file)");
        return 0;
    }
    case K_STRLIST:
        free_strlist(dst);
        return each_string(p, val, f->key, f->max ? f->max : 1024, add_string, dst);
    case K_SECTION: {
        if (val->type != YAML_MAPPING_NODE)
            return error_at(p, val, "'%s' must be a map, not %s", f->key, node_kind(val));
        const table_t *sub = f->sub;
        return parse_map(p, val, dst, &sub, 1);
    }
    case K_PROTOCOL: {
        const char *s = scalar(val);
        av_registry_proto_t *proto = dst;
        if (s && strcmp(s, "whois") == 0)
            *proto = AV_PROTO_WHOIS;
        else if (s && strcmp(s, "das") == 0)
            *proto = AV_PROTO_DAS;
        else if (s && strcmp(s, "rdap") == 0)
            *proto = AV_PROTO_RDAP;
        else
            return error_at(p, val, "'protocol' must be whois, das or rdap, not %s", s ? s : node_kind(val));
        return 0;
    }
    case K_SYNTAX: {
        const char *s = scalar(val);
        if (s && strcmp(s, "pcre2") == 0)
            *(bool *)dst = false;
        else if (s && strcmp(s, "posix") == 0)
            *(bool *)dst = true;
        else
            return error_at(p, val, "'%s' must be pcre2 or posix, not %s", f->key, s ? s : node_kind(val));
        return 0;
    }
    case K_READING: {
        const char *s = scalar(val);
        if (s && strcmp(s, "patterns") == 0)
            *(av_reading_t *)dst = AV_READING_PATTERNS;
        else if (s && strcmp(s, "generic") == 0)
            *(av_reading_t *)dst = AV_READING_GENERIC;
        else
            return error_at(p, val, "'%s' must be patterns or generic, not %s", f->key, s ? s : node_kind(val));
        return 0;
    }
    case K_CUSTOM:
        return f->custom(p, val, base);
    }
    return error_at(p, val, "internal: bad field kind");
}

/* av_config_load_partial: keep the first error skipped, go on. */
static void
skip_error(parser_t *p)
{
    if (!p->cfg->skipped)
        p->cfg->skipped = strdup(p->err);
    p->err[0] = '\0';
}

static int
parse_map(parser_t *p, yaml_node_t *node, void *base, const table_t *const *tables, size_t n_tables)
{
    uint64_t seen[4] = { 0 }; /* per table, bit per field */
    if (node->type != YAML_MAPPING_NODE)
        return error_at(p, node, "expected a map, not %s", node_kind(node));
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(p->doc, pair->key);
        yaml_node_t *val = yaml_document_get_node(p->doc, pair->value);
        const char *k = scalar(key);
        if (!k)
            return error_at(p, key, "keys must be strings");
        bool found = false;
        for (size_t t = 0; t < n_tables && !found; t++) {
            const table_t *tab = tables[t];
            for (size_t i = 0; i < tab->n_fields; i++) {
                if (strcmp(tab->fields[i].key, k) != 0)
                    continue;
                /* YAML keys are unique; a second one would silently win,
                 * while messages point at the first. */
                if (seen[t] & (1ull << i))
                    return error_at(p, key, "key '%s' given twice in %s", k, tab->what);
                if (parse_field(p, &tab->fields[i], val, base) < 0) {
                    if (!p->cfg->partial)
                        return -1;
                    skip_error(p); /* partial: the field keeps its default */
                    found = true;
                    break;
                }
                seen[t] |= 1ull << i;
                if (tab->set_offset >= 0)
                    *(uint64_t *)((char *)base + tab->set_offset) |= 1ull << i;
                found = true;
                break;
            }
        }
        if (!found) {
            error_at(p, key, "unknown key '%s' in %s", k, tables[0]->what);
            if (!p->cfg->partial)
                return -1;
            skip_error(p);
        }
    }
    for (size_t t = 0; t < n_tables; t++)
        for (size_t i = 0; i < tables[t]->n_fields; i++)
            if (tables[t]->fields[i].required && !(seen[t] & (1ull << i)))
                return error_at(p, node, "missing required key '%s' in %s", tables[t]->fields[i].key,
                                tables[t]->what);
    return 0;
}

/* ---- the schema --------------------------------------------------------- */

#define U32(k, t, f, lo, hi) { k, K_U32, OFF(t, f), lo, hi, false, NULL, NULL }
#define U64(k, t, f, lo, hi) { k, K_U64, OFF(t, f), lo, hi, false, NULL, NULL }

static const field_t process_fields[] = {
    { "log", K_LOG, OFF(av_process_cfg_t, log), 0, 0, false, NULL, NULL },
    U32("log_level", av_process_cfg_t, log_level, 0, 4),
    { "daemon_name", K_STR, OFF(av_process_cfg_t, daemon_name), 0, 0, false, NULL, NULL },
    { "pid_file", K_PATH, OFF(av_process_cfg_t, pid_file), 0, 0, false, NULL, NULL },
    { "daemonize", K_BOOL, OFF(av_process_cfg_t, daemonize), 0, 0, false, NULL, NULL },
    { "user", K_STR, OFF(av_process_cfg_t, user), 0, 0, false, NULL, NULL },
    { "group", K_STR, OFF(av_process_cfg_t, group), 0, 0, false, NULL, NULL },
    { "cidr_allow", K_CIDRS, OFF(av_process_cfg_t, cidr_allow), 0, 0, false, NULL, NULL },
    { "cidr_deny", K_CIDRS, OFF(av_process_cfg_t, cidr_deny), 0, 0, false, NULL, NULL },
    U64("max_requests", av_process_cfg_t, max_requests, 0, UINT64_MAX),
    U32("drain_ms", av_process_cfg_t, drain_ms, 0, 600000),
    { "control", K_ENDPOINT, OFF(av_process_cfg_t, control), 0, 0, false, NULL, NULL },
};

/* A daemon's block holds its own keys and the process keys; the process
 * table sits at the start of every daemon struct. */
#define PROCESS_TABLE(name, offset)                                                              \
    static const table_t name = { "process settings", process_fields, NFIELDS(process_fields),   \
                                  (long)(offset) + (long)OFF(av_process_cfg_t, set) }
PROCESS_TABLE(process_table, 0);

static const field_t endpoint_fields[] = {
    { "intake_pull", K_ENDPOINT, OFF(av_endpoints_cfg_t, intake_pull), 0, 0, false, NULL, NULL },
    { "intake_router", K_ENDPOINT, OFF(av_endpoints_cfg_t, intake_router), 0, 0, false, NULL, NULL },
    { "intake_results", K_ENDPOINT, OFF(av_endpoints_cfg_t, intake_results), 0, 0, false, NULL, NULL },
    { "intake_gateway", K_ENDPOINT, OFF(av_endpoints_cfg_t, intake_gateway), 1, 0, false, NULL, NULL },
    { "dispatcher", K_ENDPOINT, OFF(av_endpoints_cfg_t, dispatcher), 0, 0, false, NULL, NULL },
    { "dispatcher_workers", K_ENDPOINT, OFF(av_endpoints_cfg_t, dispatcher_workers), 0, 0, false, NULL, NULL },
    { "cache_puts", K_ENDPOINT, OFF(av_endpoints_cfg_t, cache_puts), 0, 0, false, NULL, NULL },
    { "errors_events", K_ENDPOINT, OFF(av_endpoints_cfg_t, errors_events), 0, 0, false, NULL, NULL },
    { "errors_publish", K_ENDPOINT, OFF(av_endpoints_cfg_t, errors_publish), 0, 0, false, NULL, NULL },
    { "control", K_ENDPOINT, OFF(av_endpoints_cfg_t, control), 2, 0, false, NULL, NULL },
};
static const table_t endpoints_table = { "endpoints", endpoint_fields, NFIELDS(endpoint_fields), -1 };

static const field_t intake_fields[] = {
    U32("deadline_ms", av_intake_cfg_t, deadline_ms, 1, 3600000),
    U32("max_inflight", av_intake_cfg_t, max_inflight, 1, 10000000),
    U32("gateway_clients", av_intake_cfg_t, gateway_clients, 1, 100000),
    U32("gateway_timeout_ms", av_intake_cfg_t, gateway_timeout_ms, 1, 600000),
    { "journal", K_PATH, OFF(av_intake_cfg_t, journal), 0, 0, false, NULL, NULL },
    U32("journal_map_mb", av_intake_cfg_t, journal_map_mb, 1, 1 << 20),
    { "journal_sync", K_BOOL, OFF(av_intake_cfg_t, journal_sync), 0, 0, false, NULL, NULL },
    U32("resend_ms", av_intake_cfg_t, resend_ms, 100, 3600000),
};
static const table_t intake_table = { "intake", intake_fields, NFIELDS(intake_fields), -1 };

static const field_t dispatcher_fields[] = {
    U32("heartbeat_ms", av_dispatcher_cfg_t, heartbeat_ms, 10, 60000),
    U32("heartbeat_misses", av_dispatcher_cfg_t, heartbeat_misses, 2, 100),
    U32("max_inflight", av_dispatcher_cfg_t, max_inflight, 1, 10000000),
    U32("max_inflight_per_registry", av_dispatcher_cfg_t, max_inflight_per_registry, 1, 10000000),
    U32("max_attempts", av_dispatcher_cfg_t, max_attempts, 1, 100),
    U32("overdue_margin_ms", av_dispatcher_cfg_t, overdue_margin_ms, 0, 600000),
    U32("querier_grace_ms", av_dispatcher_cfg_t, querier_grace_ms, 0, 600000),
};
static const table_t dispatcher_table = { "dispatcher", dispatcher_fields, NFIELDS(dispatcher_fields), -1 };

/* The querier block holds process settings only: its heartbeat is the
 * dispatcher's, so the two cannot disagree. */
static int
parse_source_address(parser_t *p, yaml_node_t *node, void *base)
{
    char **dst = &((av_querier_cfg_t *)base)->source_address;
    if (get_string(p, node, "source_address", dst) < 0)
        return -1;
    struct in6_addr a;
    if (**dst && inet_pton(AF_INET, *dst, &a) != 1 && inet_pton(AF_INET6, *dst, &a) != 1)
        return error_at(p, node, "'source_address' must be an IPv4 or IPv6 address, not '%s'", *dst);
    return 0;
}

static const field_t querier_fields[] = {
    { "source_address", K_CUSTOM, 0, 0, 0, false, NULL, parse_source_address },
};
static const table_t querier_table = { "querier", querier_fields, NFIELDS(querier_fields), -1 };

static const field_t cache_fields[] = {
    { "path", K_PATH, OFF(av_cache_cfg_t, path), 0, 0, false, NULL, NULL },
    U32("map_size_mb", av_cache_cfg_t, map_size_mb, 1, 1 << 20),
    U64("max_entries", av_cache_cfg_t, max_entries, 1, UINT64_MAX),
    U32("sweep_interval_s", av_cache_cfg_t, sweep_interval_s, 1, 86400),
    U32("batch_max", av_cache_cfg_t, batch_max, 1, 16384),
};
static const table_t cache_table = { "cache", cache_fields, NFIELDS(cache_fields), -1 };

static const field_t errors_fields[] = {
    { "path", K_PATH, OFF(av_errors_cfg_t, path), 0, 0, false, NULL, NULL },
    U32("map_size_mb", av_errors_cfg_t, map_size_mb, 1, 1 << 20),
    U64("retention_count", av_errors_cfg_t, retention_count, 1, UINT64_MAX),
    U32("retention_s", av_errors_cfg_t, retention_s, 1, UINT32_MAX),
    U32("batch_max", av_errors_cfg_t, batch_max, 1, 16384),
};
static const table_t errors_table = { "errors", errors_fields, NFIELDS(errors_fields), -1 };

#define DAEMON_SECTION(fn, member, tab)                                                      \
    static int fn(parser_t *p, yaml_node_t *node, void *base)                               \
    {                                                                                       \
        (void)base;                                                                         \
        if (node->type != YAML_MAPPING_NODE)                                                \
            return error_at(p, node, "'%s' must be a map, not %s", tab.what, node_kind(node)); \
        const table_t *tables[] = { &tab, &process_table };                                 \
        return parse_map(p, node, &p->cfg->member, tables, 2);                                \
    }
DAEMON_SECTION(parse_intake, intake, intake_table)
DAEMON_SECTION(parse_dispatcher, dispatcher, dispatcher_table)
DAEMON_SECTION(parse_querier, querier, querier_table)
DAEMON_SECTION(parse_cache, cache, cache_table)
DAEMON_SECTION(parse_errors, errors, errors_table)

static yaml_node_t *map_get(parser_t *p, yaml_node_t *map, const char *key);

static const field_t http_fields[] = {
    { "listen", K_ENDPOINT, OFF(av_http_cfg_t, listen), 0, 0, false, NULL, NULL },
    { "www", K_STR, OFF(av_http_cfg_t, www), 0, 0, false, NULL, NULL },
    { "tlds", K_STRLIST, OFF(av_http_cfg_t, tlds), 0, 100, false, NULL, NULL },
    { "cors_origins", K_STRLIST, OFF(av_http_cfg_t, cors_origins), 0, 64, false, NULL, NULL },
    { "api_keys", K_STR, OFF(av_http_cfg_t, api_keys), 0, 0, false, NULL, NULL },
    U32("max_connections", av_http_cfg_t, max_connections, 1, 1000000),
    U32("max_connections_per_ip", av_http_cfg_t, max_connections_per_ip, 0, 1000000),
    U32("idle_timeout_s", av_http_cfg_t, idle_timeout_s, 1, 3600),
    U32("max_body_bytes", av_http_cfg_t, max_body_bytes, 1024, 16 << 20),
    U32("max_names", av_http_cfg_t, max_names, 1, 1000) /* the protocol's batch */,
    U32("client_rate", av_http_cfg_t, client_rate, 1, 100000000),
    U32("client_burst", av_http_cfg_t, client_burst, 1, 100000000),
    U32("max_clients", av_http_cfg_t, max_clients, 16, 10000000),
    U32("max_pending", av_http_cfg_t, max_pending, 1, 10000000),
    U32("max_streams", av_http_cfg_t, max_streams, 1, 1000000),
    U32("deadline_ms", av_http_cfg_t, deadline_ms, 0, 3600000),
    { "cache_direct", K_BOOL, OFF(av_http_cfg_t, cache_direct), 0, 0, false, NULL, NULL },
};
static const table_t http_table = { "http", http_fields, NFIELDS(http_fields), -1 };

/* `http:` turns availd-http on; its listen address must be tcp:// and its
 * search page's TLDs public suffixes as availd keeps them. */
static int
parse_http(parser_t *p, yaml_node_t *node, void *base)
{
    (void)base;
    av_http_cfg_t *h = &p->cfg->http;
    h->enabled = true;
    if (node->type == YAML_SCALAR_NODE && !*scalar(node))
        return 0; /* `http:` and nothing: every default */
    if (node->type != YAML_MAPPING_NODE)
        return error_at(p, node, "'http' must be a map, not %s", node_kind(node));
    const table_t *tables[] = { &http_table, &process_table };
    if (parse_map(p, node, h, tables, 2) < 0)
        return -1;
    yaml_node_t *listen = map_get(p, node, "listen");
    if (h->listen && strncmp(h->listen, "tcp://", 6) != 0)
        return error_at(p, listen, "'listen' of http must be tcp://HOST:PORT, not '%s'", h->listen);
    yaml_node_t *tlds = map_get(p, node, "tlds");
    for (uint32_t i = 0; i < h->tlds.count; i++) {
        char *t = h->tlds.items[i];
        if (t[0] == '.')
            memmove(t, t + 1, strlen(t));
        if (!av_tld_valid(t))
            return error_at(p, tlds, "bad TLD '%s' in http.tlds (lower-case A-labels: letters, digits, '-', '.')", t);
    }
    if (h->client_burst < h->client_rate && map_get(p, node, "client_burst"))
        return error_at(p, map_get(p, node, "client_burst"), "'client_burst' must be at least 'client_rate' (%u)",
                        h->client_rate);
    if (h->client_burst < h->client_rate)
        h->client_burst = h->client_rate;
    return 0;
}

static const field_t pattern_fields[] = {
    { "available", K_STRLIST, OFF(av_registry_cfg_t, patterns[AV_PAT_AVAILABLE]), 0, 256, false, NULL, NULL },
    { "registered", K_STRLIST, OFF(av_registry_cfg_t, patterns[AV_PAT_REGISTERED]), 0, 256, false, NULL, NULL },
    { "reserved", K_STRLIST, OFF(av_registry_cfg_t, patterns[AV_PAT_RESERVED]), 0, 256, false, NULL, NULL },
    { "rate_limited", K_STRLIST, OFF(av_registry_cfg_t, patterns[AV_PAT_RATE_LIMITED]), 0, 256, false, NULL, NULL },
    { "error", K_STRLIST, OFF(av_registry_cfg_t, patterns[AV_PAT_ERROR]), 0, 256, false, NULL, NULL },
};
static const table_t pattern_table = { "patterns", pattern_fields, NFIELDS(pattern_fields), -1 };

static const field_t ttl_fields[] = {
    U32("available", av_registry_cfg_t, ttl_s[0], 0, 365 * 86400),
    U32("registered", av_registry_cfg_t, ttl_s[1], 0, 365 * 86400),
    U32("reserved", av_registry_cfg_t, ttl_s[2], 0, 365 * 86400),
    U32("unknown", av_registry_cfg_t, ttl_s[4], 0, 86400),
};
static const table_t ttl_table = { "ttl", ttl_fields, NFIELDS(ttl_fields), -1 };

static const field_t rate_fields[] = {
    U32("queries", av_registry_cfg_t, rate_queries, 0, 10000000),
    U32("period_s", av_registry_cfg_t, rate_period_s, 1, 86400),
    U32("burst", av_registry_cfg_t, rate_burst, 1, 10000000),
};
static const table_t rate_table = { "rate_limit", rate_fields, NFIELDS(rate_fields), -1 };

/* budget: global (the dispatcher holds the rate limit and concurrency for
 * every querier of the registry, on any host) or per_address (the registry
 * limits each source address: each querier spends the whole budget). */
static int
parse_budget(parser_t *p, yaml_node_t *node, void *base)
{
    const char *s = scalar(node);
    bool *per_address = &((av_registry_cfg_t *)base)->budget_per_address;
    if (s && strcmp(s, "global") == 0)
        *per_address = false;
    else if (s && strcmp(s, "per_address") == 0)
        *per_address = true;
    else
        return error_at(p, node, "'budget' must be global or per_address, not %s", s ? s : node_kind(node));
    return 0;
}

static const field_t registry_fields[] = {
    { "tlds", K_STRLIST, OFF(av_registry_cfg_t, tlds), 0, 4096, true, NULL, NULL },
    { "protocol", K_PROTOCOL, OFF(av_registry_cfg_t, protocol), 0, 0, true, NULL, NULL },
    { "host", K_STR, OFF(av_registry_cfg_t, host), 0, 0, false, NULL, NULL },
    U32("port", av_registry_cfg_t, port, 1, 65535),
    { "base_url", K_STR, OFF(av_registry_cfg_t, base_url), 0, 0, false, NULL, NULL },
    { "query", K_STR, OFF(av_registry_cfg_t, query), 0, 0, false, NULL, NULL },
    { "patterns", K_SECTION, 0, 0, 0, false, &pattern_table, NULL },
    { "pattern_syntax", K_SYNTAX, OFF(av_registry_cfg_t, posix_patterns), 0, 0, false, NULL, NULL },
    { "reading", K_READING, OFF(av_registry_cfg_t, reading), 0, 0, false, NULL, NULL },
    { "rate_limit", K_SECTION, 0, 0, 0, false, &rate_table, NULL },
    U32("concurrency", av_registry_cfg_t, concurrency, 1, 100000),
    U32("queue", av_registry_cfg_t, queue, 0, 1000000),
    U32("timeout_ms", av_registry_cfg_t, timeout_ms, 10, 600000),
    U32("max_reply_bytes", av_registry_cfg_t, max_reply_bytes, 64, 16 << 20),
    U32("backoff_s", av_registry_cfg_t, backoff_s, 0, 86400),
    { "ttl", K_SECTION, 0, 0, 0, false, &ttl_table, NULL },
    U32("raw_bytes", av_registry_cfg_t, raw_bytes, 0, 4096),
    U32("queriers", av_registry_cfg_t, queriers, 1, 64),
    { "dns_precheck", K_BOOL, OFF(av_registry_cfg_t, dns_precheck), 0, 0, false, NULL, NULL },
    { "dns_servers", K_STRLIST, OFF(av_registry_cfg_t, dns_servers), 0, 16, false, NULL, NULL },
    { "ca_file", K_STR, OFF(av_registry_cfg_t, ca_file), 0, 0, false, NULL, NULL },
    U32("connections", av_registry_cfg_t, connections, 1, 1024),
    { "budget", K_CUSTOM, 0, 0, 0, false, NULL, parse_budget },
};
static const table_t registry_table = { "registry", registry_fields, NFIELDS(registry_fields), -1 };

void
av_registry_defaults(av_registry_cfg_t *r)
{
    memset(r, 0, sizeof *r);
    r->concurrency = 16;
    r->queue = 1000;
    r->timeout_ms = 10000;
    r->max_reply_bytes = 65536;
    r->backoff_s = 60;
    r->rate_period_s = 1;
    r->ttl_s[0] = 60;
    r->ttl_s[1] = 86400;
    r->ttl_s[2] = 86400;
    r->raw_bytes = 512;
    r->queriers = 1;
    r->connections = 8;
}

void
av_registry_clear(av_registry_cfg_t *r)
{
    free(r->name);
    free_strlist(&r->tlds);
    free(r->host);
    free(r->base_url);
    free(r->query);
    for (int i = 0; i < AV_PAT_KINDS; i++)
        free_strlist(&r->patterns[i]);
    free_strlist(&r->dns_servers);
    free(r->ca_file);
}

static int
dup_string(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? -1 : 0;
}

static int
dup_strlist(av_strlist_t *dst, const av_strlist_t *src)
{
    dst->count = 0;
    dst->items = src->count ? calloc(src->count, sizeof *dst->items) : NULL;
    if (src->count && !dst->items)
        return -1;
    for (uint32_t i = 0; i < src->count; i++, dst->count++)
        if (!(dst->items[i] = strdup(src->items[i])))
            return -1;
    return 0;
}

av_registry_cfg_t *
av_registry_cfg_dup(const av_registry_cfg_t *src)
{
    av_registry_cfg_t *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    *r = *src;
    r->name = r->host = r->base_url = r->query = r->ca_file = NULL;
    memset(&r->tlds, 0, sizeof r->tlds);
    memset(&r->dns_servers, 0, sizeof r->dns_servers);
    memset(r->patterns, 0, sizeof r->patterns);
    int rc = dup_string(&r->name, src->name) | dup_string(&r->host, src->host) |
             dup_string(&r->base_url, src->base_url) | dup_string(&r->query, src->query) |
             dup_string(&r->ca_file, src->ca_file) | dup_strlist(&r->tlds, &src->tlds) |
             dup_strlist(&r->dns_servers, &src->dns_servers);
    for (int i = 0; i < AV_PAT_KINDS; i++)
        rc |= dup_strlist(&r->patterns[i], &src->patterns[i]);
    if (rc != 0)
        av_registry_cfg_free(&r);
    return r;
}

void
av_registry_cfg_free(av_registry_cfg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    av_registry_clear(*self_p);
    free(*self_p);
    *self_p = NULL;
}

static yaml_node_t *
map_get(parser_t *p, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
        const char *k = scalar(yaml_document_get_node(p->doc, pair->key));
        if (k && strcmp(k, key) == 0)
            return yaml_document_get_node(p->doc, pair->value);
    }
    return NULL;
}

bool
av_tld_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c == '.' || c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')))
            return false;
    }
    return true;
}

/* Checks what the key tables cannot: protocol-dependent keys, the query
 * template, TLD syntax and uniqueness, and that every pattern compiles. */
static int
validate_registry(parser_t *p, yaml_node_t *node, av_registry_cfg_t *r)
{
    yaml_node_t *tlds = map_get(p, node, "tlds");
    if (r->tlds.count == 0)
        return error_at(p, tlds ? tlds : node, "registry '%s' serves no TLD", r->name);
    for (uint32_t i = 0; i < r->tlds.count; i++) {
        char *t = r->tlds.items[i];
        yaml_node_t *at = tlds;
        if (tlds && tlds->type == YAML_SEQUENCE_NODE)
            at = yaml_document_get_node(p->doc, tlds->data.sequence.items.start[i]);
        if (t[0] == '.')
            memmove(t, t + 1, strlen(t));
        for (char *c = t; *c; c++)
            *c = (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
        if (!av_tld_valid(t))
            return error_at(p, at, "bad TLD '%s' in registry '%s' (A-labels: letters, digits, '-', '.')", t,
                            r->name);
        for (uint32_t k = 0; k < p->cfg->n_registries; k++) {
            const av_registry_cfg_t *o = &p->cfg->registries[k];
            for (uint32_t j = 0; j < o->tlds.count; j++)
                if (strcmp(o->tlds.items[j], t) == 0)
                    return error_at(p, at, "TLD '%s' of registry '%s' is already served by registry '%s'", t,
                                    r->name, o->name);
        }
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(r->tlds.items[j], t) == 0)
                return error_at(p, at, "TLD '%s' listed twice in registry '%s'", t, r->name);
    }
    switch (r->protocol) {
    case AV_PROTO_WHOIS:
    case AV_PROTO_DAS:
        if (!r->host || !*r->host)
            return error_at(p, node, "missing required key 'host' in registry '%s' (protocol %s)", r->name,
                            r->protocol == AV_PROTO_WHOIS ? "whois" : "das");
        if (!r->port)
            r->port = r->protocol == AV_PROTO_WHOIS ? 43 : 4343;
        break;
    case AV_PROTO_RDAP:
        /* No base_url: the bootstrap file gives it, once the whole
         * configuration (and its rdap_bootstrap) is read. */
        if (r->base_url && strncmp(r->base_url, "http://", 7) != 0 && strncmp(r->base_url, "https://", 8) != 0)
            return error_at(p, map_get(p, node, "base_url"), "base_url of '%s' must be http:// or https://",
                            r->name);
        break;
    }
    if (!r->query && !(r->query = strdup("%s\r\n")))
        return error_at(p, node, "out of memory");
    /* The template holds exactly one name: %s (the whole name) or %l (its
     * label under the registry's suffix, as EURid's DAS wants it). */
    int conversions = 0;
    for (const char *c = r->query; *c; c++) {
        if (*c != '%')
            continue;
        if (c[1] == 's' || c[1] == 'l')
            conversions++;
        else if (c[1] != '%')
            return error_at(p, map_get(p, node, "query"),
                            "query template of '%s' may hold only %%s, %%l and %%%%", r->name);
        c++;
    }
    if (conversions != 1)
        return error_at(p, map_get(p, node, "query") ? map_get(p, node, "query") : node,
                        "query template of '%s' must hold exactly one %%s or %%l", r->name);
    if (r->rate_queries && !r->rate_burst)
        r->rate_burst = r->rate_queries < 10 ? r->rate_queries : 10;
    yaml_node_t *pats = map_get(p, node, "patterns");
    static const char *const kinds[AV_PAT_KINDS] = { "available", "registered", "reserved", "rate_limited",
                                                     "error" };
    for (int k = 0; k < AV_PAT_KINDS; k++) {
        yaml_node_t *list = map_get(p, pats, kinds[k]);
        for (uint32_t i = 0; i < r->patterns[k].count; i++) {
            char why[256];
            if (av_pattern_check(r->patterns[k].items[i], r->posix_patterns, why, sizeof why) < 0) {
                yaml_node_t *at = list;
                if (list && list->type == YAML_SEQUENCE_NODE)
                    at = yaml_document_get_node(p->doc, list->data.sequence.items.start[i]);
                return error_at(p, at, "bad %s pattern of '%s': %s", kinds[k], r->name, why);
            }
        }
    }
    return 0;
}

static int
parse_registries(parser_t *p, yaml_node_t *node, void *base)
{
    (void)base;
    if (node->type == YAML_SCALAR_NODE && !*scalar(node))
        return 0; /* `registries:` and nothing */
    if (node->type != YAML_MAPPING_NODE)
        return error_at(p, node, "'registries' must be a map of registry name to settings");
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(p->doc, pair->key);
        yaml_node_t *val = yaml_document_get_node(p->doc, pair->value);
        const char *name = scalar(key);
        if (!name || !*name || strlen(name) > 63 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(name))
            return error_at(p, key, "bad registry name '%s' (lower case letters, digits, '-', '_'; at most 63)",
                            name ? name : "");
        if (av_config_registry(p->cfg, name))
            return error_at(p, key, "registry '%s' is defined twice", name);
        if (val->type != YAML_MAPPING_NODE)
            return error_at(p, val, "registry '%s' must be a map, not %s", name, node_kind(val));
        av_registry_cfg_t r;
        av_registry_defaults(&r);
        r.line = key->start_mark.line + 1;
        r.column = key->start_mark.column + 1;
        const table_t *tables[] = { &registry_table };
        if (!(r.name = strdup(name)) || parse_map(p, val, &r, tables, 1) < 0 || validate_registry(p, val, &r) < 0) {
            if (!r.name)
                error_at(p, key, "out of memory");
            av_registry_clear(&r);
            return -1;
        }
        av_registry_cfg_t *grown = realloc(p->cfg->registries, (p->cfg->n_registries + 1) * sizeof *grown);
        if (!grown) {
            av_registry_clear(&r);
            return error_at(p, key, "out of memory");
        }
        p->cfg->registries = grown;
        p->cfg->registries[p->cfg->n_registries++] = r;
    }
    return 0;
}

static int load_file(av_config_t *cfg, const char *path, int depth, char *err, size_t errlen, const yaml_node_t *from,
                     const char *from_path);

static int
include_one(parser_t *p, yaml_node_t *node, const char *file, void *arg)
{
    (void)arg;
    char full[PATH_MAX];
    if (file[0] == '/') {
        snprintf(full, sizeof full, "%s", file);
    } else {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", p->path);
        snprintf(full, sizeof full, "%s/%s", dirname(dir), file);
    }
    if (p->depth + 1 > AV_INCLUDE_DEPTH)
        return error_at(p, node, "includes nested deeper than %d", AV_INCLUDE_DEPTH);
    return load_file(p->cfg, full, p->depth + 1, p->err, p->errlen, node, p->path);
}

static int
parse_include(parser_t *p, yaml_node_t *node, void *base)
{
    (void)base;
    return each_string(p, node, "include", 16, include_one, NULL);
}

/* What an implicit registry (a TLD's RDAP service or whois server without
 * an entry of its own) may be given: its limits, not its identity. */
static const field_t implicit_registry_fields[] = {
    { "rate_limit", K_SECTION, 0, 0, 0, false, &rate_table, NULL },
    U32("concurrency", av_registry_cfg_t, concurrency, 1, 100000),
    U32("queue", av_registry_cfg_t, queue, 0, 1000000),
    U32("timeout_ms", av_registry_cfg_t, timeout_ms, 10, 600000),
    U32("max_reply_bytes", av_registry_cfg_t, max_reply_bytes, 64, 16 << 20),
    U32("backoff_s", av_registry_cfg_t, backoff_s, 0, 86400),
    { "ttl", K_SECTION, 0, 0, 0, false, &ttl_table, NULL },
    U32("raw_bytes", av_registry_cfg_t, raw_bytes, 0, 4096),
    { "dns_precheck", K_BOOL, OFF(av_registry_cfg_t, dns_precheck), 0, 0, false, NULL, NULL },
    { "dns_servers", K_STRLIST, OFF(av_registry_cfg_t, dns_servers), 0, 16, false, NULL, NULL },
    { "ca_file", K_STR, OFF(av_registry_cfg_t, ca_file), 0, 0, false, NULL, NULL },
    U32("connections", av_registry_cfg_t, connections, 1, 1024),
};
static const table_t implicit_registry_table = { "implicit registry", implicit_registry_fields,
                                                 NFIELDS(implicit_registry_fields), -1 };

static const field_t implicit_fields[] = {
    { "rdap", K_SECTION, OFF(av_config_t, implicit_rdap), 0, 0, false, &implicit_registry_table, NULL },
    { "whois", K_SECTION, OFF(av_config_t, implicit_whois), 0, 0, false, &implicit_registry_table, NULL },
};
static const table_t implicit_table = { "implicit", implicit_fields, NFIELDS(implicit_fields), -1 };

static int
add_serves(parser_t *p, yaml_node_t *node, const char *s, void *arg)
{
    uint32_t *serves = arg;
    if (strcmp(s, "whois") == 0)
        *serves |= 1u << AV_PROTO_WHOIS;
    else if (strcmp(s, "das") == 0)
        *serves |= 1u << AV_PROTO_DAS;
    else if (strcmp(s, "rdap") == 0)
        *serves |= 1u << AV_PROTO_RDAP;
    else
        return error_at(p, node, "'serves' takes whois, das and rdap, not '%s'", s);
    return 0;
}

static int
parse_serves(parser_t *p, yaml_node_t *node, void *base)
{
    return each_string(p, node, "serves", 3, add_serves, &((av_group_cfg_t *)base)->serves);
}

static const field_t group_fields[] = {
    { "registries", K_STRLIST, OFF(av_group_cfg_t, named), 0, 100000, false, NULL, NULL },
    { "serves", K_CUSTOM, 0, 0, 0, false, NULL, parse_serves },
    U32("instances", av_group_cfg_t, instances, 1, 64),
};
static const table_t group_table = { "querier group", group_fields, NFIELDS(group_fields), -1 };

/* queriers: {NAME: {registries: [...], serves: [rdap...], instances: N}} */
static int
parse_queriers(parser_t *p, yaml_node_t *node, void *base)
{
    (void)base;
    if (node->type == YAML_SCALAR_NODE && !*scalar(node))
        return 0;
    if (node->type != YAML_MAPPING_NODE)
        return error_at(p, node, "'queriers' must be a map of querier group name to settings");
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(p->doc, pair->key);
        yaml_node_t *val = yaml_document_get_node(p->doc, pair->value);
        const char *name = scalar(key);
        if (!name || !*name || strlen(name) > 63 ||
            strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(name))
            return error_at(p, key, "bad querier group name '%s' (lower case letters, digits, '-', '_'; at most 63)",
                            name ? name : "");
        for (uint32_t i = 0; i < p->cfg->n_groups; i++)
            if (strcmp(p->cfg->groups[i].name, name) == 0)
                return error_at(p, key, "querier group '%s' is defined twice", name);
        if (val->type != YAML_MAPPING_NODE)
            return error_at(p, val, "querier group '%s' must be a map, not %s", name, node_kind(val));
        av_group_cfg_t g = { .instances = 1, .line = key->start_mark.line + 1, .column = key->start_mark.column + 1 };
        const table_t *tables[] = { &group_table };
        if (!(g.name = strdup(name)) || parse_map(p, val, &g, tables, 1) < 0 ||
            av_config_add_group(p->cfg, &g) < 0) {
            int rc = g.name ? -1 : error_at(p, key, "out of memory");
            av_group_clear(&g);
            return rc;
        }
    }
    return 0;
}

/* implicit_registries, and where it is said: a bootstrap or whois server
 * list it needs and cannot read is refused at this place. */
static int
parse_implicit_registries(parser_t *p, yaml_node_t *node, void *base)
{
    (void)base;
    free(p->cfg->implicit_at);
    if (asprintf(&p->cfg->implicit_at, "%s:%zu:%zu", p->path, node->start_mark.line + 1,
                 node->start_mark.column + 1) < 0) {
        p->cfg->implicit_at = NULL;
        return error_at(p, node, "out of memory");
    }
    return get_bool(p, node, "implicit_registries", &p->cfg->implicit_registries);
}

static const field_t top_fields[] = {
    { "include", K_CUSTOM, 0, 0, 0, false, NULL, parse_include },
    { "runtime_dir", K_STR, OFF(av_config_t, runtime_dir), 0, 0, false, NULL, NULL },
    { "state_dir", K_STR, OFF(av_config_t, state_dir), 0, 0, false, NULL, NULL },
    { "rdap_bootstrap", K_STR, OFF(av_config_t, rdap_bootstrap), 0, 0, false, NULL, NULL },
    { "whois_servers", K_STR, OFF(av_config_t, whois_servers), 0, 0, false, NULL, NULL },
    { "implicit_registries", K_CUSTOM, 0, 0, 0, false, NULL, parse_implicit_registries },
    { "implicit", K_SECTION, 0, 0, 0, false, &implicit_table, NULL },
    { "queriers", K_CUSTOM, 0, 0, 0, false, NULL, parse_queriers },
    { "endpoints", K_SECTION, OFF(av_config_t, endpoints), 0, 0, false, &endpoints_table, NULL },
    { "process", K_SECTION, OFF(av_config_t, process), 0, 0, false, &process_table, NULL },
    { "intake", K_CUSTOM, 0, 0, 0, false, NULL, parse_intake },
    { "dispatcher", K_CUSTOM, 0, 0, 0, false, NULL, parse_dispatcher },
    { "querier", K_CUSTOM, 0, 0, 0, false, NULL, parse_querier },
    { "cache", K_CUSTOM, 0, 0, 0, false, NULL, parse_cache },
    { "errors", K_CUSTOM, 0, 0, 0, false, NULL, parse_errors },
    { "http", K_CUSTOM, 0, 0, 0, false, NULL, parse_http },
    { "registries", K_CUSTOM, 0, 0, 0, false, NULL, parse_registries },
    { "curve", K_CUSTOM, 0, 0, 0, false, NULL, parse_curve },
    { "runs", K_CUSTOM, 0, 0, 0, false, NULL, parse_runs },
};
static const table_t top_table = { "the top level", top_fields, NFIELDS(top_fields), -1 };

/* ---- loading ------------------------------------------------------------ */

static int
load_file(av_config_t *cfg, const char *path, int depth, char *err, size_t errlen, const yaml_node_t *from,
          const char *from_path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (from)
            snprintf(err, errlen, "%s:%zu:%zu: cannot include %s: %s", from_path, from->start_mark.line + 1,
                     from->start_mark.column + 1, path, strerror(errno));
        else
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    yaml_parser_t yp;
    yaml_document_t doc;
    int rc = -1;
    yaml_parser_initialize(&yp);
    yaml_parser_set_input_file(&yp, f);
    if (!yaml_parser_load(&yp, &doc)) {
        snprintf(err, errlen, "%s:%zu:%zu: %s%s%s", path, yp.problem_mark.line + 1, yp.problem_mark.column + 1,
                 yp.problem ? yp.problem : "YAML error", yp.context ? " " : "", yp.context ? yp.context : "");
        yaml_parser_delete(&yp);
        fclose(f);
        return -1;
    }
    parser_t p = { .doc = &doc, .path = path, .err = err, .errlen = errlen, .cfg = cfg, .depth = depth };
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        rc = 0; /* an empty file: every default */
    } else {
        const table_t *tables[] = { &top_table };
        rc = parse_map(&p, root, cfg, tables, 1);
    }
    yaml_document_delete(&doc);
    if (rc == 0 && root) {
        /* A second document would be ignored silently: refuse it. */
        yaml_document_t next;
        if (!yaml_parser_load(&yp, &next)) {
            snprintf(err, errlen, "%s:%zu:%zu: %s", path, yp.problem_mark.line + 1, yp.problem_mark.column + 1,
                     yp.problem ? yp.problem : "YAML error");
            rc = -1;
        } else {
            yaml_node_t *extra = yaml_document_get_root_node(&next);
            if (extra) {
                error_at(&(parser_t){ .path = path, .err = err, .errlen = errlen }, extra,
                         "a second YAML document: availd.yaml holds one");
                rc = -1;
            }
            yaml_document_delete(&next);
        }
    }
    yaml_parser_delete(&yp);
    fclose(f);
    return rc;
}

static int
set_str(char **dst, const char *val)
{
    if (*dst)
        return 0;
    return (*dst = strdup(val)) ? 0 : -1;
}

static void
process_defaults(av_process_cfg_t *pr)
{
    memset(pr, 0, sizeof *pr);
    pr->log[0].kind = AV_LOG_STDERR;
    pr->n_log = 1;
    pr->log_level = 2;
    pr->drain_ms = 5000;
}

static void
defaults(av_config_t *c)
{
    process_defaults(&c->process);
    process_defaults(&c->intake.process);
    process_defaults(&c->dispatcher.process);
    process_defaults(&c->querier.process);
    process_defaults(&c->cache.process);
    process_defaults(&c->errors.process);
    process_defaults(&c->http.process);
    c->intake.deadline_ms = 10000;
    c->intake.max_inflight = 200000;
    c->intake.gateway_clients = 1024;
    c->intake.gateway_timeout_ms = 10000;
    c->intake.journal_map_mb = 1024;
    c->intake.resend_ms = 5000;
    c->dispatcher.heartbeat_ms = 1000;
    c->dispatcher.heartbeat_misses = 3;
    c->dispatcher.max_inflight = 200000;
    c->dispatcher.max_inflight_per_registry = 50000;
    c->dispatcher.max_attempts = 3;
    c->dispatcher.overdue_margin_ms = 2000;
    c->dispatcher.querier_grace_ms = 5000;
    c->cache.map_size_mb = 4096;
    c->cache.max_entries = 10000000;
    c->cache.sweep_interval_s = 60;
    c->cache.batch_max = 4096;
    c->errors.map_size_mb = 1024;
    c->errors.retention_count = 1000000;
    c->errors.retention_s = 30 * 86400;
    c->errors.batch_max = 1024;
    av_implicit_defaults(&c->implicit_rdap, AV_PROTO_RDAP);
    av_implicit_defaults(&c->implicit_whois, AV_PROTO_WHOIS);
    c->http.max_connections = 10000;
    c->http.idle_timeout_s = 30;
    c->http.max_body_bytes = 1 << 20;
    c->http.max_names = 1000;
    c->http.client_rate = 1000;
    c->http.client_burst = 2000;
    c->http.max_clients = 100000;
    c->http.max_pending = 100000;
    c->http.max_streams = 5000;
    c->http.cache_direct = true;
}

/* Copies the process keys a daemon's block did not set from the top-level
 * block, where that one set them. */
static int
inherit_process(av_process_cfg_t *d, const av_process_cfg_t *g)
{
    for (size_t i = 0; i < NFIELDS(process_fields); i++) {
        uint64_t bit = 1ull << i;
        if ((d->set & bit) || !(g->set & bit))
            continue;
        const field_t *f = &process_fields[i];
        char *dst = (char *)d + f->offset;
        const char *src = (const char *)g + f->offset;
        switch (f->kind) {
        case K_STR:
        case K_PATH:
        case K_ENDPOINT:
            free(*(char **)dst);
            *(char **)dst = *(char *const *)src ? strdup(*(char *const *)src) : NULL;
            if (*(char *const *)src && !*(char **)dst)
                return -1;
            break;
        case K_LOG:
            free_log(d->log, &d->n_log);
            for (uint32_t k = 0; k < g->n_log; k++) {
                d->log[k].kind = g->log[k].kind;
                if (g->log[k].path && !(d->log[k].path = strdup(g->log[k].path)))
                    return -1;
                d->n_log = k + 1;
            }
            break;
        case K_U32:
            *(uint32_t *)dst = *(const uint32_t *)src;
            break;
        case K_U64:
            *(uint64_t *)dst = *(const uint64_t *)src;
            break;
        case K_BOOL:
            *(bool *)dst = *(const bool *)src;
            break;
        case K_CIDRS:
            memcpy(dst, src, sizeof(av_cidr_list_t));
            break;
        default:
            break;
        }
    }
    return 0;
}

static int
resolve(char **path, const char *dir)
{
    if (!*path || !**path || (*path)[0] == '/')
        return 0;
    char *full;
    if (asprintf(&full, "%s/%s", dir, *path) < 0)
        return -1;
    free(*path);
    *path = full;
    return 0;
}

/* ipc://name -> ipc://RUNTIME_DIR/name, so one setting moves every socket. */
static int
resolve_endpoint(char **ep, const char *runtime_dir)
{
    if (!*ep || strncmp(*ep, "ipc://", 6) != 0 || (*ep)[6] == '/' || (*ep)[6] == '@')
        return 0;
    char *full;
    if (asprintf(&full, "ipc://%s/%s", runtime_dir, *ep + 6) < 0)
        return -1;
    free(*ep);
    *ep = full;
    return 0;
}

#ifndef AVAILD_WWW_DIR
#define AVAILD_WWW_DIR "/usr/share/availd/www"
#endif

/* The search page's defaults: the TLDs a name is checked across, and its
 * files where the install put them. */
static int
http_defaults(av_http_cfg_t *h, const char *cfgdir)
{
    static const char *const tlds[] = { "com", "net", "org", "io", "de" };
    int rc = set_str(&h->listen, "tcp://127.0.0.1:8080");
    rc |= set_str(&h->www, AVAILD_WWW_DIR);
    rc |= resolve(&h->www, cfgdir);
    rc |= set_str(&h->api_keys, "");
    rc |= resolve(&h->api_keys, cfgdir);
    if (rc || h->tlds.count)
        return rc;
    if (!(h->tlds.items = calloc(sizeof tlds / sizeof tlds[0], sizeof *h->tlds.items)))
        return -1;
    for (size_t i = 0; i < sizeof tlds / sizeof tlds[0]; i++, h->tlds.count++)
        if (!(h->tlds.items[i] = strdup(tlds[i])))
            return -1;
    return 0;
}

static int
finish(av_config_t *c, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", c->path);
    const char *cfgdir = dirname(dir);
    int rc = 0;
    rc |= set_str(&c->runtime_dir, "/run/availd");
    rc |= set_str(&c->state_dir, "/var/lib/availd");
    rc |= resolve(&c->runtime_dir, cfgdir);
    rc |= resolve(&c->state_dir, cfgdir);
    rc |= set_str(&c->rdap_bootstrap, "rdap-bootstrap.json");
    rc |= resolve(&c->rdap_bootstrap, cfgdir);
    rc |= set_str(&c->whois_servers, "whois-servers.txt");
    rc |= resolve(&c->whois_servers, cfgdir);
    av_endpoints_cfg_t *e = &c->endpoints;
    rc |= set_str(&e->intake_pull, "ipc://intake-pull.sock");
    rc |= set_str(&e->intake_router, "ipc://intake.sock");
    rc |= set_str(&e->intake_results, "ipc://intake-results.sock");
    rc |= set_str(&e->intake_gateway, "tcp://127.0.0.1:4300");
    rc |= set_str(&e->dispatcher, "ipc://dispatcher.sock");
    rc |= set_str(&e->dispatcher_workers, "ipc://dispatcher-workers.sock");
    rc |= set_str(&e->cache_puts, "ipc://cache.sock");
    rc |= set_str(&e->errors_events, "ipc://errors.sock");
    rc |= set_str(&e->errors_publish, "ipc://errors-pub.sock");
    rc |= set_str(&e->control, "ipc://control-%s.sock");
    char **eps[] = { &e->intake_pull, &e->intake_router, &e->intake_results, &e->dispatcher,
                     &e->dispatcher_workers, &e->cache_puts, &e->errors_events, &e->errors_publish, &e->control };
    for (size_t i = 0; i < NFIELDS(eps); i++)
        rc |= resolve_endpoint(eps[i], c->runtime_dir);
    av_process_cfg_t *procs[] = { &c->intake.process, &c->dispatcher.process, &c->querier.process,
                                  &c->cache.process, &c->errors.process, &c->http.process };
    for (size_t i = 0; i < NFIELDS(procs); i++) {
        rc |= inherit_process(procs[i], &c->process);
        rc |= resolve(&procs[i]->pid_file, c->runtime_dir);
        rc |= resolve_endpoint(&procs[i]->control, c->runtime_dir);
    }
    rc |= set_str(&c->intake.journal, "journal");
    rc |= set_str(&c->cache.path, "cache");
    rc |= set_str(&c->errors.path, "errors");
    rc |= resolve(&c->intake.journal, c->state_dir);
    rc |= resolve(&c->cache.path, c->state_dir);
    rc |= resolve(&c->errors.path, c->state_dir);
    rc |= http_defaults(&c->http, cfgdir);
    if (rc) {
        snprintf(err, errlen, "%s: out of memory", c->path);
        return -1;
    }
    if (av_curve_config_check(c, err, errlen) < 0)
        return -1;
    return av_routes_build(c, err, errlen);
}

int
av_config_load(const char *path, av_config_t **out, char *err, size_t errlen)
{
    *out = NULL;
    av_config_t *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    defaults(c);
    if (load_file(c, path, 0, err, errlen, NULL, NULL) < 0 || finish(c, err, errlen) < 0) {
        av_config_free(&c);
        return -1;
    }
    *out = c;
    return 0;
}

int
av_config_load_partial(const char *path, av_config_t **out, char *err, size_t errlen)
{
    *out = NULL;
    av_config_t *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    c->partial = true;
    defaults(c);
    if (load_file(c, path, 0, err, errlen, NULL, NULL) < 0 || finish(c, err, errlen) < 0) {
        av_config_free(&c);
        return -1;
    }
    *out = c;
    return 0;
}

static void
process_free(av_process_cfg_t *pr)
{
    free_log(pr->log, &pr->n_log);
    free(pr->daemon_name);
    free(pr->pid_file);
    free(pr->user);
    free(pr->group);
    free(pr->control);
}

void
av_config_free(av_config_t **self_p)
{
    av_config_t *c = self_p ? *self_p : NULL;
    if (!c)
        return;
    free(c->path);
    free(c->skipped);
    free(c->runtime_dir);
    free(c->state_dir);
    free(c->rdap_bootstrap);
    free(c->whois_servers);
    free(c->implicit_at);
    av_registry_clear(&c->implicit_rdap);
    av_registry_clear(&c->implicit_whois);
    for (uint32_t i = 0; i < c->n_groups; i++)
        av_group_clear(&c->groups[i]);
    free(c->groups);
    free_strlist(&c->unrouted);
    av_curve_config_clear(c);
    char **eps[] = { &c->endpoints.intake_pull, &c->endpoints.intake_router, &c->endpoints.intake_results,
                     &c->endpoints.intake_gateway, &c->endpoints.dispatcher, &c->endpoints.dispatcher_workers,
                     &c->endpoints.cache_puts, &c->endpoints.errors_events, &c->endpoints.errors_publish,
                     &c->endpoints.control };
    for (size_t i = 0; i < NFIELDS(eps); i++)
        free(*eps[i]);
    process_free(&c->process);
    process_free(&c->intake.process);
    process_free(&c->dispatcher.process);
    process_free(&c->querier.process);
    process_free(&c->cache.process);
    process_free(&c->errors.process);
    process_free(&c->http.process);
    free(c->http.listen);
    free(c->http.www);
    free(c->http.api_keys);
    free_strlist(&c->http.tlds);
    free_strlist(&c->http.cors_origins);
    free(c->querier.source_address);
    free(c->intake.journal);
    free(c->cache.path);
    free(c->errors.path);
    for (uint32_t i = 0; i < c->n_registries; i++)
        av_registry_clear(&c->registries[i]);
    free(c->registries);
    free(c);
    *self_p = NULL;
}

const av_process_cfg_t *
av_config_process(const av_config_t *self, const char *daemon)
{
    if (strcmp(daemon, "intake") == 0)
        return &self->intake.process;
    if (strcmp(daemon, "dispatcher") == 0)
        return &self->dispatcher.process;
    if (strcmp(daemon, "querier") == 0)
        return &self->querier.process;
    if (strcmp(daemon, "cache") == 0)
        return &self->cache.process;
    if (strcmp(daemon, "errors") == 0)
        return &self->errors.process;
    if (strcmp(daemon, "http") == 0)
        return &self->http.process;
    return NULL;
}

const av_registry_cfg_t *
av_config_registry(const av_config_t *self, const char *name)
{
    for (uint32_t i = 0; i < self->n_registries; i++)
        if (strcmp(self->registries[i].name, name) == 0)
            return &self->registries[i];
    return NULL;
}

/* ---- CIDRs and endpoints ------------------------------------------------ */

bool
av_cidr_parse(const char *text, av_cidr_t *out)
{
    char buf[INET6_ADDRSTRLEN + 8];
    if (strlen(text) >= sizeof buf)
        return false;
    strcpy(buf, text);
    char *slash = strchr(buf, '/');
    long bits = -1;
    if (slash) {
        *slash = '\0';
        char *end;
        if (!slash[1] || strspn(slash + 1, "0123456789") != strlen(slash + 1))
            return false;
        bits = strtol(slash + 1, &end, 10);
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        if (bits < 0)
            bits = 32;
        if (bits > 32)
            return false;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        if (bits < 0)
            bits = 128;
        if (bits > 128)
            return false;
    } else {
        return false;
    }
    out->prefix = (uint8_t)bits;
    return true;
}

static bool
prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

bool
av_cidr_match(const av_cidr_t *cidr, const struct sockaddr *addr)
{
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        if (cidr->family == AF_INET)
            return prefix_match(cidr->addr, (const uint8_t *)&in->sin_addr, cidr->prefix);
        return false;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        const uint8_t *a = (const uint8_t *)&in6->sin6_addr;
        if (cidr->family == AF_INET6)
            return prefix_match(cidr->addr, a, cidr->prefix);
        /* An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d. */
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        return memcmp(a, mapped, 12) == 0 && prefix_match(cidr->addr, a + 12, cidr->prefix);
    }
    return false;
}

bool
av_cidr_allowed(const av_cidr_list_t *allow, const av_cidr_list_t *deny, const struct sockaddr *addr)
{
    for (uint32_t i = 0; i < deny->count; i++)
        if (av_cidr_match(&deny->items[i], addr))
            return false;
    if (allow->count == 0)
        return true;
    for (uint32_t i = 0; i < allow->count; i++)
        if (av_cidr_match(&allow->items[i], addr))
            return true;
    return false;
}

bool
av_endpoint_valid(const char *ep, char *why, size_t whylen)
{
    if (strncmp(ep, "ipc://", 6) == 0) {
        const char *path = ep + 6;
        if (!*path)
            return snprintf(why, whylen, "empty ipc path"), false;
        if (strlen(path) > 107) /* sun_path */
            return snprintf(why, whylen, "ipc path longer than 107 bytes"), false;
        return true;
    }
    if (strncmp(ep, "tcp://", 6) == 0) {
        const char *hostport = ep + 6;
        const char *colon = strrchr(hostport, ':');
        if (!colon || colon == hostport)
            return snprintf(why, whylen, "want tcp://HOST:PORT"), false;
        const char *port = colon + 1;
        if (!*port || strspn(port, "0123456789") != strlen(port) || atol(port) < 1 || atol(port) > 65535)
            return snprintf(why, whylen, "port must be 1-65535"), false;
        if (hostport[0] == '[' && colon[-1] != ']')
            return snprintf(why, whylen, "unclosed '[' in IPv6 address"), false;
        return true;
    }
    snprintf(why, whylen, "want ipc://PATH or tcp://HOST:PORT");
    return false;
}

int
av_control_endpoint(const av_config_t *cfg, const char *ident, char *out, size_t size)
{
    const char *daemon = ident;
    char name[64];
    const char *dash = strchr(ident, '-');
    if (dash && (size_t)(dash - ident) < sizeof name) {
        memcpy(name, ident, (size_t)(dash - ident));
        name[dash - ident] = '\0';
        daemon = name;
    }
    const av_process_cfg_t *p = av_config_process(cfg, daemon);
    const char *tmpl = p && p->control && *p->control ? p->control : cfg->endpoints.control;
    int n;
    if (strstr(tmpl, "%s")) {
        const char *at = strstr(tmpl, "%s");
        n = snprintf(out, size, "%.*s%s%s", (int)(at - tmpl), tmpl, ident, at + 2);
    } else {
        n = snprintf(out, size, "%s", tmpl);
    }
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* ---- the key table, for the manual -------------------------------------- */

/* Sections the loader parses with code of its own (K_CUSTOM), and which
 * tables it parses them with: the daemons' blocks (their own keys and the
 * process keys), the registries and the querier groups (NAME: a map). */
typedef struct {
    int (*custom)(parser_t *p, yaml_node_t *node, void *base);
    const char *name_part;       /* ".NAME" for a map of named entries, else "" */
    const table_t *tables[2];
    size_t defaults_offset;      /* of the section in av_config_t, where its defaults are */
} custom_section_t;

/* libcommon's build defines it; a fuzz target compiling this file alone may not. */
#ifndef AVAILD_DEFAULT_CONFIG
#define AVAILD_DEFAULT_CONFIG "/etc/availd/availd.yaml"
#endif

typedef struct {
    av_config_t *cfg;            /* every default, paths resolved as for AVAILD_DEFAULT_CONFIG */
    av_registry_cfg_t registry;
    av_group_cfg_t group;
} keys_defaults_t;

typedef struct {
    void (*fn)(const av_config_key_t *key, void *arg);
    void *arg;
    int count;
} keys_walk_t;

static void
key_value_text(const field_t *f, const char *base, char *out, size_t size)
{
    *out = '\0';
    if (!base)
        return;
    const void *v = base + f->offset;
    switch (f->kind) {
    /* Below its range: "not set", decided later (a whois port by protocol,
     * a burst from queries); the description says how. */
    case K_U32:
        if (*(const uint32_t *)v >= f->min)
            snprintf(out, size, "%u", *(const uint32_t *)v);
        break;
    case K_U64:
        if (*(const uint64_t *)v >= f->min)
            snprintf(out, size, "%llu", (unsigned long long)*(const uint64_t *)v);
        break;
    case K_BOOL: snprintf(out, size, "%s", *(const bool *)v ? "true" : "false"); break;
    case K_STR:
    case K_PATH:
    case K_ENDPOINT: snprintf(out, size, "%s", *(char *const *)v ? *(char *const *)v : ""); break;
    case K_SYNTAX: snprintf(out, size, "%s", *(const bool *)v ? "posix" : "pcre2"); break;
    case K_READING:
        snprintf(out, size, "%s", *(const av_reading_t *)v == AV_READING_GENERIC ? "generic" : "patterns");
        break;
    case K_LOG: {
        const av_log_target_t *t = v;
        uint32_t n = *(const uint32_t *)(base + OFF(av_process_cfg_t, n_log));
        size_t used = 0;
        static const char *const names[] = { "", "stderr", "syslog", "journald", "" };
        for (uint32_t i = 0; i < n && used < size; i++)
            used += (size_t)snprintf(out + used, size - used, "%s%s", i ? ", " : "",
                                     t[i].kind == AV_LOG_FILE ? t[i].path : names[t[i].kind]);
        break;
    }
    case K_STRLIST: {
        const av_strlist_t *l = v;
        size_t used = 0;
        for (uint32_t i = 0; i < l->count && used < size; i++)
            used += (size_t)snprintf(out + used, size - used, "%s%s", i ? ", " : "", l->items[i]);
        break;
    }
    default: break;
    }
}

static const char *
key_type(const field_t *f)
{
    switch (f->kind) {
    case K_STR: return "string";
    case K_PATH: return "path";
    case K_U32:
    case K_U64: return "integer";
    case K_BOOL: return "boolean";
    case K_ENDPOINT: return "endpoint";
    case K_CIDRS: return "CIDR list";
    case K_LOG: return "log targets";
    case K_STRLIST: return "string list";
    case K_SECTION: return "map";
    case K_PROTOCOL:
    case K_SYNTAX:
    case K_READING: return "word";
    case K_CUSTOM: return "custom";
    }
    return "?";
}

static void
key_range_text(const field_t *f, char *out, size_t size)
{
    *out = '\0';
    switch (f->kind) {
    case K_U32:
    case K_U64:
        snprintf(out, size, "%llu..%llu", (unsigned long long)f->min, (unsigned long long)f->max);
        break;
    case K_BOOL: snprintf(out, size, "true or false"); break;
    case K_ENDPOINT:
        snprintf(out, size, "ipc://PATH or tcp://HOST:PORT%s",
                 f->min == 1 ? "; \"\" turns it off" : f->min == 2 ? ", with one %s (the daemon's name)" : "");
        break;
    case K_CIDRS: snprintf(out, size, "ADDRESS/BITS, at most %d", AV_CIDRS_MAX); break;
    case K_LOG:
        snprintf(out, size, "stderr, syslog, journald or an absolute path; at most %d", AV_LOG_TARGETS_MAX);
        break;
    case K_STRLIST: snprintf(out, size, "at most %llu entries", (unsigned long long)(f->max ? f->max : 1024)); break;
    case K_PROTOCOL: snprintf(out, size, "whois, das or rdap"); break;
    case K_SYNTAX: snprintf(out, size, "pcre2 or posix"); break;
    case K_READING: snprintf(out, size, "patterns or generic"); break;
    default: break;
    }
}

static void keys_walk_table(keys_walk_t *w, const char *prefix, const table_t *table, const char *base,
                            const keys_defaults_t *dflt);

static void
keys_emit(keys_walk_t *w, const char *path, const char *type, const char *def, const char *range, bool required,
          bool section)
{
    av_config_key_t key = { path, type, def, range, required, section };
    w->fn(&key, w->arg);
    w->count++;
}

static void
keys_walk_custom(keys_walk_t *w, const char *path, const field_t *f, const keys_defaults_t *dflt)
{
    const custom_section_t sections[] = {
        { parse_intake, "", { &intake_table, &process_table }, OFF(av_config_t, intake) },
        { parse_dispatcher, "", { &dispatcher_table, &process_table }, OFF(av_config_t, dispatcher) },
        { parse_querier, "", { &querier_table, &process_table }, OFF(av_config_t, querier) },
        { parse_cache, "", { &cache_table, &process_table }, OFF(av_config_t, cache) },
        { parse_errors, "", { &errors_table, &process_table }, OFF(av_config_t, errors) },
        { parse_http, "", { &http_table, &process_table }, OFF(av_config_t, http) },
        { parse_registries, ".NAME", { &registry_table, NULL }, 0 },
        { parse_queriers, ".NAME", { &group_table, NULL }, 0 },
    };
    for (size_t i = 0; i < NFIELDS(sections); i++) {
        const custom_section_t *s = &sections[i];
        if (s->custom != f->custom)
            continue;
        keys_emit(w, path, "map", "", "", false, true);
        char prefix[256];
        snprintf(prefix, sizeof prefix, "%s%s.", path, s->name_part);
        const char *base = (const char *)dflt->cfg + s->defaults_offset;
        if (s->tables[0] == &registry_table)
            base = (const char *)&dflt->registry;
        else if (s->tables[0] == &group_table)
            base = (const char *)&dflt->group;
        if (*s->name_part) {
            char named[256];
            snprintf(named, sizeof named, "%s%s", path, s->name_part);
            keys_emit(w, named, "map", "", "", false, true);
        }
        for (size_t t = 0; t < 2 && s->tables[t]; t++)
            keys_walk_table(w, prefix, s->tables[t], base, dflt);
        return;
    }
    /* A custom key of its own: its type and range from the code above it. */
    if (f->custom == parse_include)
        keys_emit(w, path, "string list", "", "at most 16 files, nested at most 4 deep", false, false);
    else if (f->custom == parse_implicit_registries)
        keys_emit(w, path, "boolean", dflt->cfg->implicit_registries ? "true" : "false", "true or false", false,
                  false);
    else if (f->custom == parse_serves)
        keys_emit(w, path, "string list", "", "whois, das, rdap", false, false);
    else
        keys_emit(w, path, "custom", "", "", f->required, false);
}

static void
keys_walk_table(keys_walk_t *w, const char *prefix, const table_t *table, const char *base,
                const keys_defaults_t *dflt)
{
    for (size_t i = 0; i < table->n_fields; i++) {
        const field_t *f = &table->fields[i];
        char path[256], def[512], range[128];
        snprintf(path, sizeof path, "%s%s", prefix, f->key);
        if (f->kind == K_SECTION) {
            keys_emit(w, path, "map", "", "", f->required, true);
            strcat(path, ".");
            keys_walk_table(w, path, f->sub, base ? base + f->offset : NULL, dflt);
        } else if (f->kind == K_CUSTOM) {
            keys_walk_custom(w, path, f, dflt);
        } else {
            key_value_text(f, base, def, sizeof def);
            key_range_text(f, range, sizeof range);
            keys_emit(w, path, key_type(f), def, range, f->required, false);
        }
    }
}

int
av_config_keys(void (*fn)(const av_config_key_t *key, void *arg), void *arg)
{
    keys_defaults_t d = { .group = { .instances = 1 } };
    char err[AV_CONFIG_ERR_MAX];
    av_config_t *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(AVAILD_DEFAULT_CONFIG))) {
        free(c);
        return -1;
    }
    defaults(c);
    if (finish(c, err, sizeof err) < 0) {
        av_config_free(&c);
        return -1;
    }
    d.cfg = c;
    av_registry_defaults(&d.registry);
    keys_walk_t w = { fn, arg, 0 };
    keys_walk_table(&w, "", &top_table, (const char *)c, &d);
    av_registry_clear(&d.registry);
    av_config_free(&c);
    return w.count;
}
