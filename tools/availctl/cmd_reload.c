/* availctl reload [DAEMON...]: every daemon (or those named) re-reads the
 * configuration, as on SIGHUP. A daemon refusing the new file keeps its
 * old one and says why; exit 1 when any refused (or did not answer). A
 * setting a daemon applies only at start is listed as "needs restart: KEY"
 * (the daemon keeps running on its old value; not a failure). A
 * daemon not running is listed and skipped: a registry just added has no
 * querier yet, and a stopped one reads the file when it starts. */
#include "availctl.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    ctl_t *ctl;
    int failed;
} reload_walk_t;

static void
reload_one(void *arg, const char *ident)
{
    reload_walk_t *w = arg;
    ctl_reply_t reply;
    if (w->ctl->json) {
        int rc = ctl_call_simple(w->ctl, ident, "reload", &reply);
        bool not_running = rc != 0 && strncmp(reply.err, "not running", 11) == 0;
        json_t *j = json_pack("{s:s, s:s}", "ident", ident, "state",
                              rc == 0 ? "reloaded" : not_running ? "not running" : "not reloaded");
        if (rc == 0) {
            char pending[1024];
            ctl_needs_restart(reply.body, pending, sizeof pending);
            if (pending[0])
                json_object_set_new(j, "needs_restart", json_string(pending));
        } else {
            json_object_set_new(j, "error", json_string(reply.err));
            w->failed += !not_running;
        }
        ctl_print_json(j);
        ctl_reply_release(&reply);
        return;
    }
    if (ctl_call_simple(w->ctl, ident, "reload", &reply) == 0) {
        char pending[1024];
        ctl_needs_restart(reply.body, pending, sizeof pending);
        printf("%-24s reloaded%s%s\n", ident, pending[0] ? "; " : "", pending);
    } else if (strncmp(reply.err, "not running", 11) == 0) {
        printf("%-24s %s\n", ident, reply.err);
    } else {
        printf("%-24s NOT reloaded: %s\n", ident, reply.err);
        w->failed++;
    }
    ctl_reply_release(&reply);
}

int
cmd_reload(ctl_t *ctl, int argc, char **argv)
{
    /* The file is checked here first: a typo is reported once, with its
     * line, instead of once per daemon. */
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg)
        return EXIT_NEGATIVE;
    reload_walk_t w = { ctl, 0 };
    if (argc > 1)
        for (int i = 1; i < argc; i++)
            reload_one(&w, argv[i]);
    else
        ctl_each_daemon(cfg, reload_one, &w);
    return w.failed ? EXIT_NEGATIVE : EXIT_OK;
}
