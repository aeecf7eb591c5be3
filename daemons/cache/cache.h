/* availd-cache's job, as the hooks its main.c hands to the daemon skeleton. */
#ifndef CACHE_H
#define CACHE_H

#include "av_daemon.h"

int cache_init(av_daemon_t *d);
int cache_reload(av_daemon_t *d, const av_config_t *next);
extern const av_setting_t cache_restart_settings[];
int cache_stop(av_daemon_t *d);
void cache_fini(av_daemon_t *d);

#endif
