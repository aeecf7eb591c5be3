/* What av_config.c and av_routes.c share, and nothing else. */
#ifndef AV_CONFIG_INTERNAL_H
#define AV_CONFIG_INTERNAL_H

#include "av_config.h"

#include <stddef.h>

void av_registry_defaults(av_registry_cfg_t *r);
/* Frees what r holds (not r). */
void av_registry_clear(av_registry_cfg_t *r);
/* The defaults of implicit registries of a protocol (RDAP or whois). */
void av_implicit_defaults(av_registry_cfg_t *r, av_registry_proto_t protocol);
void av_group_clear(av_group_cfg_t *g);
/* Appends g (taking what it holds); -1 when out of memory. */
int av_config_add_group(av_config_t *c, av_group_cfg_t *g);
/* After the files are read: base URLs of RDAP registries without one, the
 * implicit registries, the querier groups. 0, or -1 with "path:line:col:
 * why" in err. */
int av_routes_build(av_config_t *c, char *err, size_t errlen);

#endif
