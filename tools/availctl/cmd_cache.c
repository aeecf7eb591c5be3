/* availctl cache get NAME | purge NAME | purge --all | stats
 * Through availd-cache's control endpoint: the cache has one writer. */
#include "availctl.h"

#include <stdio.h>
#include <string.h>

/* The reply to get, purge or stats; exit 1 when get found nothing. */
static int
show_reply(ctl_t *ctl, const msgpack_object *body, void *arg)
{
    (void)arg;
    bool found = true;
    av_obj_get_bool(body, "found", &found);
    if (ctl->json) {
        ctl_print_json(ctl_to_json(body));
    } else if (av_obj_get(body, "removed")) {
        printf("removed %llu entries\n", (unsigned long long)ctl_uint(body, "removed"));
    } else if (av_obj_get(body, "found")) {
        char name[AV_NAME_MAX + 1], status[16], reason[AV_REASON_MAX + 1], registry[AV_REGISTRY_MAX + 1];
        char source[16];
        ctl_str(body, "name", name, sizeof name);
        if (!found) {
            printf("%s not cached\n", name);
        } else {
            bool fresh = false;
            av_obj_get_bool(body, "fresh", &fresh);
            ctl_str(body, "status", status, sizeof status);
            ctl_str(body, "reason", reason, sizeof reason);
            ctl_str(body, "registry", registry, sizeof registry);
            ctl_str(body, "source", source, sizeof source);
            printf("%s %s %s registry %s, %s, %llus left %s\n", name, status, reason, registry, source,
                   (unsigned long long)ctl_uint(body, "ttl_left_s"), fresh ? "(fresh)" : "(expired)");
        }
    } else {
        printf("%llu entries\n", (unsigned long long)ctl_uint(body, "entries"));
        const msgpack_object *timing = av_obj_get(body, "timing");
        if (timing && timing->type == MSGPACK_OBJECT_ARRAY && timing->via.array.size) {
            printf("%-16s %10s %8s %8s %10s %10s %10s\n", "REGISTRY", "ANSWERS", "UNKNOWN", "LIMITED", "P50",
                   "P90", "P99");
            for (uint32_t i = 0; i < timing->via.array.size; i++) {
                const msgpack_object *t = &timing->via.array.ptr[i];
                const msgpack_object *tot = av_obj_get(t, "total");
                char registry[AV_REGISTRY_MAX + 1];
                ctl_str(t, "registry", registry, sizeof registry);
                printf("%-16s %10llu %8llu %8llu %8.1fms %8.1fms %8.1fms\n", registry,
                       (unsigned long long)ctl_uint(tot, "count"), (unsigned long long)ctl_uint(tot, "errors"),
                       (unsigned long long)ctl_uint(tot, "rate_limited"), ctl_uint(tot, "p50_us") / 1000.0,
                       ctl_uint(tot, "p90_us") / 1000.0, ctl_uint(tot, "p99_us") / 1000.0);
            }
        }
    }
    return found ? EXIT_OK : EXIT_NEGATIVE;
}

int
cmd_cache(ctl_t *ctl, int argc, char **argv)
{
    msgpack_sbuffer req;
    msgpack_packer pk;
    if (argc < 2)
        return ctl_command_usage(argv[0]);
    if (!ctl_config(ctl))
        return EXIT_USAGE;
    const char *sub = argv[1];
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    if (strcmp(sub, "get") == 0 && argc == 3) {
        av_pack_ctl_begin(&pk, "get", 1);
        av_pack_kv_str(&pk, "name", argv[2]);
    } else if (strcmp(sub, "purge") == 0 && argc == 3 && strcmp(argv[2], "--all") == 0) {
        av_pack_ctl_begin(&pk, "purge", 1);
        av_pack_kv_bool(&pk, "all", true);
    } else if (strcmp(sub, "purge") == 0 && argc == 3) {
        av_pack_ctl_begin(&pk, "purge", 1);
        av_pack_kv_str(&pk, "name", argv[2]);
    } else if (strcmp(sub, "stats") == 0 && argc == 2) {
        av_pack_ctl_begin(&pk, "stats", 0);
    } else {
        msgpack_sbuffer_destroy(&req);
        return ctl_command_usage(argv[0]);
    }
    int rc = ctl_show(ctl, "cache", &req, show_reply, NULL);
    msgpack_sbuffer_destroy(&req);
    return rc;
}
