/* availctl config check [FILE]: the daemons' own validation. */
#include "availctl.h"

#include <stdio.h>
#include <string.h>

int
cmd_config(ctl_t *ctl, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "check") != 0 || argc > 3)
        return ctl_command_usage(argv[0]);
    const char *path = argc == 3 ? argv[2] : ctl->config_path;
    av_config_t *cfg = NULL;
    char err[AV_CONFIG_ERR_MAX];
    if (av_config_load(path, &cfg, err, sizeof err) < 0) {
        if (ctl->json)
            ctl_print_json(json_pack("{s:s, s:b, s:s}", "config", path, "valid", 0, "error", err));
        else
            fprintf(stderr, "%s\n", err);
        return EXIT_NEGATIVE;
    }
    uint32_t explicit = 0;
    for (uint32_t i = 0; i < cfg->n_registries; i++)
        explicit += cfg->registries[i].origin == AV_ORIGIN_EXPLICIT;
    if (ctl->json)
        ctl_print_json(json_pack("{s:s, s:b, s:I, s:I, s:I}", "config", path, "valid", 1, "registries",
                                 (json_int_t)explicit, "implicit_registries",
                                 (json_int_t)(cfg->n_registries - explicit), "querier_groups",
                                 (json_int_t)cfg->n_groups));
    else if (explicit == cfg->n_registries)
        printf("%s: configuration OK (%u registries)\n", path, explicit);
    else
        printf("%s: configuration OK (%u registries, %u implicit; %u querier groups)\n", path, explicit,
               cfg->n_registries - explicit, cfg->n_groups);
    av_config_free(&cfg);
    return EXIT_OK;
}
