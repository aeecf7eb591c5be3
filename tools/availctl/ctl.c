/* What availctl's commands share: the config, control requests, JSON. */
#include "availctl.h"
#include "av_curve.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

const av_config_t *
ctl_config(ctl_t *ctl)
{
    char err[AV_CONFIG_ERR_MAX];
    if (!ctl->cfg && av_config_load(ctl->config_path, &ctl->cfg, err, sizeof err) < 0) {
        fprintf(stderr, "availctl: %s\n", err);
        if (!ctl->endpoints_only)
            return NULL;
        /* A broken file on disk must not blind the commands that only
         * need to find the running daemons: read what can be read. */
        char partial_err[AV_CONFIG_ERR_MAX];
        if (av_config_load_partial(ctl->config_path, &ctl->cfg, partial_err, sizeof partial_err) < 0)
            return NULL;
        fprintf(stderr, "availctl: warning: the configuration has errors; the rest of it is used to find "
                        "the daemons\n");
    }
    return ctl->cfg;
}

/* Whether something listens on a unix socket file: ZeroMQ would retry a
 * refused connect in silence until the timeout, so a stale socket file (a
 * daemon killed) would cost the whole wait. 0: something listens (or we
 * cannot tell); -1 with err: refused, or permission denied. */
static int
probe_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path)
        return 0;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 0;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
        return 0;
    if (e == ECONNREFUSED)
        snprintf(err, errlen, "not running (stale socket %s)", path);
    else if (e == EACCES || e == EPERM)
        snprintf(err, errlen, "permission denied on %s", path);
    else if (e == ENOENT)
        snprintf(err, errlen, "not running (no %s)", path);
    else
        return 0;
    return -1;
}

static zsock_t *
connect_to(const av_config_t *cfg, int type, const char *endpoint, char *err, size_t errlen)
{
    zsock_t *s = zsock_new(type);
    if (!s) {
        snprintf(err, errlen, "cannot create a socket");
        return NULL;
    }
    zsock_set_linger(s, 0);
    if (av_curve_client_setup(s, cfg, endpoint, err, errlen) < 0) {
        zsock_destroy(&s);
        return NULL;
    }
    if (zsock_connect(s, "%s", endpoint) < 0) {
        snprintf(err, errlen, "cannot connect to %s", endpoint);
        zsock_destroy(&s);
        return NULL;
    }
    return s;
}

zsock_t *
ctl_connect(ctl_t *ctl, int type, const char *endpoint)
{
    char err[AV_CONFIG_ERR_MAX + 128];
    zsock_t *s = connect_to(ctl->cfg, type, endpoint, err, sizeof err);
    if (!s)
        fprintf(stderr, "availctl: %s\n", err);
    return s;
}

zsock_t *
ctl_call_send(ctl_t *ctl, const char *ident, const msgpack_sbuffer *request, ctl_reply_t *reply)
{
    char endpoint[512];
    char *err = reply->err;
    size_t errlen = sizeof reply->err;
    reply->body = NULL;
    reply->err[0] = '\0';
    reply->frame = NULL;
    av_msg_init(&reply->msg);
    if (av_control_endpoint(ctl->cfg, ident, endpoint, sizeof endpoint) < 0) {
        snprintf(err, errlen, "control endpoint of %s too long", ident);
        return NULL;
    }
    /* ZeroMQ retries a refused ipc connect in silence: say here what it would
     * not. Connecting to a unix socket takes search permission on its
     * directories and write permission on the socket file. */
    struct stat st;
    const char *path = endpoint + 6;
    if (strncmp(endpoint, "ipc://", 6) == 0 && path[0] != '@') {
        if (stat(path, &st) < 0 && errno != EACCES) {
            snprintf(err, errlen, "not running (no %s)", path);
            return NULL;
        }
        if (access(path, W_OK) < 0 && errno == EACCES) {
            snprintf(err, errlen, "permission denied on %s", path);
            return NULL;
        }
        if (probe_unix(path, err, errlen) < 0)
            return NULL;
    }
    zsock_t *s = connect_to(ctl->cfg, ZMQ_DEALER, endpoint, err, errlen);
    if (!s)
        return NULL;
    zframe_t *req = zframe_new(request->data, request->size);
    if (zframe_send(&req, s, 0) < 0) {
        snprintf(err, errlen, "cannot send to %s", endpoint);
        zsock_destroy(&s);
        return NULL;
    }
    return s;
}

int
ctl_call_recv(zsock_t **sp, const char *ident, ctl_reply_t *reply)
{
    char *err = reply->err;
    size_t errlen = sizeof reply->err;
    zsock_t *s = *sp;
    int rc = -1;
    reply->frame = zframe_recv(s);
    if (!reply->frame) {
        snprintf(err, errlen, "receive from %s failed", zsock_endpoint(s) ? zsock_endpoint(s) : ident);
        goto out;
    }
    av_msg_t *msg = &reply->msg;
    int derr = av_msg_decode(msg, zframe_data(reply->frame), zframe_size(reply->frame));
    if (derr != 0 || msg->type != AV_MSG_CTL_REPLY) {
        char why[128];
        snprintf(err, errlen, "bad reply from %s: %s", ident,
                 derr ? av_msg_strerror(msg, derr, why, sizeof why) : "not a ctl_reply");
        goto out;
    }
    if (!msg->u.ctl_reply.ok) {
        snprintf(err, errlen, "%.*s", (int)msg->u.ctl_reply.error.len, msg->u.ctl_reply.error.ptr);
        goto out;
    }
    reply->body = msg->u.ctl_reply.body;
    rc = 0;
out:
    zsock_destroy(sp);
    if (rc < 0)
        ctl_reply_release(reply); /* err stays: the caller says it */
    return rc;
}

int
ctl_call(ctl_t *ctl, const char *ident, const msgpack_sbuffer *request, ctl_reply_t *reply)
{
    zsock_t *s = ctl_call_send(ctl, ident, request, reply);
    if (!s)
        return -1;
    zpoller_t *poller = zpoller_new(s, NULL);
    void *ready = zpoller_wait(poller, ctl->timeout_ms);
    zpoller_destroy(&poller);
    if (!ready) {
        snprintf(reply->err, sizeof reply->err, "no answer from %s within %d ms",
                 zsock_endpoint(s) ? zsock_endpoint(s) : ident, ctl->timeout_ms);
        zsock_destroy(&s);
        return -1;
    }
    return ctl_call_recv(&s, ident, reply);
}

int
ctl_call_simple(ctl_t *ctl, const char *ident, const char *cmd, ctl_reply_t *reply)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    av_encode_ctl(&req, cmd);
    int rc = ctl_call(ctl, ident, &req, reply);
    msgpack_sbuffer_destroy(&req);
    return rc;
}

void
ctl_reply_release(ctl_reply_t *reply)
{
    av_msg_release(&reply->msg);
    zframe_destroy(&reply->frame);
    reply->body = NULL;
}

int
ctl_show(ctl_t *ctl, const char *ident, const msgpack_sbuffer *request, ctl_show_fn *show, void *arg)
{
    ctl_reply_t reply;
    if (ctl_call(ctl, ident, request, &reply) < 0) {
        fprintf(stderr, "availctl: availd-%s: %s\n", ident, reply.err);
        return EXIT_USAGE;
    }
    int rc = show(ctl, reply.body, arg);
    ctl_reply_release(&reply);
    return rc;
}

/* Registry replies are not always UTF-8; JSON strings must be. */
static json_t *
text_to_json(const char *p, size_t n)
{
    json_t *j = json_stringn(p, n);
    if (j)
        return j;
    char *copy = malloc(n ? n : 1);
    if (!copy)
        return json_null();
    for (size_t i = 0; i < n; i++)
        copy[i] = (unsigned char)p[i] < 0x80 && p[i] ? p[i] : '?';
    j = json_stringn(copy, n);
    free(copy);
    return j ? j : json_null();
}

json_t *
ctl_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return text_to_json(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return text_to_json(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, ctl_to_json(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
            json_object_set_new(m, key, ctl_to_json(&kv->val));
        }
        return m;
    }
    default: return json_null();
    }
}

void
ctl_print_json(json_t *j)
{
    /* Output for people and scripts, not the wire: the message's type,
     * version and ok keys go; reals print with 12 significant digits, so
     * 0.1 + 0.2 reads 0.3. Registry text may be any bytes; JSON output
     * must stay valid. */
    if (json_is_object(j)) {
        json_object_del(j, "t");
        json_object_del(j, "v");
        json_object_del(j, "ok");
    }
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(12));
    if (s) {
        puts(s);
        free(s);
    }
    json_decref(j);
}

void
ctl_str(const msgpack_object *map, const char *key, char *out, size_t size)
{
    av_str_t s = { "", 0 };
    av_obj_get_str(map, key, &s);
    av_str_copy(out, size, s);
}

uint64_t
ctl_uint(const msgpack_object *map, const char *key)
{
    uint64_t v = 0;
    av_obj_get_uint(map, key, &v);
    return v;
}

void
ctl_each_querier(const av_config_t *cfg, void (*fn)(void *arg, const char *group, const char *instance), void *arg)
{
    for (uint32_t i = 0; i < cfg->n_groups; i++) {
        const av_group_cfg_t *g = &cfg->groups[i];
        for (uint32_t n = 1; n <= g->instances; n++) {
            char instance[AV_REGISTRY_MAX + 16];
            if (n == 1)
                snprintf(instance, sizeof instance, "%s", g->name);
            else
                snprintf(instance, sizeof instance, "%s.%u", g->name, n);
            fn(arg, g->name, instance);
        }
    }
}

uint32_t
ctl_querier_count(const av_config_t *cfg)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < cfg->n_groups; i++)
        n += cfg->groups[i].instances;
    return n;
}

typedef struct {
    void (*fn)(void *arg, const char *ident);
    void *arg;
} each_daemon_t;

static void
each_querier_ident(void *arg, const char *group, const char *instance)
{
    (void)group;
    each_daemon_t *e = arg;
    char ident[AV_REGISTRY_MAX + 32];
    snprintf(ident, sizeof ident, "querier-%s", instance);
    e->fn(e->arg, ident);
}

void
ctl_each_daemon(const av_config_t *cfg, void (*fn)(void *arg, const char *ident), void *arg)
{
    static const char *const fixed[] = { "intake", "dispatcher", "cache", "errors" };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        fn(arg, fixed[i]);
    each_daemon_t e = { fn, arg };
    ctl_each_querier(cfg, each_querier_ident, &e);
    if (cfg->http.enabled) /* availd-http runs when the file has an http section */
        fn(arg, "http");
}

void
ctl_needs_restart(const msgpack_object *body, char *out, size_t size)
{
    const msgpack_object *list = av_obj_get(body, "needs_restart");
    out[0] = '\0';
    if (!list || list->type != MSGPACK_OBJECT_ARRAY || list->via.array.size == 0)
        return;
    size_t n = (size_t)snprintf(out, size, "needs restart:");
    for (uint32_t i = 0; i < list->via.array.size && n < size; i++) {
        const msgpack_object *key = &list->via.array.ptr[i];
        if (key->type == MSGPACK_OBJECT_STR)
            n += (size_t)snprintf(out + n, size - n, "%s %.*s", i ? "," : "", (int)key->via.str.size,
                                  key->via.str.ptr);
    }
}
