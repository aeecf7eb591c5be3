/* Unit tests of the control endpoint every daemon answers on (av_control):
 * `status` with its counters and gauges, the daemon's own commands with
 * their arguments and their failures, `reload` refused and adopted, and a
 * clear error for every request it cannot read, each reply going back to
 * the requester that asked (a DEALER as availctl's, or a REQ). */
#include "unit_daemon.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

typedef struct {
    unit_daemon_t *u;
    char endpoint[PATH_MAX];
    zsock_t *client;
    zframe_t *reply_frame;
    av_msg_t reply;
    bool have_reply;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->u = unit_daemon_new("errors", "")))
        return -1;
    av_daemon_t *d = &f->u->d;
    if (av_control_endpoint(d->cfg, d->ident, f->endpoint, sizeof f->endpoint) < 0 || av_control_open(d) < 0)
        return -1;
    f->client = zsock_new(ZMQ_DEALER);
    if (!f->client || zsock_connect(f->client, "%s", f->endpoint) < 0)
        return -1;
    av_msg_init(&f->reply);
    *state = f;
    return 0;
}

static void
forget_reply(fixture_t *f)
{
    av_msg_release(&f->reply);
    av_msg_init(&f->reply);
    zframe_destroy(&f->reply_frame);
    f->have_reply = false;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    forget_reply(f);
    av_msg_release(&f->reply);
    zsock_destroy(&f->client);
    unit_daemon_destroy(&f->u);
    av_log_close();
    free(f);
    return 0;
}

static bool
readable(void *arg)
{
    return zsock_events(arg) & ZMQ_POLLIN;
}

/* Runs the daemon until `client` has a reply; returns its last frame, the
 * body (the others, the envelope, are checked by the caller). */
static zmsg_t *
wait_reply(fixture_t *f, zsock_t *client)
{
    if (!unit_daemon_run_until(f->u, readable, client, 2000))
        fail_msg("no reply within 2 s");
    zmsg_t *msg = zmsg_recv(client);
    assert_non_null(msg);
    return msg;
}

/* Sends body as availctl does and reads the reply into f->reply. */
static void
ask_raw(fixture_t *f, const void *body, size_t size)
{
    forget_reply(f);
    assert_int_equal(zsock_send(f->client, "b", body, size), 0);
    zmsg_t *msg = wait_reply(f, f->client);
    assert_int_equal(zmsg_size(msg), 1); /* no delimiter: none was sent */
    f->reply_frame = zmsg_pop(msg);
    zmsg_destroy(&msg);
    assert_int_equal(av_msg_decode(&f->reply, zframe_data(f->reply_frame), zframe_size(f->reply_frame)), 0);
    assert_int_equal(f->reply.type, AV_MSG_CTL_REPLY);
    f->have_reply = true;
}

static void
ask_sbuf(fixture_t *f, msgpack_sbuffer *req)
{
    ask_raw(f, req->data, req->size);
    msgpack_sbuffer_destroy(req);
}

/* `cmd` without arguments. */
static void
ask(fixture_t *f, const char *cmd)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    av_encode_ctl(&req, cmd);
    ask_sbuf(f, &req);
}

static const msgpack_object *
reply_body(fixture_t *f)
{
    return f->reply.u.ctl_reply.body;
}

static uint64_t
reply_uint(fixture_t *f, const char *key)
{
    uint64_t v = 0;
    if (!av_obj_get_uint(reply_body(f), key, &v))
        fail_msg("no unsigned '%s' in the reply", key);
    return v;
}

static void
assert_reply_str(fixture_t *f, const char *key, const char *want)
{
    av_str_t s;
    if (!av_obj_get_str(reply_body(f), key, &s))
        fail_msg("no string '%s' in the reply", key);
    if (!av_str_eq(s, want))
        fail_msg("%s: want \"%s\", got \"%.*s\"", key, want, (int)s.len, s.ptr);
}

/* The reply must be {ok: false, error: <contains want>} and nothing more. */
static void
assert_refused(fixture_t *f, const char *want)
{
    const av_ctl_reply_t *r = &f->reply.u.ctl_reply;
    assert_false(r->ok);
    if (!memmem(r->error.ptr, r->error.len, want, strlen(want)))
        fail_msg("error \"%.*s\" does not say \"%s\"", (int)r->error.len, r->error.ptr, want);
    assert_int_equal(reply_body(f)->via.map.size, 4); /* t, v, ok, error */
}

/* ---- status ------------------------------------------------------------- */

static uint64_t
gauge_42(av_daemon_t *d)
{
    (void)d;
    return 42;
}

static void
test_status_says_who_and_how_with_counters_and_gauges(void **state)
{
    fixture_t *f = *state;
    av_daemon_t *d = &f->u->d;
    *av_daemon_counter(d, "stored") = 7;
    assert_int_equal(av_daemon_gauge(d, "events_held", gauge_42), 0);
    snprintf(d->status_text, sizeof d->status_text, "recording");
    ask(f, "status");
    assert_true(f->reply.u.ctl_reply.ok);
    assert_reply_str(f, "daemon", "errors");
    assert_reply_str(f, "ident", "errors");
    assert_reply_str(f, "instance", "");
    assert_reply_str(f, "state", "running");
    assert_reply_str(f, "status", "recording");
    assert_int_equal(reply_uint(f, "pid"), (uint64_t)getpid());
    assert_int_equal(reply_uint(f, "started_at"), d->started_ms);
    assert_in_range(reply_uint(f, "uptime_s"), 0, 5);
    const msgpack_object *counters = av_obj_get(reply_body(f), "counters");
    const msgpack_object *gauges = av_obj_get(reply_body(f), "gauges");
    uint64_t v = 0;
    assert_true(av_obj_get_uint(counters, "stored", &v));
    assert_int_equal(v, 7);
    assert_true(av_obj_get_uint(counters, "reloads", &v));
    assert_int_equal(v, 0);
    assert_true(av_obj_get_uint(gauges, "events_held", &v));
    assert_int_equal(v, 42);
    assert_int_equal(gauges->via.map.size, 1);
}

static void
test_status_of_a_stopping_daemon_says_so(void **state)
{
    fixture_t *f = *state;
    f->u->d.stopping = true;
    ask(f, "status");
    assert_reply_str(f, "state", "stopping");
}

/* ---- the daemon's own commands ------------------------------------------ */

/* `echo` {name}: {ok, name}; without a name it fails, having packed half a
 * reply; `mute` fails without saying why. */
static int
cmd_echo(av_daemon_t *d, const msgpack_object *req, msgpack_packer *pk, char *err, size_t errlen)
{
    (void)d;
    av_str_t name;
    av_pack_ctl_reply_begin(pk, true, NULL, 1);
    if (!av_obj_get_str(req, "name", &name)) {
        snprintf(err, errlen, "missing 'name'");
        return -1;
    }
    av_pack_kv_strn(pk, "name", name);
    return 0;
}

static int
cmd_mute(av_daemon_t *d, const msgpack_object *req, msgpack_packer *pk, char *err, size_t errlen)
{
    (void)d;
    (void)req;
    (void)pk;
    (void)err;
    (void)errlen;
    return -1;
}

static void
ask_echo(fixture_t *f, const char *name)
{
    msgpack_sbuffer req;
    msgpack_packer pk;
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    av_pack_ctl_begin(&pk, "echo", name ? 1 : 0);
    if (name)
        av_pack_kv_str(&pk, "name", name);
    ask_sbuf(f, &req);
}

static void
test_a_daemon_command_gets_its_arguments_and_its_reply_goes_back(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(av_daemon_command(&f->u->d, "echo", cmd_echo), 0);
    ask_echo(f, "example.com");
    assert_true(f->reply.u.ctl_reply.ok);
    assert_reply_str(f, "name", "example.com");
}

static void
test_a_failed_command_answers_its_error_and_nothing_it_packed(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(av_daemon_command(&f->u->d, "echo", cmd_echo), 0);
    assert_int_equal(av_daemon_command(&f->u->d, "mute", cmd_mute), 0);
    ask_echo(f, NULL);
    assert_refused(f, "missing 'name'");
    ask(f, "mute");
    assert_refused(f, "failed");
}

static void
test_an_unknown_command_is_named_in_the_error(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(av_daemon_command(&f->u->d, "echo", cmd_echo), 0);
    ask(f, "ech");
    assert_refused(f, "unknown command 'ech'");
}

/* ---- requests it cannot read -------------------------------------------- */

static void
test_bytes_that_are_not_msgpack_are_refused_with_why(void **state)
{
    fixture_t *f = *state;
    ask_raw(f, "\xc1 status", 8);
    assert_refused(f, "not msgpack");
    ask_raw(f, "", 0);
    assert_refused(f, "not msgpack");
}

static void
test_a_message_that_is_no_control_request_is_refused_with_its_type(void **state)
{
    fixture_t *f = *state;
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    av_answer_t a = { .id = AV_STR("1"), .name = AV_STR("example.com"), .status = AV_STATUS_AVAILABLE };
    assert_int_equal(av_encode_answer(&req, &a), 0);
    ask_sbuf(f, &req);
    assert_refused(f, "not a control request (t=answer)");
}

static void
test_a_control_request_without_cmd_is_refused(void **state)
{
    fixture_t *f = *state;
    msgpack_sbuffer req;
    msgpack_packer pk;
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    av_pack_kv_str(&pk, "t", "ctl");
    av_pack_kv_uint(&pk, "v", 1);
    ask_sbuf(f, &req);
    assert_refused(f, "cmd");
}

/* ---- who gets the reply ------------------------------------------------- */

static void
test_a_req_client_gets_its_reply_behind_the_delimiter(void **state)
{
    fixture_t *f = *state;
    zsock_t *req = zsock_new(ZMQ_REQ);
    assert_non_null(req);
    assert_int_equal(zsock_connect(req, "%s", f->endpoint), 0);
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    av_encode_ctl(&body, "status");
    assert_int_equal(zsock_send(req, "b", body.data, body.size), 0);
    msgpack_sbuffer_destroy(&body);
    zmsg_t *msg = wait_reply(f, req); /* a REQ strips the delimiter itself */
    assert_int_equal(zmsg_size(msg), 1);
    zframe_t *frame = zmsg_first(msg);
    av_msg_t reply;
    av_msg_init(&reply);
    assert_int_equal(av_msg_decode(&reply, zframe_data(frame), zframe_size(frame)), 0);
    assert_true(reply.type == AV_MSG_CTL_REPLY && reply.u.ctl_reply.ok);
    av_msg_release(&reply);
    zmsg_destroy(&msg);
    zsock_destroy(&req);
}

static void
test_each_of_two_clients_gets_its_own_reply(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(av_daemon_command(&f->u->d, "echo", cmd_echo), 0);
    zsock_t *other = zsock_new(ZMQ_DEALER);
    assert_non_null(other);
    assert_int_equal(zsock_connect(other, "%s", f->endpoint), 0);
    msgpack_sbuffer req;
    msgpack_packer pk;
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    av_pack_ctl_begin(&pk, "echo", 1);
    av_pack_kv_str(&pk, "name", "other.example");
    assert_int_equal(zsock_send(other, "b", req.data, req.size), 0);
    msgpack_sbuffer_destroy(&req);
    ask_echo(f, "mine.example");
    assert_reply_str(f, "name", "mine.example");
    zmsg_t *msg = wait_reply(f, other);
    av_msg_t reply;
    av_msg_init(&reply);
    zframe_t *frame = zmsg_first(msg);
    assert_int_equal(av_msg_decode(&reply, zframe_data(frame), zframe_size(frame)), 0);
    av_str_t name;
    assert_true(av_obj_get_str(reply.u.ctl_reply.body, "name", &name));
    assert_true(av_str_eq(name, "other.example"));
    av_msg_release(&reply);
    zmsg_destroy(&msg);
    zsock_destroy(&other);
}

static void
test_a_client_that_left_before_its_reply_does_not_stop_the_next(void **state)
{
    fixture_t *f = *state;
    zsock_t *gone = zsock_new(ZMQ_DEALER);
    assert_non_null(gone);
    zsock_set_linger(gone, 1000);
    assert_int_equal(zsock_connect(gone, "%s", f->endpoint), 0);
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    av_encode_ctl(&req, "status");
    assert_int_equal(zsock_send(gone, "b", req.data, req.size), 0);
    msgpack_sbuffer_destroy(&req);
    zsock_destroy(&gone); /* lingers until the request is out, then goes */
    unit_daemon_run_for(f->u, 100);
    ask(f, "status");
    assert_true(f->reply.u.ctl_reply.ok);
}

/* ---- reload ------------------------------------------------------------- */

static int
reload_ok(av_daemon_t *d, const av_config_t *next)
{
    (void)d;
    (void)next;
    return 0;
}

static void
test_reload_of_a_bad_file_is_refused_with_where_and_the_old_config_stays(void **state)
{
    fixture_t *f = *state;
    av_daemon_t *d = &f->u->d;
    f->u->hooks.on_reload = reload_ok;
    const av_config_t *running = d->cfg;
    assert_int_equal(unit_write_file(f->u->config_path, "process:\n  log_level: [\n"), 0);
    ask(f, "reload");
    char where[PATH_MAX + 8];
    snprintf(where, sizeof where, "%s:", f->u->config_path);
    assert_refused(f, where);
    assert_ptr_equal(d->cfg, running);
    assert_int_equal(unit_daemon_counter(f->u, "reloads"), 1);
    assert_int_equal(unit_daemon_counter(f->u, "reloads_refused"), 1);
}

static void
test_reload_of_a_good_file_is_adopted(void **state)
{
    fixture_t *f = *state;
    av_daemon_t *d = &f->u->d;
    f->u->hooks.on_reload = reload_ok;
    assert_int_equal(unit_daemon_write_config(f->u, "errors:\n  retention_count: 1234\n"), 0);
    ask(f, "reload");
    assert_true(f->reply.u.ctl_reply.ok);
    assert_int_equal(d->cfg->errors.retention_count, 1234);
    assert_int_equal(unit_daemon_counter(f->u, "reloads"), 1);
    assert_int_equal(unit_daemon_counter(f->u, "reloads_refused"), 0);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_status_says_who_and_how_with_counters_and_gauges),
        T(test_status_of_a_stopping_daemon_says_so),
        T(test_a_daemon_command_gets_its_arguments_and_its_reply_goes_back),
        T(test_a_failed_command_answers_its_error_and_nothing_it_packed),
        T(test_an_unknown_command_is_named_in_the_error),
        T(test_bytes_that_are_not_msgpack_are_refused_with_why),
        T(test_a_message_that_is_no_control_request_is_refused_with_its_type),
        T(test_a_control_request_without_cmd_is_refused),
        T(test_a_req_client_gets_its_reply_behind_the_delimiter),
        T(test_each_of_two_clients_gets_its_own_reply),
        T(test_a_client_that_left_before_its_reply_does_not_stop_the_next),
        T(test_reload_of_a_bad_file_is_refused_with_where_and_the_old_config_stays),
        T(test_reload_of_a_good_file_is_adopted),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
