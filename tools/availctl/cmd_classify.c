/* availctl classify NAME [FILE] [--json]
 * Explains a verdict without any network: reads a registry's raw reply from
 * FILE (or stdin), picks NAME's registry from the config as the dispatcher
 * does (longest suffix), classifies the reply with that registry's patterns
 * through the querier's own decision (verdict_decide) and prints the status, the
 * reason and the pattern that decided. Exit 0 for a definite verdict, 1 for
 * unknown or an invalid or unsupported name, 2 on usage or read errors. */
#include "availctl.h"

#include "av_names.h"
#include "verdict.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *bytes;
    size_t len;
    bool truncated;      /* the source held more than max_reply_bytes */
} reply_t;

/* Reads at most cap bytes, as the querier does: it stops reading a reply at
 * the registry's max_reply_bytes and classifies what it has. One byte more
 * is asked for only to tell the operator that the rest was ignored. */
static int
read_reply(FILE *in, size_t cap, reply_t *r)
{
    memset(r, 0, sizeof *r);
    if (!(r->bytes = malloc(cap ? cap : 1)))
        return -1;
    while (r->len < cap) {
        size_t n = fread(r->bytes + r->len, 1, cap - r->len, in);
        if (n == 0)
            break;
        r->len += n;
    }
    if (ferror(in))
        return -1;
    if (r->len == cap && fgetc(in) != EOF)
        r->truncated = true;
    return 0;
}

static bool
definite(av_status_t s)
{
    return s == AV_STATUS_AVAILABLE || s == AV_STATUS_REGISTERED || s == AV_STATUS_RESERVED;
}

static const char *
protocol_name(av_registry_proto_t p)
{
    switch (p) {
    case AV_PROTO_WHOIS: return "whois";
    case AV_PROTO_DAS: return "das";
    case AV_PROTO_RDAP: return "rdap";
    }
    return "?";
}

/* A name the dispatcher would not send to any registry. */
static int
print_unrouted(ctl_t *ctl, const char *input, const char *name, av_route_t route, const char *reason)
{
    const char *status = route == AV_ROUTE_INVALID ? "invalid" : "unknown";
    if (ctl->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:n}", "query", input, "status", status, "reason", reason, "registry");
        if (route == AV_ROUTE_UNSUPPORTED)
            json_object_set_new(j, "name", json_string(name));
        ctl_print_json(j);
        return EXIT_NEGATIVE;
    }
    if (route == AV_ROUTE_INVALID)
        printf("%s invalid %s\n  the name is not a registrable domain name; no registry is asked\n", input,
               reason);
    else
        printf("%s unknown %s\n  no registry in %s serves the TLD of %s\n", input, reason, ctl->cfg->path, name);
    return EXIT_NEGATIVE;
}

static void
print_verdict(ctl_t *ctl, const char *input, const char *name, const av_registry_cfg_t *reg, const reply_t *r,
              const verdict_t *v)
{
    if (ctl->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:b, s:I}", "query", input, "name", name, "status",
                              av_status_name(v->status), "registry", reg->name, "protocol",
                              protocol_name(reg->protocol), "bytes", (json_int_t)r->len, "truncated", r->truncated,
                              "max_reply_bytes", (json_int_t)reg->max_reply_bytes);
        json_object_set_new(j, "reason", v->reason ? json_string(v->reason) : json_null());
        json_object_set_new(j, "kind", v->by_pattern ? json_string(av_pattern_kind_name(v->kind)) : json_null());
        json_object_set_new(j, "pattern", v->by_pattern ? json_string(v->decided_by) : json_null());
        ctl_print_json(j);
        return;
    }
    printf("%s %s%s%s\n", name, av_status_name(v->status), v->reason ? " " : "", v->reason ? v->reason : "");
    if (reg->protocol == AV_PROTO_RDAP)
        printf("  registry: %s (rdap %s)\n", reg->name, reg->base_url);
    else
        printf("  registry: %s (%s %s:%u)\n", reg->name, protocol_name(reg->protocol), reg->host, reg->port);
    if (v->by_pattern)
        printf("  pattern:  %s '%s'\n", av_pattern_kind_name(v->kind), v->decided_by);
    else if (v->reason && strcmp(v->reason, AV_REASON_EMPTY_REPLY) == 0)
        printf("  pattern:  no pattern matched (the reply is empty or only white space)\n");
    else
        printf("  pattern:  no pattern matched\n");
    printf("  reply:    %zu bytes", r->len);
    if (r->truncated)
        printf(", cut at max_reply_bytes %u: the rest is ignored, as the querier does", reg->max_reply_bytes);
    printf("\n");
    if (reg->protocol == AV_PROTO_RDAP)
        printf("  note:     %s speaks RDAP: its querier decides by HTTP status and RDAP statuses; the patterns\n"
               "            used here are those of its port-43 whois\n",
               reg->name);
}

int
cmd_classify(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "json", no_argument, NULL, 'j' },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    optind = 0; /* 0, not 1: glibc then forgets the main parser's "+" mode */
    while ((opt = getopt_long(argc, argv, "j", longopts, NULL)) != -1) {
        switch (opt) {
        case 'j': ctl->json = true; break;
        default: return ctl_command_usage(argv[0]);
        }
    }
    if (argc - optind < 1 || argc - optind > 2)
        return ctl_command_usage(argv[0]);
    const char *input = argv[optind];
    const char *path = argc - optind == 2 ? argv[optind + 1] : "-";
    if (!ctl_config(ctl))
        return EXIT_USAGE;

    av_names_t *names = av_names_new(ctl->cfg);
    if (!names) {
        fprintf(stderr, "availctl: out of memory\n");
        return EXIT_USAGE;
    }
    char name[AV_DOMAIN_MAX + 1] = "";
    const av_registry_cfg_t *reg = NULL;
    const char *reason = NULL;
    av_route_t route = av_names_route(names, input, strlen(input), name, &reg, &reason);
    av_names_destroy(&names);
    if (route != AV_ROUTE_OK)
        return print_unrouted(ctl, input, name, route, reason);

    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!in) {
        fprintf(stderr, "availctl: %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    reply_t reply;
    int rc = read_reply(in, reg->max_reply_bytes, &reply);
    int saved = errno;
    if (in != stdin)
        fclose(in);
    if (rc < 0) {
        fprintf(stderr, "availctl: reading %s: %s\n", strcmp(path, "-") == 0 ? "stdin" : path,
                reply.bytes ? strerror(saved) : "out of memory");
        free(reply.bytes);
        return EXIT_USAGE;
    }

    char err[512];
    verdict_rules_t *rules = verdict_rules_new(reg, err, sizeof err);
    if (!rules) {
        fprintf(stderr, "availctl: %s\n", err);
        free(reply.bytes);
        return EXIT_USAGE;
    }
    /* The reply is read as the registry's port-43 text (for an RDAP
     * registry, its whois patterns), as a whois querier reads it. */
    evidence_t evidence = { .kind = EVIDENCE_TEXT, .body = reply.bytes, .len = reply.len };
    verdict_t verdict;
    verdict_decide(rules, &evidence, &verdict);
    print_verdict(ctl, input, name, reg, &reply, &verdict);
    verdict_rules_destroy(&rules);
    free(reply.bytes);
    return definite(verdict.status) ? EXIT_OK : EXIT_NEGATIVE;
}
