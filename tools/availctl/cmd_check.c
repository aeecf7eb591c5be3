/* availctl check NAME... [--fresh] [--raw] [--json] [--deadline MS]
 * Asks intake (request-reply) and prints one line per name: name, status,
 * source, registry, latency, reason. Exit 0 when every name got a definite
 * answer (available, registered, reserved), 1 when any is unknown or
 * invalid, 2 on usage or connection errors. */
#include "availctl.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_DEADLINE_MS 10000

static bool
definite(av_status_t s)
{
    return s == AV_STATUS_AVAILABLE || s == AV_STATUS_REGISTERED || s == AV_STATUS_RESERVED;
}

static void
print_answer(ctl_t *ctl, const av_answer_t *a, const msgpack_object *raw_map)
{
    if (ctl->json) {
        ctl_print_json(ctl_to_json(raw_map));
        return;
    }
    char query[AV_NAME_MAX + 1], name[AV_NAME_MAX + 1], registry[AV_REGISTRY_MAX + 1], reason[AV_REASON_MAX + 1];
    av_str_copy(query, sizeof query, a->query);
    av_str_copy(name, sizeof name, a->name);
    av_str_copy(registry, sizeof registry, a->registry);
    av_str_copy(reason, sizeof reason, a->reason);
    char latency[32];
    if (a->latency_us)
        snprintf(latency, sizeof latency, "%.1fms", (double)a->latency_us / 1000.0);
    else
        snprintf(latency, sizeof latency, "-");
    printf("%-30s %-10s %-6s %-14s %-9s %s", query[0] ? query : name, av_status_name(a->status),
           av_source_name(a->source), registry[0] ? registry : "-", latency, reason);
    if (name[0] && strcmp(name, query) != 0)
        printf("%s(%s)", reason[0] ? " " : "", name);
    printf("\n");
    if (a->raw.len) {
        printf("    raw: ");
        fwrite(a->raw.ptr, 1, a->raw.len, stdout);
        printf("\n");
    }
}

static int
ask(ctl_t *ctl, zsock_t *s, char **names, int n, bool fresh, bool raw, uint32_t deadline_ms, int *unknown)
{
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    char id[64];
    snprintf(id, sizeof id, "availctl-%d", (int)getpid());
    msgpack_pack_map(&pk, 7);
    av_pack_kv_str(&pk, "t", "check");
    av_pack_kv_uint(&pk, "v", AV_PROTO_VERSION);
    av_pack_kv_str(&pk, "id", id);
    if (n == 1) {
        av_pack_kv_str(&pk, "name", names[0]);
    } else {
        av_pack_str(&pk, "names");
        msgpack_pack_array(&pk, (uint32_t)n);
        for (int i = 0; i < n; i++)
            av_pack_str(&pk, names[i]);
    }
    av_pack_kv_bool(&pk, "fresh", fresh);
    av_pack_kv_bool(&pk, "raw", raw);
    av_pack_kv_uint(&pk, "deadline_ms", deadline_ms);
    zframe_t *req = zframe_new(sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy(&sbuf);
    if (zframe_send(&req, s, 0) < 0) {
        fprintf(stderr, "availctl: cannot send to intake\n");
        return EXIT_USAGE;
    }
    zpoller_t *poller = zpoller_new(s, NULL);
    void *ready = zpoller_wait(poller, (int)deadline_ms + ctl->timeout_ms);
    zpoller_destroy(&poller);
    if (!ready) {
        fprintf(stderr, "availctl: no answer from intake within %u ms (is availd running?)\n",
                deadline_ms + (uint32_t)ctl->timeout_ms);
        return EXIT_USAGE;
    }
    zframe_t *frame = zframe_recv(s);
    av_msg_t msg;
    av_msg_init(&msg);
    int rc = frame ? av_msg_decode(&msg, zframe_data(frame), zframe_size(frame)) : AV_PROTO_E_NOT_MSGPACK;
    int result = EXIT_OK;
    if (rc == 0 && msg.type == AV_MSG_ANSWER) {
        print_answer(ctl, &msg.u.answer, &msg.root);
        *unknown += !definite(msg.u.answer.status);
    } else if (rc == 0 && msg.type == AV_MSG_ANSWERS) {
        for (uint32_t i = 0; i < msg.u.answers.count; i++) {
            av_answer_t a;
            av_answers_at(&msg.u.answers, i, &a);
            print_answer(ctl, &a, &msg.u.answers.list->via.array.ptr[i]);
            *unknown += !definite(a.status);
        }
    } else {
        char why[128];
        fprintf(stderr, "availctl: bad reply from intake: %s\n",
                rc ? av_msg_strerror(&msg, rc, why, sizeof why) : av_msg_type_name(msg.type));
        result = EXIT_USAGE;
    }
    av_msg_release(&msg);
    zframe_destroy(&frame);
    return result;
}

int
cmd_check(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "fresh", no_argument, NULL, 'f' },    { "raw", no_argument, NULL, 'r' },
        { "json", no_argument, NULL, 'j' },     { "deadline", required_argument, NULL, 'd' },
        { NULL, 0, NULL, 0 },
    };
    bool fresh = false, raw = false;
    long deadline_ms = DEFAULT_DEADLINE_MS;
    int opt;
    optind = 0; /* 0, not 1: glibc then forgets the main parser's "+" mode */
    while ((opt = getopt_long(argc, argv, "frjd:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'f': fresh = true; break;
        case 'r': raw = true; break;
        case 'j': ctl->json = true; break;
        case 'd': deadline_ms = atol(optarg); break;
        default: return ctl_command_usage(argv[0]);
        }
    }
    if (optind >= argc || deadline_ms <= 0 || deadline_ms > 600000)
        return ctl_command_usage(argv[0]);
    if (!ctl_config(ctl))
        return EXIT_USAGE;
    zsock_t *s = zsock_new(ZMQ_DEALER);
    if (!s || zsock_connect(s, "%s", ctl->cfg->endpoints.intake_router) < 0) {
        fprintf(stderr, "availctl: cannot connect to %s\n", ctl->cfg->endpoints.intake_router);
        zsock_destroy(&s);
        return EXIT_USAGE;
    }
    zsock_set_linger(s, 0);
    int unknown = 0, rc = EXIT_OK;
    char **names = argv + optind;
    int n = argc - optind;
    for (int off = 0; off < n && rc == EXIT_OK; off += AV_BATCH_MAX) {
        int chunk = n - off < AV_BATCH_MAX ? n - off : AV_BATCH_MAX;
        rc = ask(ctl, s, names + off, chunk, fresh, raw, (uint32_t)deadline_ms, &unknown);
    }
    zsock_destroy(&s);
    if (rc != EXIT_OK)
        return rc;
    return unknown ? EXIT_NEGATIVE : EXIT_OK;
}
