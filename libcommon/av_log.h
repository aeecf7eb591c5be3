/* Logging for every availd program: stderr (with sd-daemon <N> prefixes under
 * systemd), syslog, journald or a file, filtered by log_level 0 (errors) to
 * 4 (debug) as the old daemon's config had it. */
#ifndef AV_LOG_H
#define AV_LOG_H

#include "av_config.h"

#include <stdarg.h>

enum { AV_LOG_ERR = 0, AV_LOG_WARNING, AV_LOG_NOTICE, AV_LOG_INFO, AV_LOG_DEBUG };

/* Replaces the targets and level. The logger is process-wide, as stderr and
 * syslog are; av_log_close resets it to the built-in state (stderr, level 2),
 * which tests rely on. Returns 0, or -1 when a file target cannot be opened
 * (the others stay in place). */
int av_log_open(const char *ident, const av_log_target_t *targets, uint32_t n_targets, int level);
void av_log_set_level(int level);
int av_log_level(void);
/* Reopen file targets (after logrotate). */
void av_log_reopen(void);
void av_log_close(void);

void av_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void av_vlog(int level, const char *fmt, va_list ap);

#define av_log_err(...)     av_log(AV_LOG_ERR, __VA_ARGS__)
#define av_log_warning(...) av_log(AV_LOG_WARNING, __VA_ARGS__)
#define av_log_notice(...)  av_log(AV_LOG_NOTICE, __VA_ARGS__)
#define av_log_info(...)    av_log(AV_LOG_INFO, __VA_ARGS__)
#define av_log_debug(...)   av_log(AV_LOG_DEBUG, __VA_ARGS__)

#endif
