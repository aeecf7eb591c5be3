/* libFuzzer target for the config loader: av_config_load on any bytes must
 * load or refuse, never crash, leak or hang; a refusal says
 * "path:line:col: why" with a real line and column; a loaded config holds
 * what validation promises (TLDs, a query template with one name, an RDAP
 * base URL, a host for whois and DAS, patterns that compile).
 *
 * Input: availd.yaml, then other files after lines "#file: NAME" (NAME of
 * letters, digits, '.', '-', '_'), so that an input can include files of its
 * own and bring its own rdap-bootstrap.json. They are written into a
 * private mkdtemp directory, the process works in it, and while the loader
 * runs no file outside it can be opened (fopen and json_load_file are
 * wrapped at link time): an include of /etc/... or a bootstrap of /dev/...
 * is refused as unreadable instead of followed. */
#include "av_config.h"
#include "av_patterns.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FILES_MAX 8
#define FILE_NAME_MAX 32
#define MARKER "\n#file: "

static char dir[PATH_MAX];     /* the private directory, resolved */
static bool sandboxed;         /* the loader runs: only dir may be opened */

/* ---- the sandbox ----------------------------------------------------------- */

FILE *__real_fopen(const char *path, const char *mode);
FILE *__wrap_fopen(const char *path, const char *mode);
json_t *__real_json_load_file(const char *path, size_t flags, json_error_t *error);
json_t *__wrap_json_load_file(const char *path, size_t flags, json_error_t *error);

/* Inside dir, or not there at all (and then the real call fails too). */
static bool
allowed(const char *path)
{
    char real[PATH_MAX];
    if (!sandboxed || !realpath(path, real))
        return true;
    size_t n = strlen(dir);
    return strncmp(real, dir, n) == 0 && real[n] == '/';
}

FILE *
__wrap_fopen(const char *path, const char *mode)
{
    if (!allowed(path)) {
        errno = EACCES;
        return NULL;
    }
    return __real_fopen(path, mode);
}

json_t *
__wrap_json_load_file(const char *path, size_t flags, json_error_t *error)
{
    if (!allowed(path)) {
        if (error) {
            memset(error, 0, sizeof *error);
            snprintf(error->text, sizeof error->text, "unable to open %s: outside the fuzzer's directory", path);
        }
        return NULL;
    }
    return __real_json_load_file(path, flags, error);
}

static void
remove_dir(void)
{
    (void)!chdir("/");
    rmdir(dir); /* empty between runs */
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char made[PATH_MAX];
    snprintf(made, sizeof made, "%s/availd-fuzz-config.XXXXXX", tmp);
    if (!mkdtemp(made) || !realpath(made, dir) || chdir(dir) < 0) {
        perror("fuzz_config: private directory");
        exit(1);
    }
    atexit(remove_dir);
    return 0;
}

/* ---- one input ------------------------------------------------------------- */

typedef struct {
    char name[FILE_NAME_MAX + 1];
    const uint8_t *bytes;
    size_t len;
} part_t;

static bool
good_name(const uint8_t *s, size_t n)
{
    if (n == 0 || n > FILE_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '.' || s[i] == '-' || s[i] == '_'))
            return false;
    return true;
}

/* availd.yaml first, then each "#file: NAME" part; a part with a bad name
 * (or a second part of a name) is left out. */
static size_t
split(const uint8_t *data, size_t size, part_t *parts)
{
    size_t n = 1, mlen = strlen(MARKER);
    strcpy(parts[0].name, "availd.yaml");
    parts[0].bytes = data;
    parts[0].len = size;
    const uint8_t *end = data + size, *p = data;
    for (;;) {
        const uint8_t *m = memmem(p, (size_t)(end - p), MARKER, mlen);
        if (!m)
            break;
        part_t *cur = &parts[n - 1];
        cur->len = (size_t)(m - cur->bytes) + 1; /* its last line end stays */
        const uint8_t *name = m + mlen;
        const uint8_t *eol = memchr(name, '\n', (size_t)(end - name));
        size_t name_len = eol ? (size_t)(eol - name) : (size_t)(end - name);
        const uint8_t *body = eol ? eol + 1 : end;
        bool dup = false;
        for (size_t i = 0; i < n; i++)
            dup |= strlen(parts[i].name) == name_len && memcmp(parts[i].name, name, name_len) == 0;
        if (n < FILES_MAX && good_name(name, name_len) && !dup) {
            memcpy(parts[n].name, name, name_len);
            parts[n].name[name_len] = '\0';
            parts[n].bytes = body;
            parts[n].len = (size_t)(end - body);
            n++;
        } else {
            /* Not a file of its own: it stays in the one before. */
            cur->len = (size_t)(end - cur->bytes);
        }
        p = body;
    }
    return n;
}

static void
must(bool ok, const char *what, const char *err)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz_config: %s%s%s\n", what, err ? ": " : "", err ? err : "");
    abort();
}

/* "DIR/FILE:LINE:COL: why", LINE and COL from 1. */
static bool
located(const char *err)
{
    size_t n = strlen(dir);
    if (strncmp(err, dir, n) != 0 || err[n] != '/')
        return false;
    const char *colon = strchr(err + n + 1, ':');
    if (!colon)
        return false;
    char *after;
    unsigned long line = strtoul(colon + 1, &after, 10);
    if (after == colon + 1 || *after != ':' || line < 1)
        return false;
    const char *col_at = after + 1;
    unsigned long col = strtoul(col_at, &after, 10);
    return after != col_at && col >= 1 && after[0] == ':' && after[1] == ' ' && after[2] != '\0';
}

static void
check_loaded(const av_config_t *cfg)
{
    for (uint32_t i = 0; i < cfg->n_registries; i++) {
        const av_registry_cfg_t *r = &cfg->registries[i];
        must(r->name && r->tlds.count > 0, "a registry without a name or a TLD", r->name);
        for (uint32_t t = 0; t < r->tlds.count; t++) {
            const char *tld = r->tlds.items[t];
            must(*tld && tld[0] != '.' && strspn(tld, "abcdefghijklmnopqrstuvwxyz0123456789-.") == strlen(tld),
                 "a TLD that is not lower-case LDH", tld);
            for (uint32_t k = 0; k <= i; k++)
                for (uint32_t j = 0; j < (k == i ? t : cfg->registries[k].tlds.count); j++)
                    must(strcmp(cfg->registries[k].tlds.items[j], tld) != 0, "a TLD served twice", tld);
        }
        int names = 0;
        for (const char *c = r->query; c && *c; c++)
            if (*c == '%') {
                names += c[1] == 's' || c[1] == 'l';
                must(c[1] == 's' || c[1] == 'l' || c[1] == '%', "a query template with a stray %", r->query);
                c++;
            }
        must(names == 1, "a query template without exactly one name", r->query);
        if (r->protocol == AV_PROTO_RDAP)
            must(r->base_url != NULL, "an RDAP registry without a base URL", r->name);
        else
            must(r->host && *r->host && r->port >= 1 && r->port <= 65535, "whois or DAS without host and port",
                 r->name);
        char err[512];
        av_patterns_t *patterns = av_patterns_new(r, err, sizeof err);
        must(patterns != NULL, "a loaded registry's patterns do not compile", err);
        av_patterns_destroy(&patterns);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    part_t parts[FILES_MAX];
    size_t n = split(data, size, parts);
    for (size_t i = 0; i < n; i++) {
        FILE *f = fopen(parts[i].name, "wb");
        if (!f || fwrite(parts[i].bytes, 1, parts[i].len, f) != parts[i].len || fclose(f) != 0) {
            perror("fuzz_config: writing an input file");
            exit(1);
        }
    }
    char path[PATH_MAX + 16], err[AV_CONFIG_ERR_MAX];
    snprintf(path, sizeof path, "%s/availd.yaml", dir);
    av_config_t *cfg = (av_config_t *)1;
    err[0] = '\0';
    sandboxed = true;
    int rc = av_config_load(path, &cfg, err, sizeof err);
    sandboxed = false;
    if (rc == 0) {
        must(cfg != NULL, "loaded without a config", NULL);
        check_loaded(cfg);
        av_config_free(&cfg);
        must(cfg == NULL, "av_config_free left the pointer", NULL);
    } else {
        must(rc == -1 && cfg == NULL, "refused, yet a config came out", err);
        must(located(err), "a refusal without path:line:col", err);
    }
    for (size_t i = 0; i < n; i++)
        unlink(parts[i].name);
    return 0;
}
