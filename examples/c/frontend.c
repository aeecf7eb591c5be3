/* A C frontend of availd: the four ways in (proto/README.md), with the
 * installed wire API <availd/av_proto.h> and CZMQ.
 *
 *   frontend [-r ROUTER] [-p PULL] [-s RESULTS] [-g HOST:PORT] MODE NAME...
 *
 * MODE: check (request-reply, a request per name), batch (request-reply,
 * one request for up to 1,000 names), push (subscribe, then push) or
 * gateway (the TCP line gateway). Prints one line per name:
 * NAME STATUS [REASON]. The defaults are the shipped availd.yaml's
 * endpoints. Build: make (pkg-config availd-proto libczmq), see README.md.
 */
#include <availd/av_proto.h>

#include <czmq.h>
#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long to wait for an answer: intake's default deadline (10 s) and a
 * margin. A frontend that must not lose answers asks again with the same
 * id when this passes (clients/python does). */
#define WAIT_MS 30000

static void
print_answer(const av_answer_t *a)
{
    av_str_t name = a->name.len ? a->name : a->query;
    printf("%.*s %s", (int)name.len, name.ptr, av_status_name(a->status));
    if (a->reason.len)
        printf(" %.*s", (int)a->reason.len, a->reason.ptr);
    printf("\n");
}

/* Prints the answer or answers one reply holds; returns how many. */
static int
print_reply(zframe_t *reply)
{
    av_msg_t msg;
    av_msg_init(&msg);
    int rc = av_msg_decode(&msg, zframe_data(reply), zframe_size(reply)), n = 0;
    if (rc != 0) {
        char why[128];
        fprintf(stderr, "frontend: unreadable reply: %s\n", av_msg_strerror(&msg, rc, why, sizeof why));
    } else if (msg.type == AV_MSG_ANSWER) {
        print_answer(&msg.u.answer);
        n = 1;
    } else if (msg.type == AV_MSG_ANSWERS) { /* a batch: every answer, in request order */
        for (uint32_t i = 0; i < msg.u.answers.count; i++) {
            av_answer_t a;
            av_answers_at(&msg.u.answers, i, &a);
            print_answer(&a);
        }
        n = (int)msg.u.answers.count;
    } else {
        fprintf(stderr, "frontend: a %s where an answer was due\n", av_msg_type_name(msg.type));
    }
    av_msg_release(&msg);
    return n;
}

/* Request-reply on intake's ROUTER: one `answer` per name (check), or one
 * `answers` per request of up to AV_BATCH_MAX names (batch). */
static int
request_reply(const char *router, bool batch, char **names, int n)
{
    zsock_t *dealer = zsock_new_dealer(router);
    if (!dealer) {
        fprintf(stderr, "frontend: cannot connect to %s\n", router);
        return -1;
    }
    zsock_set_rcvtimeo(dealer, WAIT_MS);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    av_str_t views[AV_BATCH_MAX];
    int done = 0;
    while (done < n) {
        char id[64];
        snprintf(id, sizeof id, "c-%d-%d", (int)getpid(), done);
        av_check_t check = { .id = av_str(id) };
        int count = batch ? (n - done < AV_BATCH_MAX ? n - done : AV_BATCH_MAX) : 1;
        if (batch) {
            for (int i = 0; i < count; i++)
                views[i] = av_str(names[done + i]);
            check.name_views = views;
            check.n_names = (uint32_t)count;
        } else {
            check.name = av_str(names[done]);
        }
        msgpack_sbuffer_clear(&sbuf);
        if (av_encode_check(&sbuf, &check) != 0 || zsock_send(dealer, "b", sbuf.data, sbuf.size) != 0)
            break;
        zframe_t *reply = zframe_recv(dealer);
        if (!reply) {
            fprintf(stderr, "frontend: no reply within %d ms\n", WAIT_MS);
            break;
        }
        int printed = print_reply(reply);
        zframe_destroy(&reply);
        if (printed == 0)
            break;
        done += count;
    }
    msgpack_sbuffer_destroy(&sbuf);
    zsock_destroy(&dealer);
    return done == n ? 0 : -1;
}

/* Is this frame {t: "pong", ...}? (A message av_proto does not decode.) */
static bool
is_pong(zframe_t *frame)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    av_str_t t;
    bool pong = msgpack_unpack_next(&up, (const char *)zframe_data(frame), zframe_size(frame), NULL) ==
                    MSGPACK_UNPACK_SUCCESS &&
                av_obj_get_str(&up.data, "t", &t) && av_str_eq(t, "pong");
    msgpack_unpacked_destroy(&up);
    return pong;
}

/* Push + subscribe: answers come on the PUB socket as [id][answer], each
 * as soon as it is final. Subscribe first, and ping until the pong comes
 * back (ZeroMQ's slow joiner), or the first answers are lost. */
static int
push_subscribe(const char *pull, const char *results, char **names, int n)
{
    char id[64];
    snprintf(id, sizeof id, "c-push-%d", (int)getpid());
    zsock_t *sub = zsock_new_sub(results, id);
    zsock_t *push = zsock_new_push(pull);
    if (!sub || !push) {
        fprintf(stderr, "frontend: cannot connect to %s or %s\n", pull, results);
        zsock_destroy(&sub);
        zsock_destroy(&push);
        return -1;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    av_pack_kv_str(&pk, "t", "ping");
    av_pack_kv_uint(&pk, "v", AV_PROTO_VERSION);
    av_pack_kv_str(&pk, "id", id);
    zsock_set_rcvtimeo(sub, 100);
    bool ready = false;
    for (int tries = 0; tries < WAIT_MS / 100 && !ready; tries++) {
        zsock_send(push, "b", sbuf.data, sbuf.size);
        zmsg_t *m = zmsg_recv(sub);
        ready = m && zmsg_size(m) == 2 && is_pong(zmsg_last(m));
        zmsg_destroy(&m);
    }
    int got = 0;
    if (!ready) {
        fprintf(stderr, "frontend: no pong from intake\n");
        got = -1;
    }
    /* The names, AV_BATCH_MAX to a message; each name's answer comes alone. */
    av_str_t views[AV_BATCH_MAX];
    for (int done = 0; ready && done < n;) {
        int count = n - done < AV_BATCH_MAX ? n - done : AV_BATCH_MAX;
        for (int i = 0; i < count; i++)
            views[i] = av_str(names[done + i]);
        av_check_t check = { .id = av_str(id), .name_views = views, .n_names = (uint32_t)count };
        msgpack_sbuffer_clear(&sbuf);
        av_encode_check(&sbuf, &check);
        zsock_send(push, "b", sbuf.data, sbuf.size);
        done += count;
    }
    zsock_set_rcvtimeo(sub, WAIT_MS);
    while (ready && got < n) {
        zmsg_t *m = zmsg_recv(sub);
        if (!m) {
            fprintf(stderr, "frontend: %d of %d answers within %d ms\n", got, n, WAIT_MS);
            break;
        }
        zframe_t *body = zmsg_last(m);
        if (zmsg_size(m) == 2 && !is_pong(body)) /* a late pong of an extra ping */
            got += print_reply(body);
        zmsg_destroy(&m);
    }
    msgpack_sbuffer_destroy(&sbuf);
    zsock_destroy(&push);
    zsock_destroy(&sub);
    return got == n ? 0 : -1;
}

/* The TCP line gateway: NAME\r\n in, NAME STATUS [REASON]\r\n out, then
 * the server closes. A connection per name. */
static int
gateway(const char *hostport, char **names, int n)
{
    char host[256];
    snprintf(host, sizeof host, "%s", hostport);
    char *port = strrchr(host, ':');
    if (!port)
        return -1;
    *port++ = '\0';
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        int fd = socket(ai->ai_family, ai->ai_socktype, 0);
        struct timeval tv = { .tv_sec = WAIT_MS / 1000 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            fprintf(stderr, "frontend: gateway %s: %s\n", hostport, strerror(errno));
            if (fd >= 0)
                close(fd);
            rc = -1;
            break;
        }
        char line[2048];
        int len = snprintf(line, sizeof line, "%s\r\n", names[i]);
        size_t got = 0;
        ssize_t r = -1;
        if (len < (int)sizeof line && write(fd, line, (size_t)len) == len)
            while (got < sizeof line - 1 && (r = read(fd, line + got, sizeof line - 1 - got)) > 0)
                got += (size_t)r;
        close(fd);
        if (r != 0) { /* the server closes after its line */
            fprintf(stderr, "frontend: no line from the gateway for %s\n", names[i]);
            rc = -1;
        }
        line[got] = '\0';
        line[strcspn(line, "\r\n")] = '\0';
        if (got)
            printf("%s\n", line);
    }
    freeaddrinfo(ai);
    return rc;
}

int
main(int argc, char **argv)
{
    const char *router = "ipc:///run/availd/intake.sock", *pull = "ipc:///run/availd/intake-pull.sock",
               *results = "ipc:///run/availd/intake-results.sock", *gw = "127.0.0.1:4300";
    int opt;
    while ((opt = getopt(argc, argv, "r:p:s:g:")) != -1) {
        switch (opt) {
        case 'r': router = optarg; break;
        case 'p': pull = optarg; break;
        case 's': results = optarg; break;
        case 'g': gw = optarg; break;
        default: goto usage;
        }
    }
    if (argc - optind < 2)
        goto usage;
    const char *mode = argv[optind];
    char **names = argv + optind + 1;
    int n = argc - optind - 1, rc;
    if (streq(mode, "check") || streq(mode, "batch"))
        rc = request_reply(router, streq(mode, "batch"), names, n);
    else if (streq(mode, "push"))
        rc = push_subscribe(pull, results, names, n);
    else if (streq(mode, "gateway"))
        rc = gateway(gw, names, n);
    else
        goto usage;
    return rc == 0 ? 0 : 1;
usage:
    fprintf(stderr, "usage: frontend [-r ROUTER] [-p PULL] [-s RESULTS] [-g HOST:PORT] check|batch|push|gateway NAME...\n");
    return 2;
}
