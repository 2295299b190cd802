/* audistill size: what a model directory weighs — bytes on disk of every file, and per
 * component the parameters, the bytes their tensors take and the bits per weight — read from
 * config.json and the safetensors headers only, so it is instant even for the 7B teacher. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/log.h"
#include "io/file.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/weights.h"

static const char *usage = "audistill size [--json] MODEL_DIR";

static int directory_bytes(const char *dir, uint64_t *total, int *files) {
    DIR *d = opendir(dir);
    if (!d) return ad_fail("cannot open directory %s", dir);
    struct dirent *e;
    *total = 0, *files = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = ad_path_join(dir, e->d_name);
        struct stat st;
        if (!p) {
            closedir(d);
            return AD_ERR;
        }
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) *total += (uint64_t)st.st_size, (*files)++;
        free(p);
    }
    closedir(d);
    return AD_OK;
}

/* The weight a stored tensor belongs to: its canonical name less a quantized-part suffix. */
static const ad_weight_spec *owner_of(const char *stored, const ad_weight_spec *specs, int n) {
    char buf[AD_WEIGHT_NAME_MAX + 32];
    ad_canonical_tensor_name(stored, buf, sizeof buf);
    static const char *parts[] = {".qcodes", ".qscales", ".qzeros"};
    for (int i = 0; i < 3; i++) {
        size_t a = strlen(buf), b = strlen(parts[i]);
        if (a > b && !strcmp(buf + a - b, parts[i])) buf[a - b] = 0;
    }
    for (int s = 0; s < n; s++)
        if (!strcmp(specs[s].name, buf)) return &specs[s];
    return NULL;
}

int cmd_size(int argc, char **argv) {
    const char *dir = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: %s\n\nBytes on disk of a model directory and, per component, "
                   "parameters, tensor bytes and bits per weight.\n",
                   usage);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-' || dir) {
            return cli_usage_error("size", usage, "unexpected argument '%s'", argv[i]);
        } else {
            dir = argv[i];
        }
    }
    if (!dir) return cli_usage_error("size", usage, "MODEL_DIR is required");
    ad_model_config cfg;
    ad_safetensors st = {0};
    ad_weight_spec *specs = NULL;
    int n = 0, n_files = 0, rc = 1;
    uint64_t disk = 0;
    int64_t params[AD_COMPONENT_COUNT] = {0}, bytes[AD_COMPONENT_COUNT] = {0};
    char *cfg_path = ad_path_join(dir, "config.json");
    if (!cfg_path || ad_model_config_load(cfg_path, &cfg) < 0 ||
        ad_weight_specs(&cfg, &specs, &n) < 0 || ad_safetensors_open(&st, dir) < 0 ||
        directory_bytes(dir, &disk, &n_files) < 0)
        goto done;
    for (int s = 0; s < n; s++)
        params[specs[s].component] += ad_weight_spec_numel(&specs[s]);
    for (int i = 0; i < st.n_entries; i++) {
        const ad_weight_spec *w = owner_of(st.entries[i].name, specs, n);
        if (!w) {
            ad_warn("%s: tensor %s is not part of this architecture; not counted", dir,
                    st.entries[i].name);
            continue;
        }
        bytes[w->component] += (int64_t)(st.entries[i].end - st.entries[i].begin);
    }
    int64_t total_params = 0, total_bytes = 0;
    for (int c = 0; c < AD_COMPONENT_COUNT; c++)
        total_params += params[c], total_bytes += bytes[c];
    if (json) {
        printf("{\"model\": \"%s\", \"disk_bytes\": %llu, \"files\": %d, \"params\": %lld, "
               "\"tensor_bytes\": %lld, \"components\": {",
               dir, (unsigned long long)disk, n_files, (long long)total_params,
               (long long)total_bytes);
        for (int c = 0; c < AD_COMPONENT_COUNT; c++)
            printf("%s\"%s\": {\"params\": %lld, \"bytes\": %lld}", c ? ", " : "",
                   ad_component_name((ad_component)c), (long long)params[c], (long long)bytes[c]);
        printf("}}\n");
    } else {
        printf("%-16s %14s %14s %10s\n", "component", "params", "bytes", "bits/wt");
        for (int c = 0; c < AD_COMPONENT_COUNT; c++)
            printf("%-16s %14lld %14lld %10.3f\n", ad_component_name((ad_component)c),
                   (long long)params[c], (long long)bytes[c],
                   params[c] ? 8.0 * (double)bytes[c] / (double)params[c] : 0.0);
        printf("%-16s %14lld %14lld %10.3f\n", "tensors", (long long)total_params,
               (long long)total_bytes,
               total_params ? 8.0 * (double)total_bytes / (double)total_params : 0.0);
        printf("on disk: %llu bytes in %d files (%.3f MB)\n", (unsigned long long)disk, n_files,
               (double)disk / 1e6);
    }
    rc = 0;
done:
    if (rc) cli_fail("size");
    if (st.entries) ad_safetensors_close(&st);
    free(specs), free(cfg_path);
    return rc;
}
