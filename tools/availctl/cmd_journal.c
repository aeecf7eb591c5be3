/* availctl journal salvage: what can still be read of a damaged request
 * journal, in a new one. intake refuses to start on a damaged journal (it
 * holds accepted requests: neither to be lost quietly nor answered twice);
 * this moves the file aside and copies every record intake's own decoder
 * still reads into a new journal (journal_salvage), for intake to ask
 * again. Only while intake is stopped. */
#include "availctl.h"

#include "av_daemon.h"
#include "journal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static void
print_salvage(const ctl_t *ctl, const av_config_t *cfg, const journal_salvage_t *s)
{
    if (ctl->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:b, s:b}", "journal", cfg->intake.journal,
                              "damage", s->damage, "moved_to", s->aside, "saved", (json_int_t)s->saved, "lost",
                              (json_int_t)s->lost, "unreadable", (json_int_t)s->unreadable, "pages_lost",
                              (json_int_t)s->pages_lost, "lost_counted", s->counted, "one_meta_garbage",
                              s->one_meta_garbage);
        ctl_print_json(j);
        return;
    }
    printf("the journal in %s was damaged: %s\n", cfg->intake.journal, s->damage);
    printf("moved it aside to %s\n", s->aside);
    printf("saved %llu requests into a new journal", (unsigned long long)s->saved);
    if (s->counted)
        printf("; lost %llu of the %llu it held", (unsigned long long)s->lost,
               (unsigned long long)(s->saved + s->lost));
    else
        printf("; lost: how many is unknown (%s)", s->unread);
    if (s->unreadable || s->pages_lost)
        printf(" (%llu records unreadable, %llu pages past its end or damaged)", (unsigned long long)s->unreadable,
               (unsigned long long)s->pages_lost);
    printf("\n");
    if (s->one_meta_garbage)
        printf("one of its meta pages was garbage: read as of the commit before the last, so a request "
               "answered just before the damage may be answered again\n");
    printf("start intake again: it asks the saved requests again\n");
}

int
cmd_journal(ctl_t *ctl, int argc, char **argv)
{
    char lock[PATH_MAX], why[512];
    pid_t holder = 0;
    journal_salvage_t salvage;
    if (argc != 2 || strcmp(argv[1], "salvage") != 0)
        return ctl_command_usage(argv[0]);
    const av_config_t *cfg = ctl_config(ctl);
    if (!cfg)
        return EXIT_USAGE;
    if (!cfg->intake.journal[0]) {
        fprintf(stderr, "availctl journal: intake.journal is \"\": there is no journal\n");
        return EXIT_NEGATIVE;
    }
    /* Not under a running intake: it has the file mapped, and writes it. */
    int held = av_daemon_lock_path(cfg, "intake", lock, sizeof lock) < 0 ? -ENAMETOOLONG
                                                                         : av_lock_holder(lock, &holder);
    if (held < 0) {
        fprintf(stderr, "availctl journal: cannot tell whether availd-intake runs: %s: %s\n", lock, strerror(-held));
        return EXIT_USAGE;
    }
    if (held) {
        fprintf(stderr, "availctl journal: availd-intake runs (pid %d): stop it first (availctl -c %s stop intake)\n",
                (int)holder, ctl->config_path);
        return EXIT_NEGATIVE;
    }
    int rc = journal_salvage(&cfg->intake, &salvage, why, sizeof why);
    if (rc == 1) {
        printf("%s\n", why);
        return EXIT_NEGATIVE;
    }
    if (rc < 0) {
        fprintf(stderr, "availctl journal salvage: %s\n", why);
        return EXIT_USAGE;
    }
    print_salvage(ctl, cfg, &salvage);
    return EXIT_OK;
}
