/* availctl status [DAEMON...]: every daemon's state from its control
 * endpoint, all asked at once with a short timeout (1 s unless --timeout),
 * a stale socket file or a permission problem said at once, then a one-line
 * summary ("12 up, 0 down", per kind when a kind has several). Exit 1
 * when any asked-about daemon is down. */
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

/* One daemon asked: its ident, and its reply or why it has none. */
typedef struct {
    char ident[AV_REGISTRY_MAX + 32];
    ctl_reply_t reply;
    zsock_t *sock; /* while its reply is awaited */
    int rc;
} asked_t;

typedef struct {
    asked_t *list;
    size_t n, cap;
} asked_list_t;

static void
collect(void *arg, const char *ident)
{
    asked_list_t *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        asked_t *a = realloc(l->list, cap * sizeof *a);
        if (!a)
            return;
        l->list = a;
        l->cap = cap;
    }
    asked_t *a = &l->list[l->n++];
    memset(a, 0, sizeof *a);
    snprintf(a->ident, sizeof a->ident, "%s", ident);
}

/* Every daemon at once: the requests go out together and the replies are
 * taken as they come, so the whole takes one timeout at most, however
 * many daemons are down. */
static void
ask_all(ctl_t *ctl, asked_list_t *l)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    av_encode_ctl(&req, "status");
    zpoller_t *poller = zpoller_new(NULL);
    size_t waiting = 0;
    for (size_t i = 0; i < l->n; i++) {
        asked_t *a = &l->list[i];
        a->rc = -1;
        a->sock = ctl_call_send(ctl, a->ident, &req, &a->reply);
        if (a->sock && poller && zpoller_add(poller, a->sock) == 0)
            waiting++;
        else if (a->sock)
            zsock_destroy(&a->sock);
    }
    msgpack_sbuffer_destroy(&req);
    int64_t deadline = zclock_mono() + ctl->timeout_ms;
    while (waiting > 0) {
        int64_t left = deadline - zclock_mono();
        void *ready = left > 0 ? zpoller_wait(poller, (int)left) : NULL;
        if (!ready)
            break;
        for (size_t i = 0; i < l->n; i++) {
            asked_t *a = &l->list[i];
            if (a->sock && (void *)a->sock == ready) {
                zpoller_remove(poller, a->sock);
                a->rc = ctl_call_recv(&a->sock, a->ident, &a->reply);
                waiting--;
            }
        }
    }
    for (size_t i = 0; i < l->n; i++) {
        asked_t *a = &l->list[i];
        if (a->sock) {
            snprintf(a->reply.err, sizeof a->reply.err, "no answer from %s within %d ms",
                     zsock_endpoint(a->sock) ? zsock_endpoint(a->sock) : a->ident, ctl->timeout_ms);
            zsock_destroy(&a->sock);
        }
    }
    zpoller_destroy(&poller);
}

/* The kind of a control ident: querier-verisign.2 is a querier. */
static void
kind_of(const char *ident, char *out, size_t size)
{
    size_t n = strcspn(ident, "-");
    snprintf(out, size, "%.*s", (int)n, ident);
}

int
cmd_status(ctl_t *ctl, int argc, char **argv)
{
    ctl->endpoints_only = true;
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg)
        return EXIT_USAGE;
    if (!ctl->timeout_set)
        ctl->timeout_ms = 1000; /* a live daemon answers in milliseconds */
    asked_list_t l = { 0 };
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            collect(&l, argv[i]);
    } else {
        ctl_each_daemon(cfg, collect, &l);
    }
    ask_all(ctl, &l);
    /* Per kind, in the order kinds first appear: up of all. */
    struct { char kind[32]; int up, all; } kinds[16];
    size_t n_kinds = 0;
    int up = 0, down = 0;
    for (size_t i = 0; i < l.n; i++) {
        asked_t *a = &l.list[i];
        if (a->rc < 0) {
            if (ctl->json)
                ctl_print_json(json_pack("{s:s, s:s, s:s}", "ident", a->ident, "state", "down", "error", a->reply.err));
            else
                printf("%-24s %-8s %s\n", a->ident, "down", a->reply.err);
            down++;
        } else {
            if (ctl->json)
                ctl_print_json(ctl_to_json(a->reply.body));
            else
                print_human(a->ident, a->reply.body);
            up++;
        }
        char kind[32];
        kind_of(a->ident, kind, sizeof kind);
        size_t k = 0;
        while (k < n_kinds && strcmp(kinds[k].kind, kind) != 0)
            k++;
        if (k == n_kinds && n_kinds < sizeof kinds / sizeof kinds[0]) {
            snprintf(kinds[k].kind, sizeof kinds[k].kind, "%s", kind);
            kinds[k].up = kinds[k].all = 0;
            n_kinds++;
        }
        if (k < n_kinds) {
            kinds[k].all++;
            kinds[k].up += a->rc == 0;
        }
        ctl_reply_release(&a->reply);
    }
    free(l.list);
    /* The summary: "12 up, 0 down", and per kind when a kind has several. */
    bool several = false;
    for (size_t k = 0; k < n_kinds; k++)
        several |= kinds[k].all > 1;
    if (ctl->json && l.n == 1) {
        /* one daemon asked: its object is the whole answer */
    } else if (ctl->json) {
        json_t *per = json_object();
        for (size_t k = 0; k < n_kinds; k++)
            json_object_set_new(per, kinds[k].kind, json_pack("{s:i, s:i}", "up", kinds[k].up, "down",
                                                              kinds[k].all - kinds[k].up));
        ctl_print_json(json_pack("{s:i, s:i, s:o}", "up", up, "down", down, "kinds", per));
    } else {
        printf("%d up, %d down", up, down);
        for (size_t k = 0; several && k < n_kinds; k++)
            printf("%s%s %d/%d", k ? ", " : " (", kinds[k].kind, kinds[k].up, kinds[k].all);
        printf("%s\n", several ? " up)" : "");
    }
    return down ? EXIT_NEGATIVE : EXIT_OK;
}
