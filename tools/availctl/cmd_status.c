/* availctl status [DAEMON...]: every daemon's state from its control
 * endpoint. Exit 1 when any asked-about daemon is down. */
#include "availctl.h"

#include <stdio.h>
#include <string.h>

static void
print_human(const char *ident, const msgpack_object *body)
{
    char version[32], state[16], status[128], uptime[32];
    snprintf(uptime, sizeof uptime, "%llus", (unsigned long long)ctl_uint(body, "uptime_s"));
    ctl_str(body, "version", version, sizeof version);
    ctl_str(body, "state", state, sizeof state);
    ctl_str(body, "status", status, sizeof status);
    printf("%-24s %-8s pid %-7llu up %-9s v%-7s %s\n", ident, state, (unsigned long long)ctl_uint(body, "pid"),
           uptime, version, status);
    char pending[1024];
    ctl_needs_restart(body, pending, sizeof pending);
    if (pending[0])
        printf("%-24s %s (the running values stay until then)\n", "", pending);
    const char *groups[] = { "counters", "gauges" };
    for (int g = 0; g < 2; g++) {
        const msgpack_object *m = av_obj_get(body, groups[g]);
        if (!m || m->type != MSGPACK_OBJECT_MAP || m->via.map.size == 0)
            continue;
        printf("%-24s", "");
        for (uint32_t i = 0; i < m->via.map.size; i++) {
            const msgpack_object_kv *kv = &m->via.map.ptr[i];
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                printf(" %.*s=%llu", (int)kv->key.via.str.size, kv->key.via.str.ptr,
                       (unsigned long long)kv->val.via.u64);
        }
        printf("\n");
    }
}

static int
status_one(ctl_t *ctl, const char *ident)
{
    ctl_reply_t reply;
    int rc = ctl_call_simple(ctl, ident, "status", &reply);
    if (rc < 0) {
        if (ctl->json)
            ctl_print_json(json_pack("{s:s, s:s, s:s}", "ident", ident, "state", "down", "error", reply.err));
        else
            printf("%-24s %-8s %s\n", ident, "down", reply.err);
    } else if (ctl->json) {
        ctl_print_json(ctl_to_json(reply.body));
    } else {
        print_human(ident, reply.body);
    }
    ctl_reply_release(&reply);
    return rc;
}

typedef struct {
    ctl_t *ctl;
    int down;
} status_walk_t;

static void
status_daemon(void *arg, const char *ident)
{
    status_walk_t *w = arg;
    w->down += status_one(w->ctl, ident) < 0;
}

int
cmd_status(ctl_t *ctl, int argc, char **argv)
{
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg)
        return EXIT_USAGE;
    int down = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            down += status_one(ctl, argv[i]) < 0;
    } else {
        status_walk_t walk = { ctl, 0 };
        ctl_each_daemon(cfg, status_daemon, &walk);
        down += walk.down;
    }
    return down ? EXIT_NEGATIVE : EXIT_OK;
}
