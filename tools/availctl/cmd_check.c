/* availctl check NAME... | -f FILE | - [--fresh] [--raw] [--json] [--deadline MS]
 * Asks intake (request-reply) and prints one line per name: name, status,
 * source, registry, latency, reason. Names from a file or stdin (one a
 * line; blank lines and # comments skipped) go in batches of 1,000, with a
 * progress bar on stderr when it is a terminal, and a summary at the end. Exit 0 when every name got a definite
 * answer (available, registered, reserved), 1 when any is unknown or
 * invalid, 2 on usage or connection errors. */
#include "availctl.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

/* Answers per status, for the summary of a list. */
typedef struct {
    uint64_t by_status[8];
    uint64_t total;
} tally_t;

static int
ask(ctl_t *ctl, zsock_t *s, char **names, int n, bool fresh, bool raw, uint32_t deadline_ms, int *unknown,
    tally_t *tally)
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
        tally->by_status[msg.u.answer.status & 7]++;
        tally->total++;
    } else if (rc == 0 && msg.type == AV_MSG_ANSWERS) {
        for (uint32_t i = 0; i < msg.u.answers.count; i++) {
            av_answer_t a;
            av_answers_at(&msg.u.answers, i, &a);
            print_answer(ctl, &a, &msg.u.answers.list->via.array.ptr[i]);
            *unknown += !definite(a.status);
            tally->by_status[a.status & 7]++;
            tally->total++;
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

#define LINE_MAX_BYTES 1024 /* a name is at most 253 bytes; longer lines are sent as they are, cut */

/* Reads up to max names from f into names (strdup'd); returns how many. */
static int
read_names(FILE *f, char **names, int max)
{
    char line[LINE_MAX_BYTES];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') /* the rest of an overlong line */
                ;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        len = strcspn(p, "\r\n");
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        p[len] = '\0';
        if (len == 0 || p[0] == '#')
            continue;
        if (!(names[n] = strdup(p)))
            break;
        n++;
    }
    return n;
}

static void
progress(uint64_t done, uint64_t total)
{
    if (total) {
        int width = 40, filled = (int)(done * (uint64_t)width / total);
        fprintf(stderr, "\r[%.*s%*s] %llu/%llu", filled, "########################################",
                width - filled, "", (unsigned long long)done, (unsigned long long)total);
    } else {
        fprintf(stderr, "\r%llu names", (unsigned long long)done);
    }
    fflush(stderr);
}

/* Lines of a regular file, for the progress bar's total; 0 when unknown. */
static uint64_t
count_lines(FILE *f)
{
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    uint64_t lines = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        lines += c == '\n';
    rewind(f);
    return lines;
}

int
cmd_check(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "fresh", no_argument, NULL, 'R' },    { "raw", no_argument, NULL, 'r' },
        { "json", no_argument, NULL, 'j' },     { "deadline", required_argument, NULL, 'd' },
        { "file", required_argument, NULL, 'f' }, { NULL, 0, NULL, 0 },
    };
    bool fresh = false, raw = false;
    long deadline_ms = DEFAULT_DEADLINE_MS;
    const char *file = NULL;
    int opt;
    optind = 0; /* 0, not 1: glibc then forgets the main parser's "+" mode */
    while ((opt = getopt_long(argc, argv, "f:rjd:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'R': fresh = true; break;
        case 'f': file = optarg; break;
        case 'r': raw = true; break;
        case 'j': ctl->json = true; break;
        case 'd': deadline_ms = atol(optarg); break;
        default: return ctl_command_usage(argv[0]);
        }
    }
    if (!file && optind == argc - 1 && strcmp(argv[optind], "-") == 0)
        file = "-", optind++;
    if ((optind >= argc) == !file || deadline_ms <= 0 || deadline_ms > 600000)
        return ctl_command_usage(argv[0]);
    FILE *in = NULL;
    if (file) {
        in = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
        if (!in) {
            fprintf(stderr, "availctl: %s: %s\n", file, strerror(errno));
            return EXIT_USAGE;
        }
    }
    if (!ctl_config(ctl)) {
        if (in && in != stdin)
            fclose(in);
        return EXIT_USAGE;
    }
    zsock_t *s = ctl_connect(ctl, ZMQ_DEALER, ctl->cfg->endpoints.intake_router);
    if (!s) {
        if (in && in != stdin)
            fclose(in);
        return EXIT_USAGE;
    }
    int unknown = 0, rc = EXIT_OK;
    tally_t tally = { { 0 }, 0 };
    if (!in) {
        char **names = argv + optind;
        int n = argc - optind;
        for (int off = 0; off < n && rc == EXIT_OK; off += AV_BATCH_MAX) {
            int chunk = n - off < AV_BATCH_MAX ? n - off : AV_BATCH_MAX;
            rc = ask(ctl, s, names + off, chunk, fresh, raw, (uint32_t)deadline_ms, &unknown, &tally);
        }
    } else {
        /* A batch at a time: memory stays bounded however long the list. */
        char **names = calloc(AV_BATCH_MAX, sizeof *names);
        uint64_t total = count_lines(in);
        bool bar = isatty(STDERR_FILENO) && (total == 0 || total > AV_BATCH_MAX);
        int n;
        while (names && rc == EXIT_OK && (n = read_names(in, names, AV_BATCH_MAX)) > 0) {
            rc = ask(ctl, s, names, n, fresh, raw, (uint32_t)deadline_ms, &unknown, &tally);
            for (int i = 0; i < n; i++)
                free(names[i]);
            if (bar)
                progress(tally.total, total);
        }
        if (bar)
            fprintf(stderr, "\n");
        free(names);
        if (in != stdin)
            fclose(in);
        if (rc == EXIT_OK && ctl->json) {
            json_t *sum = json_pack("{s:I}", "names", (json_int_t)tally.total);
            for (int st = 0; st < 8; st++)
                if (tally.by_status[st])
                    json_object_set_new(sum, av_status_name((av_status_t)st), json_integer((json_int_t)tally.by_status[st]));
            ctl_print_json(json_pack("{s:o}", "summary", sum));
        } else if (rc == EXIT_OK) {
            printf("%llu names:", (unsigned long long)tally.total);
            const char *sep = " ";
            for (int st = 0; st < 8; st++)
                if (tally.by_status[st]) {
                    printf("%s%llu %s", sep, (unsigned long long)tally.by_status[st], av_status_name((av_status_t)st));
                    sep = ", ";
                }
            printf("\n");
        }
    }
    zsock_destroy(&s);
    if (rc != EXIT_OK)
        return rc;
    return unknown ? EXIT_NEGATIVE : EXIT_OK;
}
