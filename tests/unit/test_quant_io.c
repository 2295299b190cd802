/* Quantized tensors in safetensors: written parts + metadata read back as the same codes,
 * scales and zeros; Python's safetensors can still open the file (standard dtypes only, tested
 * in the round-trip script); a missing part, a wrong shape, or a tensor stored twice is refused. */
#include <unistd.h>

#include "compress/quant_io.h"
#include "core/rng.h"
#include "test.h"

static char path[512];

static int write_quantized(const ad_quant_tensor *q, const char *name, bool extra_plain,
                           bool drop_zeros) {
    char codes[256], scales[256], zeros[256];
    snprintf(codes, sizeof codes, "%s.qcodes", name);
    snprintf(scales, sizeof scales, "%s.qscales", name);
    snprintf(zeros, sizeof zeros, "%s.qzeros", name);
    const int64_t groups = q->cols / q->spec.group_size;
    ad_st_write_item items[4] = {
        {codes, AD_U8, 2, {q->rows, ad_quant_row_bytes(&q->spec, q->cols)}, q->codes},
        {scales, AD_F16, 2, {q->rows, groups}, q->scales},
    };
    int n = 2;
    if (q->zeros && !drop_zeros)
        items[n++] = (ad_st_write_item){zeros, AD_U8, 2, {q->rows, groups}, q->zeros};
    float plain[4] = {0};
    if (extra_plain) items[n++] = (ad_st_write_item){name, AD_F32, 1, {4}, plain};
    ad_quant_entry e = {.name = (char *)name, .spec = q->spec, .rows = q->rows, .cols = q->cols};
    strcpy(e.method, "rtn");
    char *json = ad_quant_metadata_json(&e, 1);
    ad_st_metadata meta[] = {{AD_QUANT_METADATA_KEY, json}};
    int rc = ad_safetensors_write(path, items, n, meta, 1);
    free(json);
    return rc;
}

static void test_round_trip(void) {
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 41);
    const int64_t rows = 6, cols = 96;
    float w[6 * 96], a[6 * 96], b[6 * 96];
    for (int i = 0; i < rows * cols; i++)
        w[i] = ad_rng_normal(&rng);
    ad_quant_spec spec = {3, 32, false};
    ad_quant_tensor q, v;
    CHECK_OK(ad_quant_alloc(&q, &spec, rows, cols, "w"));
    CHECK_OK(ad_quant_rtn(&q, w));
    const char *name = "language_model.model.layers.0.mlp.up_proj.weight";
    CHECK_OK(write_quantized(&q, name, false, false));
    ad_safetensors st;
    CHECK_OK(ad_safetensors_open(&st, path));
    ad_quant_index idx;
    CHECK_OK(ad_quant_index_load(&st, &idx));
    CHECK(idx.n == 1);
    const ad_quant_entry *e = ad_quant_index_find(&idx, name);
    CHECK(e && e->spec.bits == 3 && e->rows == rows && e->cols == cols &&
          strcmp(e->method, "rtn") == 0);
    if (e) {
        CHECK_OK(ad_quant_view(&st, e, &v));
        ad_quant_dequantize_rows(&q, 0, rows, a);
        ad_quant_dequantize_rows(&v, 0, rows, b);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    ad_quant_index_free(&idx);
    ad_safetensors_close(&st);

    CHECK_OK(write_quantized(&q, name, false, true));
    CHECK_OK(ad_safetensors_open(&st, path));
    CHECK_FAILS_WITH(ad_quant_index_load(&st, &idx),
                     "has no language_model.model.layers.0.mlp.up_proj.weight.qzeros");
    ad_safetensors_close(&st);
    CHECK_OK(write_quantized(&q, name, true, false));
    CHECK_OK(ad_safetensors_open(&st, path));
    CHECK_FAILS_WITH(ad_quant_index_load(&st, &idx), "both quantized and unquantized");
    ad_safetensors_close(&st);
    ad_quant_free(&q);
    unlink(path);
}

int main(void) {
    snprintf(path, sizeof path, "%s/quant-io-%ld.safetensors", AUDISTILL_TEST_TMP, (long)getpid());
    RUN(test_round_trip);
    return test_report();
}
