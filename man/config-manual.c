/* Writes availd.yaml(5) from the config loader's own key table
 * (av_config_keys: every key, its type, default and range), the
 * descriptions in man/availd.yaml.keys, and what each daemon applies only at
 * start (`availd-NAME --restart-keys`), so the page cannot drift from what
 * the loader accepts.
 *
 *   config-manual --check KEYS_FILE
 *       exit 1 naming every key the loader accepts that KEYS_FILE does not
 *       describe, and every description of a key it does not accept
 *   config-manual KEYS_FILE VERSION DAEMON=RESTART_KEYS_FILE... > availd.yaml.5
 */
#include "av_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS_MAX 1024
#define LINE_MAX_BYTES 4096

typedef struct {
    char *key;
    char *text;      /* roff-ready lines */
    int used;
} description_t;

static description_t descriptions[KEYS_MAX];
static size_t n_descriptions;

/* The keys file: a key at the start of a line, its description on the
 * indented lines after it (keys on consecutive lines share it); '#' lines
 * are comments. */
static int
read_descriptions(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    char line[LINE_MAX_BYTES];
    description_t *cur = NULL;
    size_t group = 0;        /* keys on consecutive lines share the description after them */
    unsigned lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (line[0] != ' ' && line[0] != '\t') {
            if (n_descriptions == KEYS_MAX) {
                fprintf(stderr, "%s:%u: more than %d keys\n", path, lineno, KEYS_MAX);
                fclose(f);
                return -1;
            }
            if (!cur || *cur->text)
                group = n_descriptions;
            cur = &descriptions[n_descriptions++];
            cur->key = strdup(line);
            cur->text = strdup("");
            continue;
        }
        if (!cur) {
            fprintf(stderr, "%s:%u: a description before any key\n", path, lineno);
            fclose(f);
            return -1;
        }
        const char *s = line + strspn(line, " \t");
        for (size_t i = group; i < n_descriptions; i++) {
            description_t *d = &descriptions[i];
            size_t old = strlen(d->text);
            char *grown = realloc(d->text, old + strlen(s) + 4);
            if (!grown) {
                fclose(f);
                return -1;
            }
            d->text = grown;
            /* A line that starts with a roff control character is text. */
            sprintf(d->text + old, "%s%s\n", (s[0] == '.' || s[0] == '\'') ? "\\&" : "", s);
        }
    }
    fclose(f);
    return 0;
}

static description_t *
find_description(const char *key)
{
    for (size_t i = 0; i < n_descriptions; i++)
        if (strcmp(descriptions[i].key, key) == 0)
            return &descriptions[i];
    return NULL;
}

/* ---- --check ---- */

typedef struct {
    const char *keys_file;
    int missing;
} check_t;

static void
check_key(const av_config_key_t *key, void *arg)
{
    check_t *c = arg;
    description_t *d = find_description(key->path);
    if (d) {
        d->used = 1;
        return;
    }
    fprintf(stderr, "config key '%s' (%s) has no description: add a line '%s' and its indented description "
                    "to %s\n", key->path, key->type, key->path, c->keys_file);
    c->missing++;
}

/* ---- the page ---- */

typedef struct {
    char *daemon;
    char *keys[256];
    size_t n_keys;
} restart_list_t;

static restart_list_t restart_lists[16];
static size_t n_restart_lists;

static int
read_restart_list(const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq || n_restart_lists == 16) {
        fprintf(stderr, "config-manual: want DAEMON=FILE, not %s\n", arg);
        return -1;
    }
    restart_list_t *l = &restart_lists[n_restart_lists++];
    l->daemon = strndup(arg, (size_t)(eq - arg));
    FILE *f = fopen(eq + 1, "r");
    if (!f) {
        perror(eq + 1);
        return -1;
    }
    char line[512];
    while (fgets(line, sizeof line, f) && l->n_keys < 256) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0])
            l->keys[l->n_keys++] = strdup(line);
    }
    fclose(f);
    return 0;
}

/* Escapes a value for roff: backslashes, and a leading dot. */
static void
put_text(const char *s)
{
    if (s[0] == '.' || s[0] == '\'')
        fputs("\\&", stdout);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", stdout);
        else if (*s == '-')
            fputs("\\-", stdout);
        else
            putchar(*s);
    }
}

static void
page_key(const av_config_key_t *key, void *arg)
{
    (void)arg;
    description_t *d = find_description(key->path);
    printf(".TP\n.B ");
    put_text(key->path);
    printf("\n");
    printf("\\fI%s\\fR", key->type);
    if (key->required)
        printf(", required");
    if (*key->range_text) {
        printf(" (");
        put_text(key->range_text);
        printf(")");
    }
    if (!key->section) {
        printf("; default: ");
        if (*key->default_text) {
            printf("\\fB");
            put_text(key->default_text);
            printf("\\fR");
        } else {
            printf("none");
        }
        /* Which daemons keep their running value until restarted. */
        char who[256] = "";
        for (size_t i = 0; i < n_restart_lists; i++)
            for (size_t k = 0; k < restart_lists[i].n_keys; k++)
                if (strcmp(restart_lists[i].keys[k], key->path) == 0 || strcmp(restart_lists[i].keys[k], "*") == 0) {
                    size_t used = strlen(who);
                    snprintf(who + used, sizeof who - used, "%savaild-%s", used ? ", " : "", restart_lists[i].daemon);
                    break;
                }
        if (*who)
            printf("; reload: needs a restart of %s", who);
        else
            printf("; reload: applies at once");
    }
    printf(".\n.br\n");
    if (d)
        fputs(d->text, stdout);
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--check") == 0) {
        if (read_descriptions(argv[2]) < 0)
            return 2;
        check_t c = { argv[2], 0 };
        if (av_config_keys(check_key, &c) < 0)
            return 2;
        int stale = 0;
        for (size_t i = 0; i < n_descriptions; i++)
            if (!descriptions[i].used) {
                fprintf(stderr, "%s describes '%s', which the loader does not accept: remove it or fix its path\n",
                        argv[2], descriptions[i].key);
                stale++;
            }
        return c.missing || stale ? 1 : 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: config-manual --check KEYS_FILE\n"
                        "       config-manual KEYS_FILE VERSION DAEMON=RESTART_KEYS_FILE... > availd.yaml.5\n");
        return 2;
    }
    if (read_descriptions(argv[1]) < 0)
        return 2;
    for (int i = 3; i < argc; i++)
        if (read_restart_list(argv[i]) < 0)
            return 2;
    check_t c = { argv[1], 0 };
    if (av_config_keys(check_key, &c) < 0 || c.missing)
        return 1;
    printf(".\\\" Made by man/config-manual from the config loader's key table and\n"
           ".\\\" man/availd.yaml.keys: edit those, not this page.\n"
           ".TH AVAILD.YAML 5 \"\" \"availd %s\" \"availd\"\n"
           ".SH NAME\navaild.yaml \\- configuration of the availd daemons and availctl\n"
           ".SH DESCRIPTION\n"
           "Every availd daemon and\n.BR availctl (1)\nread one YAML file,\n"
           ".I /etc/availd/availd.yaml\n(or the file given with\n.BR \\-c ,\nor\n.BR $AVAILD_CONFIG ).\n"
           "A key the loader does not know, a value of the wrong type or out of its range is refused\n"
           "with the file, line and column it is about; a daemon started with\n.B \\-n\n"
           "or\n.B availctl config check\nsays so without starting anything.\n"
           ".PP\nOn a reload (SIGHUP or\n.BR \"availctl reload\" )\nthe whole file is read and checked first and\n"
           "refused as a whole when it is bad.\nA key marked\n.I \"needs a restart\"\n"
           "keeps its running value in the named daemons until they restart\n(\n.B availctl reload\nand\n"
           ".B availctl status\nshow it as\n.IR \"needs restart: KEY\" );\nevery other key applies at once.\n"
           ".PP\nIn a key's path,\n.I NAME\nstands for a registry's or a querier group's name.\n"
           "Relative paths are taken from\n.B state_dir\n(databases) or\n.B runtime_dir\n"
           "(pid files, ipc:// sockets), and the file names of the top level from the directory of the\n"
           "file itself.\n.SH KEYS\n",
           argv[2]);
    if (av_config_keys(page_key, NULL) < 0)
        return 2;
    printf(".SH SEE ALSO\n.BR availd (7),\n.BR availctl (1),\n.BR availd-intake (8),\n.BR availd-dispatcher (8),\n"
           ".BR availd-querier (8),\n.BR availd-cache (8),\n.BR availd-errors (8)\n");
    return 0;
}
