/* availctl errors [--follow] [--daemon D] [--registry R] [--level L]
 *                 [--limit N] [--counts] [--json]
 * The newest error events from availd-errors' database, then with --follow
 * every new one from its PUB socket (the subscription is made before the
 * database is read, and events are matched by sequence number, so none is
 * missed or shown twice). */
#include "availctl.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *daemon;
    const char *registry;
    int max_level;
    uint64_t last_seq;
} filter_t;

static void
format_ms(uint64_t ms, char *out, size_t size)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03uZ", (unsigned)(ms % 1000));
}

static void
print_event(ctl_t *ctl, const msgpack_object *ev)
{
    if (ctl->json) {
        ctl_print_json(ctl_to_json(ev));
        return;
    }
    char when[40], daemon[AV_DAEMON_MAX + 1], registry[AV_REGISTRY_MAX + 1], level[16], code[AV_CODE_MAX + 1];
    char text[AV_TEXT_MAX + 1];
    format_ms(ctl_uint(ev, "at"), when, sizeof when);
    ctl_str(ev, "daemon", daemon, sizeof daemon);
    ctl_str(ev, "registry", registry, sizeof registry);
    ctl_str(ev, "level", level, sizeof level);
    ctl_str(ev, "code", code, sizeof code);
    ctl_str(ev, "text", text, sizeof text);
    printf("%s %-7s %-20s %-12s %s: %s\n", when, level, daemon, registry[0] ? registry : "-", code, text);
}

static bool
matches(const filter_t *f, const msgpack_object *ev)
{
    char buf[AV_DAEMON_MAX + AV_REGISTRY_MAX + 2];
    av_str_t level;
    if (f->daemon) {
        ctl_str(ev, "daemon", buf, sizeof buf);
        if (strcmp(buf, f->daemon) != 0)
            return false;
    }
    if (f->registry) {
        ctl_str(ev, "registry", buf, sizeof buf);
        if (strcmp(buf, f->registry) != 0)
            return false;
    }
    return av_obj_get_str(ev, "level", &level) && av_level_parse(level) <= f->max_level &&
           ctl_uint(ev, "seq") > f->last_seq;
}

/* The events of a "recent" reply, remembering the newest one shown. */
static int
print_events(ctl_t *ctl, const msgpack_object *body, void *arg)
{
    filter_t *f = arg;
    const msgpack_object *events = av_obj_get(body, "events");
    if (events && events->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < events->via.array.size; i++) {
            const msgpack_object *ev = &events->via.array.ptr[i];
            print_event(ctl, ev);
            uint64_t seq = ctl_uint(ev, "seq");
            if (seq > f->last_seq)
                f->last_seq = seq;
        }
    }
    fflush(stdout);
    return EXIT_OK;
}

static int
show_recent(ctl_t *ctl, filter_t *f, uint32_t limit)
{
    msgpack_sbuffer req;
    msgpack_packer pk;
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    av_pack_ctl_begin(&pk, "recent", 5);
    av_pack_kv_uint(&pk, "limit", limit);
    av_pack_kv_str(&pk, "daemon", f->daemon ? f->daemon : "");
    av_pack_kv_str(&pk, "registry", f->registry ? f->registry : "");
    av_pack_kv_str(&pk, "level", av_level_name((av_level_t)f->max_level));
    av_pack_kv_uint(&pk, "after", 0);
    int rc = ctl_show(ctl, "errors", &req, print_events, f);
    msgpack_sbuffer_destroy(&req);
    return rc;
}

static int
print_counts(ctl_t *ctl, const msgpack_object *body, void *arg)
{
    (void)arg;
    if (ctl->json) {
        ctl_print_json(ctl_to_json(body));
        return EXIT_OK;
    }
    const msgpack_object *counts = av_obj_get(body, "counts");
    printf("%-20s %-24s %s\n", "REGISTRY", "CODE", "EVENTS");
    for (uint32_t i = 0; counts && counts->type == MSGPACK_OBJECT_ARRAY && i < counts->via.array.size; i++) {
        char registry[AV_REGISTRY_MAX + 1], code[AV_CODE_MAX + 1];
        const msgpack_object *c = &counts->via.array.ptr[i];
        ctl_str(c, "registry", registry, sizeof registry);
        ctl_str(c, "code", code, sizeof code);
        printf("%-20s %-24s %llu\n", registry[0] ? registry : "-", code, (unsigned long long)ctl_uint(c, "count"));
    }
    printf("%llu events held\n", (unsigned long long)ctl_uint(body, "total"));
    return EXIT_OK;
}

static int
show_counts(ctl_t *ctl)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    av_encode_ctl(&req, "counts");
    int rc = ctl_show(ctl, "errors", &req, print_counts, NULL);
    msgpack_sbuffer_destroy(&req);
    return rc;
}

static void
subscribe(zsock_t *sub, const filter_t *f)
{
    /* Topics are LEVEL.DAEMON.REGISTRY: subscribe as narrowly as a prefix
     * can express, filter the rest here. */
    for (int lv = 0; lv <= f->max_level; lv++) {
        char prefix[AV_DAEMON_MAX + 32];
        if (f->daemon)
            snprintf(prefix, sizeof prefix, "%s.%s.", av_level_name((av_level_t)lv), f->daemon);
        else
            snprintf(prefix, sizeof prefix, "%s.", av_level_name((av_level_t)lv));
        zsock_set_subscribe(sub, prefix);
    }
}

static int
follow(ctl_t *ctl, filter_t *f, uint32_t limit, uint64_t exit_after)
{
    zsock_t *sub = ctl_connect(ctl, ZMQ_SUB, ctl->cfg->endpoints.errors_publish);
    if (!sub)
        return EXIT_USAGE;
    subscribe(sub, f);
    int rc = show_recent(ctl, f, limit);
    zpoller_t *poller = zpoller_new(sub, NULL);
    uint64_t shown = 0;
    while (rc == EXIT_OK && !zsys_interrupted && (exit_after == 0 || shown < exit_after)) {
        if (!zpoller_wait(poller, 500)) {
            if (zpoller_terminated(poller))
                break;
            continue;
        }
        zmsg_t *msg = zmsg_recv(sub);
        zframe_t *topic = msg ? zmsg_pop(msg) : NULL;
        zframe_t *body = msg ? zmsg_pop(msg) : NULL;
        av_msg_t ev;
        av_msg_init(&ev);
        if (body && av_msg_decode(&ev, zframe_data(body), zframe_size(body)) == 0 && ev.type == AV_MSG_ERROR &&
            matches(f, &ev.root)) {
            print_event(ctl, &ev.root);
            fflush(stdout);
            f->last_seq = ctl_uint(&ev.root, "seq");
            shown++;
        }
        av_msg_release(&ev);
        zframe_destroy(&topic);
        zframe_destroy(&body);
        zmsg_destroy(&msg);
    }
    zpoller_destroy(&poller);
    zsock_destroy(&sub);
    return rc;
}

int
cmd_errors(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "follow", no_argument, NULL, 'f' },      { "daemon", required_argument, NULL, 'd' },
        { "registry", required_argument, NULL, 'r' }, { "level", required_argument, NULL, 'l' },
        { "limit", required_argument, NULL, 'n' }, { "counts", no_argument, NULL, 'C' },
        { "json", no_argument, NULL, 'j' },        { "exit-after", required_argument, NULL, 'x' },
        { NULL, 0, NULL, 0 },
    };
    filter_t f = { .max_level = AV_LEVEL_DEBUG };
    bool follow_on = false, counts = false;
    long limit = -1;
    unsigned long long exit_after = 0;
    int opt;
    optind = 0; /* 0, not 1: glibc then forgets the main parser's "+" mode */
    while ((opt = getopt_long(argc, argv, "fd:r:l:n:Cjx:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'f': follow_on = true; break;
        case 'd': f.daemon = optarg; break;
        case 'r': f.registry = optarg; break;
        case 'l':
            f.max_level = av_level_parse(av_str(optarg));
            if (f.max_level < 0) {
                fprintf(stderr, "availctl: unknown level '%s' (err, warning, notice, info, debug)\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'n': limit = atol(optarg); break;
        case 'C': counts = true; break;
        case 'j': ctl->json = true; break;
        case 'x': exit_after = strtoull(optarg, NULL, 10); break;
        default: return ctl_command_usage(argv[0]);
        }
    }
    if (optind != argc)
        return ctl_command_usage(argv[0]);
    if (limit == 0 || limit > 10000) {
        fprintf(stderr, "availctl: errors --limit: 1 to 10000\n");
        return EXIT_USAGE;
    }
    ctl->endpoints_only = true;
    if (!ctl_config(ctl))
        return EXIT_USAGE;
    if (counts)
        return show_counts(ctl);
    if (follow_on)
        return follow(ctl, &f, limit < 0 ? 10 : (uint32_t)limit, exit_after);
    return show_recent(ctl, &f, limit < 0 ? 50 : (uint32_t)limit);
}
