/* Test helper for the safetensors round trip with Python's `safetensors` package:
 *   st_tool write FILE SEED   writes tensors of every storable dtype + metadata and prints the
 *                             values it wrote as JSON (one object per line)
 *   st_tool dump FILE         prints every tensor of FILE as JSON, values converted to float
 * The Python side (tests/cli/safetensors_python.py) compares both directions. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "io/safetensors.h"

static void print_values(const char *name, ad_dtype dtype, int ndim, const int64_t *shape,
                         const void *data) {
    ad_tensor t;
    ad_tensor_init(&t, (void *)data, dtype, AD_DEVICE_CPU, ndim, shape, name);
    int64_t n = ad_tensor_numel(&t);
    printf("{\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", name, ad_dtype_name(dtype));
    for (int d = 0; d < ndim; d++)
        printf("%s%" PRId64, d ? ", " : "", shape[d]);
    printf("], \"values\": [");
    for (int64_t i = 0; i < n; i++) {
        double v;
        switch (dtype) {
        case AD_I64: v = (double)((const int64_t *)data)[i]; break;
        case AD_I32: v = ((const int32_t *)data)[i]; break;
        case AD_I8: v = ((const int8_t *)data)[i]; break;
        case AD_U8: v = ((const uint8_t *)data)[i]; break;
        case AD_F16: v = ad_f16_to_f32(((const uint16_t *)data)[i]); break;
        case AD_BF16: v = ad_bf16_to_f32(((const uint16_t *)data)[i]); break;
        default: v = ((const float *)data)[i]; break;
        }
        printf("%s%.9g", i ? ", " : "", v);
    }
    printf("]}\n");
}

static int write_file(const char *path, uint64_t seed) {
    ad_rng rng;
    ad_rng_init(&rng, seed, 0);
    static float f32[3 * 5];
    static uint16_t f16[7], bf16[4 * 2];
    static int32_t i32[6];
    static int8_t i8[9];
    static uint8_t u8[5];
    static int64_t i64[3];
    for (int i = 0; i < 15; i++)
        f32[i] = ad_rng_normal(&rng);
    for (int i = 0; i < 7; i++)
        f16[i] = ad_f32_to_f16(ad_rng_normal(&rng));
    for (int i = 0; i < 8; i++)
        bf16[i] = ad_f32_to_bf16(ad_rng_normal(&rng));
    for (int i = 0; i < 6; i++)
        i32[i] = (int32_t)(ad_rng_u32(&rng) % 200000) - 100000;
    for (int i = 0; i < 9; i++)
        i8[i] = (int8_t)ad_rng_u32(&rng);
    for (int i = 0; i < 5; i++)
        u8[i] = (uint8_t)ad_rng_u32(&rng);
    for (int i = 0; i < 3; i++)
        i64[i] = (int64_t)(ad_rng_u32(&rng) % 1000000) * 1000;
    ad_st_write_item items[] = {
        {"audio_tower.conv1.weight", AD_F32, 3, {3, 5, 1}, f32},
        {"half", AD_F16, 1, {7}, f16},
        {"brain.float", AD_BF16, 2, {4, 2}, bf16},
        {"ids", AD_I32, 2, {2, 3}, i32},
        {"i8", AD_I8, 1, {9}, i8},
        {"packed", AD_U8, 1, {5}, u8},
        {"big", AD_I64, 1, {3}, i64},
    };
    ad_st_metadata meta[] = {{"format", "pt"}, {"writer", "audistill"}};
    if (ad_safetensors_write(path, items, 7, meta, 2) < 0) {
        fprintf(stderr, "st_tool: %s\n", ad_error());
        return 1;
    }
    for (int i = 0; i < 7; i++)
        print_values(items[i].name, items[i].dtype, items[i].ndim, items[i].shape, items[i].data);
    return 0;
}

static int dump_file(const char *path) {
    ad_safetensors st;
    if (ad_safetensors_open(&st, path) < 0) {
        fprintf(stderr, "st_tool: %s\n", ad_error());
        return 1;
    }
    for (int i = 0; i < st.n_entries; i++) {
        ad_tensor t;
        ad_safetensors_view(&st, &st.entries[i], &t);
        print_values(st.entries[i].name, t.dtype, t.ndim, t.shape, t.data);
    }
    for (int i = 0; i < st.n_metadata; i++)
        printf("{\"metadata\": \"%s\", \"value\": \"%s\"}\n", st.metadata[i].key,
               st.metadata[i].value);
    ad_safetensors_close(&st);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "write") == 0)
        return write_file(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "dump") == 0) return dump_file(argv[2]);
    fprintf(stderr, "usage: st_tool write FILE SEED | st_tool dump FILE\n");
    return 2;
}
