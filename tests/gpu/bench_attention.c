/* Attention alone on the CUDA backend, for tests/gpu/check.sh: forward and backward of one
 * attention shape (the benchmark's Whisper encoder or Qwen decoder), bf16 q, k, v as the
 * training graph stores them under precision bf16, through the path PATH picks. Times ITERS
 * calls of each after one warm-up (the device drained around each timed run) and prints one
 * JSON line: milliseconds per call and TFLOP/s, counted as tests/gpu/bench_attention.py
 * counts them for PyTorch's scaled_dot_product_attention on the same shape (causal: the
 * pairs a query sees; the backward 2.5 times the forward's products). `decode` is one step of
 * decoding: one query row per batch element (a beam) over SEQ cached keys, forward only, and
 * its rate is also given in GB/s of K and V read (the step is bound by them).
 *
 *   bench_attention BATCH HEADS KV_HEADS SEQ HEAD_DIM causal|bidirectional|decode ITERS
 *                   [flash|gemm|auto]
 *
 * Emulator builds run it at tiny shapes as cuda_bench_attention_smoke: the numbers mean
 * nothing there, but the output is checked, so check.sh's section cannot rot unseen. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../cuda/backend_cuda.h"
#include "core/rng.h"

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((x) < 0) {                                                                             \
            fprintf(stderr, "bench_attention: %s failed: %s\n", #x, ad_error());                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int positive(const char *s, const char *what) {
    char *end;
    const long v = strtol(s, &end, 10);
    if (*end || v < 1 || v > 1 << 20) {
        fprintf(stderr, "bench_attention: %s must be a positive integer (got '%s')\n", what, s);
        exit(2);
    }
    return (int)v;
}

/* A [B, T, C] device tensor of dtype dt holding normal values (rounded on upload). */
static void device_tensor(ad_backend *be, ad_tensor *t, ad_dtype dt, int64_t B, int64_t T,
                          int64_t C, const char *name, ad_rng *rng) {
    const int64_t shape[3] = {B, T, C}, n = B * T * C;
    float *host = malloc(sizeof(float) * (size_t)n);
    if (!host) {
        fprintf(stderr, "bench_attention: out of host memory for %s\n", name);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        host[i] = ad_rng_normal(rng);
    ad_tensor h;
    void *data;
    TRY(be->alloc(be, ad_dtype_bytes_for(dt, n), &data));
    TRY(ad_tensor_init(t, data, dt, AD_DEVICE_CUDA, 3, shape, name));
    TRY(ad_tensor_init(&h, host, AD_F32, AD_DEVICE_CPU, 3, shape, name));
    TRY(be->upload(be, t, &h));
    free(host);
}

int main(int argc, char **argv) {
    if (argc < 8 || argc > 9) {
        fprintf(stderr, "usage: bench_attention BATCH HEADS KV_HEADS SEQ HEAD_DIM "
                        "causal|bidirectional|decode ITERS [flash|gemm|auto]\n");
        return 2;
    }
    const int B = positive(argv[1], "BATCH"), H = positive(argv[2], "HEADS"),
              KVH = positive(argv[3], "KV_HEADS"), T = positive(argv[4], "SEQ"),
              D = positive(argv[5], "HEAD_DIM"), iters = positive(argv[7], "ITERS");
    if (strcmp(argv[6], "causal") && strcmp(argv[6], "bidirectional") &&
        strcmp(argv[6], "decode")) {
        fprintf(stderr, "bench_attention: expected causal, bidirectional or decode, got '%s'\n",
                argv[6]);
        return 2;
    }
    const bool decode = !strcmp(argv[6], "decode"), causal = decode || !strcmp(argv[6], "causal");
    const int Tq = decode ? 1 : T;
    const char *path_name = argc > 8 ? argv[8] : "flash";
    const int path = ad_cuda_attention_path_of(path_name);
    if (path < 0 || path == AD_CUDA_ATTENTION_KERNEL) {
        fprintf(stderr, "bench_attention: path must be flash, gemm or auto (got '%s')\n",
                path_name);
        return 2;
    }
    if (H % KVH) {
        fprintf(stderr, "bench_attention: HEADS %d is not a multiple of KV_HEADS %d\n", H, KVH);
        return 2;
    }
    if (ad_cuda_available() < 0) {
        fprintf(stderr, "bench_attention: %s\n", ad_error());
        return 1;
    }
    ad_backend *be;
    TRY(ad_backend_cuda_create(&be, 0));
    TRY(ad_cuda_set_bf16_matmul(be, true));
    TRY(ad_cuda_set_attention_path(be, path));
    ad_rng rng;
    ad_rng_init(&rng, 11, 0);
    /* As the training graph under precision bf16: q, k, v bf16, the output and every gradient
     * f32. */
    ad_tensor q, k, v, out, dout, dq, dk, dv;
    device_tensor(be, &q, AD_BF16, B, Tq, (int64_t)H * D, "q", &rng);
    device_tensor(be, &k, AD_BF16, B, T, (int64_t)KVH * D, "k", &rng);
    device_tensor(be, &v, AD_BF16, B, T, (int64_t)KVH * D, "v", &rng);
    device_tensor(be, &out, AD_F32, B, Tq, (int64_t)H * D, "out", &rng);
    device_tensor(be, &dout, AD_F32, B, Tq, (int64_t)H * D, "dout", &rng);
    device_tensor(be, &dq, AD_F32, B, Tq, (int64_t)H * D, "dq", &rng);
    device_tensor(be, &dk, AD_F32, B, T, (int64_t)KVH * D, "dk", &rng);
    device_tensor(be, &dv, AD_F32, B, T, (int64_t)KVH * D, "dv", &rng);
    /* the forward's softmax statistics for the backward, as the training graph passes them
     * (and as SDPA's backward reuses its forward's log-sum-exp) */
    ad_tensor stats;
    device_tensor(be, &stats, AD_F32, B, H, Tq, "softmax_stats", &rng);
    /* a decoding step keeps no statistics (no backward follows) */
    const ad_attention_params p = {.n_heads = H,
                                   .n_kv_heads = KVH,
                                   .head_dim = D,
                                   .causal = causal,
                                   .q_offset = T - Tq,
                                   .scale = 1.0f / sqrtf((float)D),
                                   .softmax_stats = decode ? NULL : &stats};
    double ms[2] = {0, 0};
    for (int pass = 0; pass < (decode ? 1 : 2); pass++) {
        const bool backward = pass == 1;
        double t0 = 0;
        for (int i = -1; i < iters; i++) { /* i = -1: the warm-up */
            if (i == 0) {
                TRY(be->synchronize(be));
                t0 = now_s();
            }
            if (backward)
                TRY(be->attention_backward(be, &dq, &dk, &dv, &dout, &out, &q, &k, &v, &p));
            else
                TRY(be->attention(be, &out, &q, &k, &v, &p));
        }
        TRY(be->synchronize(be));
        ms[pass] = 1e3 * (now_s() - t0) / iters;
    }
    /* Query-key pairs computed: all of them, or a query's own prefix when causal. */
    const double pairs = decode   ? (double)B * H * T
                         : causal ? (double)B * H * (double)T * (T + 1) / 2
                                  : (double)B * H * (double)T * T;
    const double fwd = 4.0 * pairs * D, bwd = 2.5 * fwd;
    const double kv_bytes = 2.0 * 2.0 * B * KVH * (double)T * D; /* bf16 K and V */
    const long flash = ad_cuda_attention_flash_calls(be), gemm = ad_cuda_attention_gemm_calls(be),
               decode_calls = ad_cuda_attention_decode_calls(be);
    printf("{\"impl\": \"audistill-%s\", \"batch\": %d, \"heads\": %d, \"kv_heads\": %d, "
           "\"seq\": %d, \"head_dim\": %d, \"causal\": %s, \"decode\": %s, \"forward_ms\": %.4f, "
           "\"backward_ms\": %.4f, \"forward_tflops\": %.4g, \"backward_tflops\": %.4g, "
           "\"forward_gbs\": %.4g, \"flash_calls\": %ld, \"gemm_calls\": %ld, \"decode_calls\": "
           "%ld}\n",
           path_name, B, H, KVH, T, D, causal ? "true" : "false", decode ? "true" : "false", ms[0],
           ms[1], fwd / (ms[0] * 1e-3) / 1e12, decode ? 0.0 : bwd / (ms[1] * 1e-3) / 1e12,
           kv_bytes / (ms[0] * 1e-3) / 1e9, flash, gemm, decode_calls);
    ad_tensor *all[] = {&q, &k, &v, &out, &dout, &dq, &dk, &dv, &stats};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        be->release(be, all[i]->data);
    ad_backend_destroy(be);
    return 0;
}
