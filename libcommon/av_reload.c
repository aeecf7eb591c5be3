/* Reload (SIGHUP or `availctl reload`) like relayd and Postfix: the whole new
 * file is loaded and checked first, and refused as a whole when it is bad.
 * A good file is adopted, except the settings the daemon applies only at
 * start (a path, an endpoint, its user): for those it keeps its running
 * value (the adopted config carries it, so every reader of the config sees
 * what really runs), and `availctl reload` and `status` say "needs restart:
 * KEY" until a restart. A daemon without a reload hook adopts nothing. */
#include "av_daemon_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* What every daemon applies only at start. */
static const av_setting_t skeleton_settings[] = {
    AV_SETTING("endpoints.control", endpoints.control, AV_SETTING_STR),
    AV_SETTING("endpoints.errors_events", endpoints.errors_events, AV_SETTING_STR),
    /* keys are read at start; the allow directories at every connection */
    AV_SETTING("curve.secret_key", curve.secret_key, AV_SETTING_STR),
    AV_SETTING("curve.server_key", curve.server_key, AV_SETTING_STR),
    AV_SETTING("curve.allow.frontends", curve.allow[AV_PEERS_FRONTENDS], AV_SETTING_STR),
    AV_SETTING("curve.allow.queriers", curve.allow[AV_PEERS_QUERIERS], AV_SETTING_STR),
    AV_SETTING("curve.allow.monitoring", curve.allow[AV_PEERS_MONITORING], AV_SETTING_STR),
    AV_SETTING("curve.allow.control", curve.allow[AV_PEERS_CONTROL], AV_SETTING_STR),
    AV_SETTING("curve.allow.core", curve.allow[AV_PEERS_CORE], AV_SETTING_STR),
    { NULL, 0, 0 },
};

/* The process settings of the daemon's own section, applied only at start.
 * Offsets into av_process_cfg_t. */
static const av_setting_t process_settings[] = {
    { "pid_file", offsetof(av_process_cfg_t, pid_file), AV_SETTING_STR },
    { "user", offsetof(av_process_cfg_t, user), AV_SETTING_STR },
    { "group", offsetof(av_process_cfg_t, group), AV_SETTING_STR },
    { "daemonize", offsetof(av_process_cfg_t, daemonize), AV_SETTING_BOOL },
    { "control", offsetof(av_process_cfg_t, control), AV_SETTING_STR },
    { NULL, 0, 0 },
};

void
av_daemon_needs_restart(av_daemon_t *d, const char *fmt, ...)
{
    char key[AV_RESTART_KEY_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    for (uint32_t i = 0; i < d->n_needs_restart; i++)
        if (strcmp(d->needs_restart[i], key) == 0)
            return;
    if (d->n_needs_restart == AV_RESTART_MAX) {
        /* so many that a restart is plainly due: the last slot says so */
        snprintf(d->needs_restart[AV_RESTART_MAX - 1], AV_RESTART_KEY_MAX, "%s", "(more settings)");
        return;
    }
    snprintf(d->needs_restart[d->n_needs_restart++], AV_RESTART_KEY_MAX, "%s", key);
}

static bool
same_string(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Compares one setting of the running and the new config; when they
 * differ, the new config takes the running value and the key is noted. */
static int
keep_running_value(av_daemon_t *d, const char *key, void *running, void *next, av_setting_kind_t kind)
{
    switch (kind) {
    case AV_SETTING_STR: {
        char **r = running, **n = next;
        if (same_string(*r, *n))
            return 0;
        char *copy = *r ? strdup(*r) : NULL;
        if (*r && !copy)
            return -1;
        free(*n);
        *n = copy;
        break;
    }
    case AV_SETTING_U32:
        if (*(uint32_t *)running == *(uint32_t *)next)
            return 0;
        *(uint32_t *)next = *(uint32_t *)running;
        break;
    case AV_SETTING_U64:
        if (*(uint64_t *)running == *(uint64_t *)next)
            return 0;
        *(uint64_t *)next = *(uint64_t *)running;
        break;
    case AV_SETTING_BOOL:
        if (*(bool *)running == *(bool *)next)
            return 0;
        *(bool *)next = *(bool *)running;
        break;
    }
    av_log_warning("%s changed in the file: it takes effect at the next restart, the running value stays", key);
    av_daemon_needs_restart(d, "%s", key);
    return 0;
}

static int
keep_settings(av_daemon_t *d, const av_setting_t *settings, void *running_base, void *next_base,
              const char *prefix)
{
    for (const av_setting_t *s = settings; s && s->key; s++) {
        char key[AV_RESTART_KEY_MAX];
        snprintf(key, sizeof key, "%s%s", prefix, s->key);
        if (keep_running_value(d, key, (char *)running_base + s->offset, (char *)next_base + s->offset, s->kind) <
            0)
            return -1;
    }
    return 0;
}

/* The new config with every start-only setting at its running value. */
static int
keep_start_only_settings(av_daemon_t *d, av_config_t *next)
{
    char prefix[AV_NAME_LEN + 2];
    snprintf(prefix, sizeof prefix, "%s.", d->hooks->name);
    av_process_cfg_t *running_process = (av_process_cfg_t *)av_config_process(d->cfg, d->hooks->name);
    av_process_cfg_t *next_process = (av_process_cfg_t *)av_config_process(next, d->hooks->name);
    if (keep_settings(d, skeleton_settings, d->cfg, next, "") < 0 ||
        keep_settings(d, d->hooks->restart_settings, d->cfg, next, "") < 0)
        return -1;
    if (running_process && next_process && keep_settings(d, process_settings, running_process, next_process, prefix) < 0)
        return -1;
    return 0;
}

void
av_daemon_apply_logging(av_daemon_t *d)
{
    const av_process_cfg_t *p = av_daemon_process(d);
    char ident[sizeof d->ident + 8];
    snprintf(ident, sizeof ident, "availd-%s", d->ident);
    av_log_open(p->daemon_name ? p->daemon_name : ident, p->log, p->n_log, (int)p->log_level);
}

int
av_daemon_reload(av_daemon_t *d, char *err, size_t errlen)
{
    av_config_t *next = NULL;
    (*d->reloads)++;
    if (av_config_load(d->config_path, &next, err, errlen) < 0) {
        (*d->reloads_refused)++;
        av_report(d, AV_LOG_ERR, NULL, "config_refused", "reload refused, old configuration kept: %s", err);
        return -1;
    }
    if (!d->hooks->on_reload) {
        /* Its settings are read where they are used: adopting the file
         * would change them behind the daemon's back. */
        d->n_needs_restart = 0;
        av_daemon_needs_restart(d, "(every setting: availd-%s applies its configuration only at start)",
                                d->hooks->name);
        av_log_warning("availd-%s applies its configuration only at start: restart it to apply %s",
                       d->hooks->name, d->config_path);
        av_config_free(&next);
        return 0;
    }
    /* Rebuilt from the file at every reload: a key set back to its running
     * value needs no restart any more. A refused file changes nothing. */
    char kept[AV_RESTART_MAX][AV_RESTART_KEY_MAX];
    uint32_t n_kept = d->n_needs_restart;
    memcpy(kept, d->needs_restart, sizeof kept);
    d->n_needs_restart = 0;
    if (keep_start_only_settings(d, next) < 0 || d->hooks->on_reload(d, next) < 0) {
        memcpy(d->needs_restart, kept, sizeof kept);
        d->n_needs_restart = n_kept;
        (*d->reloads_refused)++;
        snprintf(err, errlen, "%s: refused by the daemon (see its log); old configuration kept", d->config_path);
        av_report(d, AV_LOG_ERR, NULL, "config_refused", "%s", err);
        av_config_free(&next);
        return -1;
    }
    av_config_t *old = d->cfg;
    d->cfg = next;
    av_config_free(&old);
    av_daemon_apply_logging(d);
    av_log_reopen();
    av_log_notice("configuration reloaded from %s%s", d->config_path,
                  d->n_needs_restart ? " (some settings need a restart)" : "");
    return 0;
}

void
av_daemon_pack_needs_restart(const av_daemon_t *d, msgpack_packer *pk)
{
    av_pack_str(pk, "needs_restart");
    msgpack_pack_array(pk, d->n_needs_restart);
    for (uint32_t i = 0; i < d->n_needs_restart; i++)
        av_pack_str(pk, d->needs_restart[i]);
}

void
av_daemon_print_restart_keys(const av_daemon_hooks_t *h, FILE *out)
{
    if (!h->on_reload) {
        fprintf(out, "*\n"); /* every setting */
        return;
    }
    const av_setting_t *lists[] = { skeleton_settings, h->restart_settings };
    for (size_t i = 0; i < 2; i++)
        for (const av_setting_t *s = lists[i]; s && s->key; s++)
            fprintf(out, "%s\n", s->key);
    for (const av_setting_t *s = process_settings; s->key; s++)
        fprintf(out, "%s.%s\nprocess.%s\n", h->name, s->key, s->key);
    for (const char *const *k = h->restart_keys_own; k && *k; k++)
        fprintf(out, "%s\n", *k);
}
