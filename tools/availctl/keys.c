/* availctl keys: CURVE key pairs for availd across hosts, in CZMQ's
 * certificate format (zcert), which curve.secret_key, curve.server_key and
 * the curve.allow directories read.
 *   keys new NAME   writes NAME (public key, to copy to the peers' allow
 *                   directories) and NAME_secret (key pair, mode 0600)
 *   keys show FILE  prints the public key (and whether FILE has the secret) */
#include "availctl.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NO_SECRET "0000000000000000000000000000000000000000"

static int
keys_new(const ctl_t *ctl, const char *name)
{
    char secret[4096];
    if (!*name || snprintf(secret, sizeof secret, "%s_secret", name) >= (int)sizeof secret) {
        fprintf(stderr, "availctl: keys new: bad file name\n");
        return EXIT_USAGE;
    }
    if (access(name, F_OK) == 0 || access(secret, F_OK) == 0) {
        fprintf(stderr, "availctl: keys new: %s or %s exists already: not overwritten\n", name, secret);
        return EXIT_NEGATIVE;
    }
    zcert_t *cert = zcert_new();
    if (!cert) {
        fprintf(stderr, "availctl: keys new: cannot make a key pair\n");
        return EXIT_USAGE;
    }
    const char *base = strrchr(name, '/');
    zcert_set_meta(cert, "name", "%s", base ? base + 1 : name);
    zcert_set_meta(cert, "made-by", "availctl keys new");
    /* The secret file must never be readable by others, not even for an instant. */
    mode_t old = umask(077);
    int rc = zcert_save_secret(cert, secret);
    umask(old);
    if (rc == 0)
        rc = zcert_save_public(cert, name);
    if (rc != 0) {
        fprintf(stderr, "availctl: keys new: cannot write %s: %s\n", name, strerror(errno));
        zcert_destroy(&cert);
        return EXIT_USAGE;
    }
    chmod(secret, 0600);
    if (ctl->json) {
        ctl_print_json(json_pack("{s:s, s:s, s:s}", "public", zcert_public_txt(cert), "public_file", name,
                                 "secret_file", secret));
        zcert_destroy(&cert);
        return EXIT_OK;
    }
    printf("%s\n", zcert_public_txt(cert));
    fprintf(stderr, "wrote %s (public: copy it to the allow directories of the hosts it connects to)\n"
                    "  and %s (secret: name it as curve.secret_key on this host only)\n", name, secret);
    zcert_destroy(&cert);
    return EXIT_OK;
}

static int
keys_show(const ctl_t *ctl, const char *file)
{
    zcert_t *cert = zcert_load(file);
    if (!cert) {
        fprintf(stderr, "availctl: keys show: %s: not a certificate (made by availctl keys new)\n", file);
        return EXIT_NEGATIVE;
    }
    const char *name = zcert_meta(cert, "name");
    if (ctl->json) {
        json_t *j = json_pack("{s:s, s:s, s:b}", "file", file, "public", zcert_public_txt(cert), "secret",
                              strcmp(zcert_secret_txt(cert), NO_SECRET) != 0);
        if (name)
            json_object_set_new(j, "name", json_string(name));
        ctl_print_json(j);
        zcert_destroy(&cert);
        return EXIT_OK;
    }
    printf("public %s\nsecret %s\nname %s\n", zcert_public_txt(cert),
           strcmp(zcert_secret_txt(cert), NO_SECRET) ? "present" : "absent", name ? name : "-");
    zcert_destroy(&cert);
    return EXIT_OK;
}

int
cmd_keys(ctl_t *ctl, int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "new") == 0)
        return keys_new(ctl, argv[2]);
    if (argc == 3 && strcmp(argv[1], "show") == 0)
        return keys_show(ctl, argv[2]);
    return ctl_command_usage("keys");
}
