/* The control endpoint every daemon answers on: `status` (name, version,
 * uptime, counters, gauges), `reload`, and the daemon's own commands. */
#include "av_daemon_internal.h"

#include <string.h>
#include <unistd.h>

#ifndef AVAILD_VERSION
#define AVAILD_VERSION "0"
#endif

static void
pack_status(av_daemon_t *d, msgpack_packer *pk)
{
    av_pack_ctl_reply_begin(pk, true, NULL, 12);
    av_pack_kv_str(pk, "daemon", d->hooks->name);
    av_pack_kv_str(pk, "instance", d->instance);
    av_pack_kv_str(pk, "ident", d->ident);
    av_pack_kv_str(pk, "version", AVAILD_VERSION);
    av_pack_kv_uint(pk, "pid", (uint64_t)getpid());
    av_pack_kv_uint(pk, "uptime_s", (av_mono_us() - d->started_mono_us) / 1000000);
    av_pack_kv_uint(pk, "started_at", d->started_ms);
    av_pack_kv_str(pk, "state", d->stopping ? "stopping" : "running");
    av_pack_kv_str(pk, "status", d->status_text);
    av_daemon_pack_needs_restart(d, pk);
    av_pack_str(pk, "counters");
    msgpack_pack_map(pk, d->n_counters);
    for (uint32_t i = 0; i < d->n_counters; i++)
        av_pack_kv_uint(pk, d->counters[i].name, d->counters[i].value);
    av_pack_str(pk, "gauges");
    msgpack_pack_map(pk, d->n_gauges);
    for (uint32_t i = 0; i < d->n_gauges; i++)
        av_pack_kv_uint(pk, d->gauges[i].name, d->gauges[i].fn(d));
}

static bool
on_control(av_daemon_t *d, zsock_t *sock, void *arg)
{
    (void)arg;
    av_envelope_t env;
    zframe_t *body = av_router_recv(sock, &env);
    if (!body && !env.identity)
        return false;
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    av_msg_t msg;
    char err[AV_CONFIG_ERR_MAX] = "";
    int rc = -1;

    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    av_msg_init(&msg);
    if (!body) {
        snprintf(err, sizeof err, "empty request");
    } else if ((rc = av_msg_decode(&msg, zframe_data(body), zframe_size(body))) != 0) {
        av_msg_strerror(&msg, rc, err, sizeof err);
        rc = -1;
    } else if (msg.type != AV_MSG_CTL) {
        snprintf(err, sizeof err, "not a control request (t=%s)", av_msg_type_name(msg.type));
        rc = -1;
    } else if (av_str_eq(msg.u.ctl.cmd, "status")) {
        pack_status(d, &pk);
        rc = 0;
    } else if (av_str_eq(msg.u.ctl.cmd, "reload")) {
        rc = av_daemon_reload(d, err, sizeof err);
        if (rc == 0) {
            av_pack_ctl_reply_begin(&pk, true, NULL, 1);
            av_daemon_pack_needs_restart(d, &pk);
        }
    } else {
        rc = -1;
        snprintf(err, sizeof err, "unknown command '%.*s'", (int)msg.u.ctl.cmd.len, msg.u.ctl.cmd.ptr);
        for (uint32_t i = 0; i < d->n_commands; i++) {
            if (av_str_eq(msg.u.ctl.cmd, d->commands[i].name)) {
                err[0] = '\0';
                rc = d->commands[i].fn(d, msg.u.ctl.body, &pk, err, sizeof err);
                break;
            }
        }
    }
    if (rc < 0) {
        msgpack_sbuffer_clear(&sbuf);
        av_pack_ctl_reply_begin(&pk, false, err[0] ? err : "failed", 0);
    }
    av_router_send(sock, &env, sbuf.data, sbuf.size);
    av_msg_release(&msg);
    msgpack_sbuffer_destroy(&sbuf);
    zframe_destroy(&body);
    av_envelope_clear(&env);
    return true;
}

int
av_control_open(av_daemon_t *d)
{
    char endpoint[512];
    if (av_control_endpoint(d->cfg, d->ident, endpoint, sizeof endpoint) < 0) {
        av_log_err("control endpoint for %s too long", d->ident);
        return -1;
    }
    d->control = av_daemon_bind(d, ZMQ_ROUTER, endpoint);
    if (!d->control)
        return -1;
    /* A reply to an availctl that gave up waiting is dropped, not queued. */
    zsock_set_linger(d->control, 0);
    return av_daemon_watch(d, d->control, on_control, NULL);
}

void
av_control_close(av_daemon_t *d)
{
    if (d->control)
        av_daemon_unwatch(d, d->control);
    zsock_destroy(&d->control);
}
