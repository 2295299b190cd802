/* audistill inspect: what a model is (architecture, parameters per component, dtypes, bytes
 * on disk) and whether its checkpoint holds exactly the tensors its config implies. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "compress/quant_io.h"
#include "core/error.h"
#include "io/file.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/weights.h"

static const char *usage = "audistill inspect MODEL_DIR | audistill inspect --config config.json";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Prints the architecture and the parameter count per component (audio encoder,\n"
           "projector, decoder layers + final norm, embed_tokens, lm_head).\n"
           "With MODEL_DIR (config.json + model.safetensors or a sharded index) it also lists\n"
           "dtypes, bytes on disk and checks that every expected tensor is present with the\n"
           "expected shape; missing, extra or mismatched tensors make it exit with status 1.\n"
           "With --config it computes the counts from the config alone.\n",
           usage);
}

static void print_architecture(const ad_model_config *c) {
    printf("audio encoder: %d layers, d_model %d, %d heads, ffn %d, %d mel bins, %d positions\n",
           c->encoder_layers, c->d_model, c->encoder_attention_heads, c->encoder_ffn_dim,
           c->num_mel_bins, c->max_source_positions);
    printf("decoder: %d layers, hidden %d, %d heads (%d kv), head_dim %d, ffn %d, vocab %d, "
           "rope_theta %g, rms_norm_eps %g, %s lm_head\n",
           c->num_hidden_layers, c->hidden_size, c->num_attention_heads, c->num_key_value_heads,
           c->head_dim, c->intermediate_size, c->vocab_size, c->rope_theta, c->rms_norm_eps,
           c->tie_word_embeddings ? "tied" : "untied");
    if (!c->uniform) printf("per-layer shapes: non-uniform (pruned student)\n");
}

static void print_counts(const ad_param_counts *k) {
    printf("%-16s %14s %8s\n", "component", "parameters", "tensors");
    for (int i = 0; i < AD_COMPONENT_COUNT; i++)
        printf("%-16s %14lld %8d\n", ad_component_name((ad_component)i), (long long)k->params[i],
               k->tensors[i]);
    printf("%-16s %14lld %8d\n", "total", (long long)k->total_params, k->total_tensors);
}

static int64_t directory_bytes(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = ad_path_join(dir, e->d_name);
        struct stat st;
        if (p && stat(p, &st) == 0 && S_ISREG(st.st_mode)) total += st.st_size;
        free(p);
    }
    closedir(d);
    return total;
}

static int inspect_config_only(const char *path) {
    ad_model_config cfg;
    if (ad_model_config_load(path, &cfg) < 0) return cli_fail("inspect");
    ad_weight_spec *specs;
    int n;
    if (ad_weight_specs(&cfg, &specs, &n) < 0) return cli_fail("inspect");
    ad_param_counts counts;
    ad_count_params(specs, n, &counts);
    printf("config: %s (qwen2_audio)\n", path);
    print_architecture(&cfg);
    print_counts(&counts);
    free(specs);
    return 0;
}

#define MAX_LISTED 20

static int inspect_model_dir(const char *dir) {
    char *config_path = ad_path_join(dir, "config.json");
    if (!config_path) return cli_fail("inspect");
    ad_model_config cfg;
    int rc = ad_model_config_load(config_path, &cfg);
    free(config_path);
    if (rc < 0) return cli_fail("inspect");
    ad_safetensors st;
    if (ad_safetensors_open(&st, dir) < 0) return cli_fail("inspect");
    ad_weight_spec *specs;
    int n;
    if (ad_weight_specs(&cfg, &specs, &n) < 0) {
        ad_safetensors_close(&st);
        return cli_fail("inspect");
    }
    ad_quant_index qindex = {0};
    if (ad_quant_index_load(&st, &qindex) < 0) {
        free(specs);
        ad_safetensors_close(&st);
        return cli_fail("inspect");
    }
    /* Canonical names of the file's tensors, so transformers-5-style names match too. */
    char(*canon)[AD_WEIGHT_NAME_MAX * 2] = calloc((size_t)st.n_entries + 1, sizeof *canon);
    int *used = calloc((size_t)st.n_entries + 1, sizeof *used);
    if (!canon || !used) {
        free(canon);
        free(used);
        free(specs);
        ad_quant_index_free(&qindex);
        ad_safetensors_close(&st);
        ad_fail("out of memory");
        return cli_fail("inspect");
    }
    for (int i = 0; i < st.n_entries; i++)
        ad_canonical_tensor_name(st.entries[i].name, canon[i], sizeof canon[i]);

    ad_param_counts counts;
    memset(&counts, 0, sizeof counts);
    int missing = 0, mismatched = 0, extra = 0;
    int64_t dtype_count[AD_DTYPE_COUNT] = {0};
    for (int s = 0; s < n; s++) {
        int found = -1;
        for (int i = 0; i < st.n_entries && found < 0; i++)
            if (strcmp(canon[i], specs[s].name) == 0) found = i;
        const ad_quant_entry *qe = found < 0 ? ad_quant_index_find(&qindex, specs[s].name) : NULL;
        if (qe) {
            /* Stored in group format: its parts were checked when the index loaded. */
            if (qe->rows != specs[s].shape[0] || qe->cols != specs[s].shape[1] ||
                specs[s].ndim != 2) {
                if (mismatched++ < MAX_LISTED)
                    printf("shape mismatch: quantized %s is [%lld, %lld], config implies another\n",
                           specs[s].name, (long long)qe->rows, (long long)qe->cols);
                continue;
            }
            char part[AD_WEIGHT_NAME_MAX * 2 + 16];
            static const char *suffix[] = {".qcodes", ".qscales", ".qzeros"};
            for (int k = 0; k < 3; k++) {
                snprintf(part, sizeof part, "%s%s", specs[s].name, suffix[k]);
                for (int i = 0; i < st.n_entries; i++)
                    if (strcmp(canon[i], part) == 0) used[i] = 1;
            }
            int64_t numel = ad_weight_spec_numel(&specs[s]);
            counts.params[specs[s].component] += numel;
            counts.tensors[specs[s].component]++;
            counts.total_params += numel;
            counts.total_tensors++;
            dtype_count[AD_QGROUP]++;
            continue;
        }
        if (found < 0) {
            if (missing++ < MAX_LISTED) printf("missing: %s\n", specs[s].name);
            continue;
        }
        used[found] = 1;
        const ad_st_entry *e = &st.entries[found];
        int same = e->ndim == specs[s].ndim;
        for (int d = 0; same && d < e->ndim; d++)
            same = e->shape[d] == specs[s].shape[d];
        if (!same) {
            if (mismatched++ < MAX_LISTED) {
                printf("shape mismatch: %s is [", e->name);
                for (int d = 0; d < e->ndim; d++)
                    printf("%s%lld", d ? ", " : "", (long long)e->shape[d]);
                printf("], config implies [");
                for (int d = 0; d < specs[s].ndim; d++)
                    printf("%s%lld", d ? ", " : "", (long long)specs[s].shape[d]);
                printf("]\n");
            }
            continue;
        }
        int64_t numel = ad_weight_spec_numel(&specs[s]);
        counts.params[specs[s].component] += numel;
        counts.tensors[specs[s].component]++;
        counts.total_params += numel;
        counts.total_tensors++;
        dtype_count[e->dtype]++;
    }
    for (int i = 0; i < st.n_entries; i++)
        if (!used[i] && extra++ < MAX_LISTED) printf("extra: %s\n", st.entries[i].name);

    printf("model: %s (qwen2_audio, %d shard%s)\n", dir, st.n_shards, st.n_shards == 1 ? "" : "s");
    print_architecture(&cfg);
    print_counts(&counts);
    printf("dtypes:");
    for (int d = 0; d < AD_DTYPE_COUNT; d++)
        if (dtype_count[d])
            printf(" %s x%lld", ad_dtype_name((ad_dtype)d), (long long)dtype_count[d]);
    printf("\nweights bytes: %llu\n", (unsigned long long)ad_safetensors_file_bytes(&st));
    printf("bytes on disk: %lld (all files in %s)\n", (long long)directory_bytes(dir), dir);
    int problems = missing + mismatched + extra;
    if (problems)
        printf("check: FAILED (%d missing, %d shape mismatches, %d extra tensors)\n", missing,
               mismatched, extra);
    else
        printf("check: ok (%d tensors, all expected shapes)\n", n);
    free(canon);
    free(used);
    free(specs);
    ad_quant_index_free(&qindex);
    ad_safetensors_close(&st);
    if (problems) {
        fprintf(stderr,
                "audistill inspect: error: %s does not match its config.json (%d missing, "
                "%d mismatched, %d extra tensors)\n",
                dir, missing, mismatched, extra);
        return 1;
    }
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    if (argc == 2 && cli_is_help(argv[1])) {
        print_help();
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--config") == 0) return inspect_config_only(argv[2]);
    if (argc == 2 && argv[1][0] != '-') {
        if (!ad_is_directory(argv[1]))
            return cli_usage_error("inspect", usage, "%s is not a directory", argv[1]);
        return inspect_model_dir(argv[1]);
    }
    return cli_usage_error("inspect", usage, "expected MODEL_DIR or --config FILE");
}
