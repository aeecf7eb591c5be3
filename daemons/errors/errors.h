/* availd-errors' job, as the hooks its main.c hands to the daemon skeleton. */
#ifndef ERRORS_H
#define ERRORS_H

#include "av_daemon.h"

int errors_init(av_daemon_t *d);
int errors_reload(av_daemon_t *d, const av_config_t *next);
extern const av_setting_t errors_restart_settings[];
int errors_stop(av_daemon_t *d);
void errors_fini(av_daemon_t *d);

#endif
