/* GEMM tuning (ad_cuda_set_gemm_tuning): with it on, every GEMM still equals the CPU reference;
 * a problem is timed once, never where running it more than once would change what it reads (an
 * accumulating GEMM), and the bias-first way gives the epilogue's result. On the emulator,
 * whose heuristic hands out three answers that compute the same bits, the timings are steered
 * (AUDISTILL_CUDA_EMU_ALGO_DELAY_US, AUDISTILL_CUDA_EMU_BIAS_DELAY_US,
 * AUDISTILL_CUDA_EMU_NO_BIAS_DELAY_US) and its record of the last GEMM shows that the fastest
 * answer and way are the ones kept; tuned results equal untuned ones bit for bit. On a
 * GPU the answers may differ in the last bits, so there the comparison is the CPU's tolerance. */
#include "cuda/cuda_test_util.h"

#define S(...) ((const int64_t[]){__VA_ARGS__})

static bool g_emulated;

/* The emulator's record of its last GEMM (tests/cuda_emu/emu_cublaslt.cpp): the answer's number
 * and whether it added the bias in the epilogue. Absent (NULL) in a GPU build. */
extern int ad_emu_last_gemm_algo(void) __attribute__((weak));
extern int ad_emu_last_gemm_bias_epilogue(void) __attribute__((weak));
/* ... and the name of its last kernel launch (tests/cuda_emu/emu_runtime.cpp). */
extern const char *ad_emu_last_kernel(void) __attribute__((weak));

static ad_cuda_gemm_tuning tuning_now(void) {
    ad_cuda_gemm_tuning t;
    CHECK_OK(ad_cuda_gemm_tuning_stats(g_gpu, &t));
    return t;
}

static void set_env(const char *name, const char *value) {
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

/* y = x w^T + bias on both backends, tuning on, called twice (the second runs what the first
 * kept); `M` rows (each test its own, so each call is a problem the backend has not met). Gives
 * the output pair (caller frees); checks y against the CPU and, on the emulator, bit for bit
 * against the same call untuned. */
static void tuned_linear(const char *what, int64_t M, ad_dtype dt, bool with_bias, pair *y_out) {
    const int64_t N = 40, K = 56;
    pair x, w, bias, y, plain;
    pair_make(&x, "x", dt, 2, S(M, K), 1.0f, 0.0f);
    pair_make(&w, "w", dt, 2, S(N, K), 0.2f, 0.0f);
    pair_make(&bias, "bias", dt, 1, S(N), 1.0f, 0.0f);
    pair_make(&y, "y", dt, 2, S(M, N), 1.0f, 0.0f);
    pair_make(&plain, "y untuned", dt, 2, S(M, N), 1.0f, 0.0f);
    CHECK_OK(g_cpu->linear(g_cpu, &y.c, &x.c, &w.c, with_bias ? &bias.c : NULL));
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, false));
    CHECK_OK(g_gpu->linear(g_gpu, &plain.g, &x.g, &w.g, with_bias ? &bias.g : NULL));
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, true));
    CHECK_OK(g_gpu->linear(g_gpu, &y.g, &x.g, &w.g, with_bias ? &bias.g : NULL));
    /* a second call of the tuned problem: the kept answer and way, no timing (the emulator's
     * record of its last GEMM is this call's) */
    CHECK_OK(g_gpu->linear(g_gpu, &y.g, &x.g, &w.g, with_bias ? &bias.g : NULL));
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, false));
    expect_close(what, &y, dt == AD_F32 ? TOL_F32 : TOL_BF16);
    if (g_emulated)
        CHECK_MSG(same_bits(&y.g, &plain.g), "%s: tuned result differs from untuned", what);
    pair_free(&x);
    pair_free(&w);
    pair_free(&bias);
    pair_free(&plain);
    *y_out = y;
}

/* Each new problem is tuned once, with at least one answer timed; repeats are not. */
static void test_tuned_problems(void) {
    for (int b = 0; b < 2; b++)
        for (int d = 0; d < 2; d++) {
            const ad_dtype dt = d ? AD_BF16 : AD_F32;
            const ad_cuda_gemm_tuning before = tuning_now();
            char what[96];
            snprintf(what, sizeof what, "tuned linear, %s%s", ad_dtype_name(dt), b ? ", bias" : "");
            pair y;
            tuned_linear(what, 17 + 2 * b + d, dt, b, &y);
            pair_free(&y);
            const ad_cuda_gemm_tuning after = tuning_now();
            /* a bias problem under tuning: the epilogue problem and the bias-first one */
            const long want = b ? 2 : 1;
            CHECK_MSG(after.problems - before.problems == want,
                      "%s: %ld problems tuned, expected %ld", what,
                      after.problems - before.problems, want);
            CHECK_MSG(after.candidates - before.candidates >= want,
                      "%s: %ld answers timed for %ld problems", what,
                      after.candidates - before.candidates, want);
            CHECK_MSG(after.first_ms >= before.first_ms && after.best_ms <= after.first_ms,
                      "%s: chosen answers slower than the heuristic's firsts", what);
        }
}

/* An accumulating GEMM (beta 1) runs once, untuned: y = a b + y exactly once. */
static void test_accumulate_untouched(void) {
    pair a, b, y;
    pair_make(&a, "a", AD_F32, 2, S(23, 31), 1.0f, 0.0f);
    pair_make(&b, "b", AD_F32, 2, S(31, 29), 1.0f, 0.0f);
    pair_make(&y, "y", AD_F32, 2, S(23, 29), 1.0f, 0.0f);
    const ad_cuda_gemm_tuning before = tuning_now();
    CHECK_OK(g_cpu->matmul(g_cpu, &y.c, &a.c, false, &b.c, false, 1.0f, 1.0f));
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, true));
    CHECK_OK(g_gpu->matmul(g_gpu, &y.g, &a.g, false, &b.g, false, 1.0f, 1.0f));
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, false));
    expect_close("tuning on, matmul accumulating (beta 1)", &y, TOL_F32);
    CHECK_MSG(tuning_now().problems == before.problems, "an accumulating GEMM was tuned");
    /* the same problem at beta 0 may be tuned, and is right */
    CHECK_OK(g_cpu->matmul(g_cpu, &y.c, &a.c, false, &b.c, false, 1.0f, 0.0f));
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, true));
    CHECK_OK(g_gpu->matmul(g_gpu, &y.g, &a.g, false, &b.g, false, 1.0f, 0.0f));
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, false));
    expect_close("tuning on, the same matmul at beta 0", &y, TOL_F32);
    CHECK_MSG(tuning_now().problems == before.problems + 1, "a beta-0 GEMM was not tuned");
    pair_free(&a);
    pair_free(&b);
    pair_free(&y);
}

/* Emulator only: steered timings choose the answer and the bias way. */
static void test_steered_choices(void) {
    if (!g_emulated || !ad_emu_last_gemm_algo || !ad_emu_last_gemm_bias_epilogue) {
        printf("  (steered choices: emulator only)\n");
        return;
    }
    static const struct {
        const char *delays, *bias_delay, *no_bias_delay;
        bool bias;
        long changed, bias_first;
        int kept_algo, kept_epilogue; /* the second call's GEMM */
    } cases[] = {
        /* the heuristic's first is fastest */
        {"0,60000,60000", NULL, NULL, false, 0, 0, 0, 0},
        /* the third is */
        {"60000,60000,0", NULL, NULL, false, 1, 0, 2, 0},
        /* the second, both ways; the plain GEMM slow: the epilogue kept */
        {"60000,0,60000", NULL, "80000", true, 2, 0, 1, 1},
        /* a slow epilogue: the bias goes first */
        {"0,60000,60000", "80000", NULL, true, 0, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        set_env("AUDISTILL_CUDA_EMU_ALGO_DELAY_US", cases[i].delays);
        set_env("AUDISTILL_CUDA_EMU_BIAS_DELAY_US", cases[i].bias_delay);
        set_env("AUDISTILL_CUDA_EMU_NO_BIAS_DELAY_US", cases[i].no_bias_delay);
        const ad_cuda_gemm_tuning before = tuning_now();
        char what[96];
        snprintf(what, sizeof what, "steered case %zu (%s%s)", i,
                 cases[i].delays ? cases[i].delays : "bias delay", cases[i].bias ? ", bias" : "");
        pair y;
        tuned_linear(what, 41 + (int64_t)i, AD_BF16, cases[i].bias, &y);
        pair_free(&y);
        const int algo = ad_emu_last_gemm_algo(), epilogue = ad_emu_last_gemm_bias_epilogue();
        CHECK_MSG(algo == cases[i].kept_algo && epilogue == cases[i].kept_epilogue,
                  "%s: the second call ran answer %d %s the bias epilogue, expected answer %d %s",
                  what, algo, epilogue ? "with" : "without", cases[i].kept_algo,
                  cases[i].kept_epilogue ? "with" : "without");
        const ad_cuda_gemm_tuning after = tuning_now();
        CHECK_MSG(after.changed - before.changed == cases[i].changed,
                  "%s: %ld problems changed answer, expected %ld", what,
                  after.changed - before.changed, cases[i].changed);
        CHECK_MSG(after.bias_first - before.bias_first == cases[i].bias_first,
                  "%s: %ld bias-first choices, expected %ld", what,
                  after.bias_first - before.bias_first, cases[i].bias_first);
    }
    set_env("AUDISTILL_CUDA_EMU_ALGO_DELAY_US", NULL);
    set_env("AUDISTILL_CUDA_EMU_BIAS_DELAY_US", NULL);
    set_env("AUDISTILL_CUDA_EMU_NO_BIAS_DELAY_US", NULL);
}

/* A whole file into memory (the test's own files: small). */
static size_t slurp(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    const size_t n = f ? fread(buf, 1, cap, f) : 0;
    if (f) fclose(f);
    return n;
}

static void spill(const char *path, const char *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f && fwrite(buf, 1, n, f) == n, "cannot write %s", path);
    if (f) fclose(f);
}

/* Load expecting failure with `message` in the error. */
static void expect_load_error(const char *path, const char *message) {
    ad_backend *be;
    CHECK_OK(ad_backend_cuda_create(&be, 0));
    long loaded = 0;
    const int rc = ad_cuda_gemm_tuning_load(be, path, &loaded);
    CHECK_MSG(rc < 0 && strstr(ad_error(), message), "load: rc %d, error '%s', expected '%s'", rc,
              rc < 0 ? ad_error() : "", message);
    ad_backend_destroy(be);
}

/* Choices saved by one backend and loaded by another are used there, tuning off: the same
 * algorithm and way (on the emulator, the third answer the delays steered the first backend to,
 * which the second reaches without a delay), so the same bits on the emulator. A file of another
 * GPU is not loaded; a damaged one is an error naming it. */
static void test_tuning_file(void) {
    char path[] = "/tmp/audistill_gemm_tuning_XXXXXX";
    const int fd = mkstemp(path);
    CHECK_MSG(fd >= 0, "mkstemp");
    close(fd);
    const int64_t M = 67, N = 40, K = 56;
    pair x, w, bias, y1, y2;
    pair_make(&x, "x", AD_BF16, 2, S(M, K), 1.0f, 0.0f);
    pair_make(&w, "w", AD_BF16, 2, S(N, K), 0.2f, 0.0f);
    pair_make(&bias, "bias", AD_BF16, 1, S(N), 1.0f, 0.0f);
    pair_make(&y1, "y", AD_BF16, 2, S(M, N), 1.0f, 0.0f);
    pair_make(&y2, "y", AD_BF16, 2, S(M, N), 1.0f, 0.0f);
    if (g_emulated) set_env("AUDISTILL_CUDA_EMU_ALGO_DELAY_US", "60000,60000,0");
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, true));
    CHECK_OK(g_gpu->linear(g_gpu, &y1.g, &x.g, &w.g, &bias.g));
    CHECK_OK(ad_cuda_set_gemm_tuning(g_gpu, false));
    long saved = 0, again = -1;
    CHECK_OK(ad_cuda_gemm_tuning_save(g_gpu, path, &saved));
    CHECK_OK(ad_cuda_gemm_tuning_save(g_gpu, path, &again));
    const ad_cuda_gemm_tuning tuned = tuning_now();
    CHECK_MSG(saved == tuned.problems && saved >= 2 && again == 0,
              "saved %ld choices of %ld tuned problems, then %ld (expected 0: nothing new)", saved,
              tuned.problems, again);

    ad_backend *be2;
    CHECK_OK(ad_backend_cuda_create(&be2, 0));
    long loaded = 0;
    CHECK_OK(ad_cuda_gemm_tuning_load(be2, path, &loaded));
    CHECK_MSG(loaded == saved, "loaded %ld of %ld choices", loaded, saved);
    CHECK_OK(be2->linear(be2, &y2.g, &x.g, &w.g, &bias.g));
    ad_cuda_gemm_tuning t2;
    CHECK_OK(ad_cuda_gemm_tuning_stats(be2, &t2));
    CHECK_MSG(t2.problems == 0, "the loading backend tuned %ld problems", t2.problems);
    CHECK_OK(g_cpu->linear(g_cpu, &y2.c, &x.c, &w.c, &bias.c));
    expect_close("linear with loaded choices", &y2, TOL_BF16);
    if (g_emulated && ad_emu_last_gemm_algo) {
        CHECK_MSG(ad_emu_last_gemm_algo() == 2, "the loaded choice ran answer %d, not the third",
                  ad_emu_last_gemm_algo());
        CHECK_MSG(same_bits(&y1.g, &y2.g), "the loaded choice computed other bits");
    }
    set_env("AUDISTILL_CUDA_EMU_ALGO_DELAY_US", NULL);
    /* a backend that has met a problem keeps its own choice over a file's */
    CHECK_OK(ad_cuda_gemm_tuning_load(be2, path, &loaded));
    CHECK_MSG(loaded == 0, "a second load took %ld choices", loaded);
    ad_backend_destroy(be2);

    static char buf[1 << 16];
    const size_t n = slurp(path, buf, sizeof buf);
    CHECK_MSG(n > 312 && n < sizeof buf, "the file has %zu bytes", n);
    char bad[] = "/tmp/audistill_gemm_tuning_bad_XXXXXX";
    const int bfd = mkstemp(bad);
    CHECK_MSG(bfd >= 0, "mkstemp");
    close(bfd);
    /* another GPU: the device name in the header (after the magic, two sizes and the version) */
    char other[1 << 16];
    memcpy(other, buf, n);
    snprintf(other + 48, 256, "%s", "Some other GPU");
    spill(bad, other, n);
    ad_backend *be3;
    CHECK_OK(ad_backend_cuda_create(&be3, 0));
    CHECK_OK(ad_cuda_gemm_tuning_load(be3, bad, &loaded));
    CHECK_MSG(loaded == -1, "a file of another GPU: loaded %ld (expected -1)", loaded);
    ad_backend_destroy(be3);
    spill(bad, buf, 100);
    expect_load_error(bad, "less than its header");
    spill(bad, buf, n - 8);
    expect_load_error(bad, "truncated or damaged");
    memcpy(other, buf, n);
    other[0] = 'X';
    spill(bad, other, n);
    expect_load_error(bad, "is not a GEMM tuning file");
    unlink(bad);
    unlink(path);
    pair_free(&x);
    pair_free(&w);
    pair_free(&bias);
    pair_free(&y1);
    pair_free(&y2);
}

/* Flash attention's switches under tuning: the same bits as the defaults, forward and backward
 * (so on a GPU too), each shape timed once; on the emulator, a slowed default kernel makes the
 * tuning keep other switches, still the same bits. Switches fixed by the environment are not
 * tuned. */
static void test_flash_switches_tuned(void) {
    static const int padded[2] = {40, 23};
    static const struct {
        int D;
        bool causal;
        const int *key_len;
        const char *slow; /* the default kernels, slowed on the emulator */
    } cases[] = {
        {64, false, padded, "fa_forward_kernel<D,narrow>=60000;fa_dq_kernel<D,narrow>=60000"},
        {128, true, NULL, "fa_forward_kernel<D,false>=60000;fa_dq_kernel<D,false>=60000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int fixed = 0; fixed < 2; fixed++) {
            if (fixed) setenv("AUDISTILL_CUDA_FLASH_PIPE", "1", 1);
            ad_backend *tuned;
            const int rc = ad_backend_cuda_create(&tuned, 0);
            unsetenv("AUDISTILL_CUDA_FLASH_PIPE");
            CHECK_OK(rc);
            if (rc < 0) continue;
            CHECK_OK(ad_cuda_set_gemm_tuning(tuned, true));
            CHECK_OK(ad_cuda_set_attention_path(tuned, AD_CUDA_ATTENTION_FLASH));
            CHECK_OK(ad_cuda_set_attention_path(g_gpu, AD_CUDA_ATTENTION_FLASH));
            const int B = 2, T = 40, H = 2, D = cases[i].D;
            pair q, k, v, out, out2, dout, g1[3], g2[3];
            pair_make(&q, "q", AD_BF16, 3, S(B, T, H * D), 1.0f, 0.0f);
            pair_make(&k, "k", AD_BF16, 3, S(B, T, H * D), 1.0f, 0.0f);
            pair_make(&v, "v", AD_BF16, 3, S(B, T, H * D), 1.0f, 0.0f);
            pair_make(&out, "out", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
            pair_make(&out2, "out", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
            pair_make(&dout, "dout", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
            for (int j = 0; j < 3; j++) {
                pair_make(&g1[j], "grad", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
                pair_make(&g2[j], "grad", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
            }
            const ad_attention_params p = {
                H, H, D, cases[i].causal, 0, 1.0f / sqrtf((float)D), cases[i].key_len, NULL};
            CHECK_OK(g_gpu->attention(g_gpu, &out.g, &q.g, &k.g, &v.g, &p));
            /* tuning reruns a call: gradients that are also inputs are refused first */
            CHECK_FAILS_WITH(tuned->attention_backward(tuned, &g1[0].g, &g1[1].g, &g1[2].g, &dout.g,
                                                       &g1[0].g, &q.g, &k.g, &v.g, &p),
                             "overlaps input");
            CHECK_OK(g_gpu->attention_backward(g_gpu, &g1[0].g, &g1[1].g, &g1[2].g, &dout.g, &out.g,
                                               &q.g, &k.g, &v.g, &p));
            if (g_emulated && !fixed) set_env("AUDISTILL_CUDA_EMU_KERNEL_DELAY_US", cases[i].slow);
            for (int rep = 0; rep < 2; rep++) { /* the second: the kept switches, untimed */
                CHECK_OK(tuned->attention(tuned, &out2.g, &q.g, &k.g, &v.g, &p));
                CHECK_OK(tuned->attention_backward(tuned, &g2[0].g, &g2[1].g, &g2[2].g, &dout.g,
                                                   &out.g, &q.g, &k.g, &v.g, &p));
            }
            set_env("AUDISTILL_CUDA_EMU_KERNEL_DELAY_US", NULL);
            if (g_emulated && !fixed && ad_emu_last_kernel) {
                /* a third forward runs the kept kernel, not the slowed default */
                CHECK_OK(tuned->attention(tuned, &out2.g, &q.g, &k.g, &v.g, &p));
                const char *ran = ad_emu_last_kernel();
                CHECK_MSG(strncmp(cases[i].slow, ran, strlen(ran)) != 0 ||
                              cases[i].slow[strlen(ran)] != '=',
                          "head dim %d: the kept forward is the slowed default %s", D, ran);
            }
            ad_cuda_gemm_tuning t;
            CHECK_OK(ad_cuda_gemm_tuning_stats(tuned, &t));
            printf("  flash head dim %d%s: %ld shapes tuned, %ld kept other switches\n", D,
                   fixed ? " (AUDISTILL_CUDA_FLASH_PIPE set)" : "", t.attention_problems,
                   t.attention_changed);
            CHECK_MSG(t.attention_problems == (fixed ? 0 : 2),
                      "head dim %d: %ld attention shapes tuned, expected %d", D,
                      t.attention_problems, fixed ? 0 : 2);
            if (g_emulated && !fixed)
                CHECK_MSG(t.attention_changed == 2,
                          "head dim %d: the slowed default kernels kept (%ld changed)", D,
                          t.attention_changed);
            CHECK_MSG(same_bits(&out.g, &out2.g), "head dim %d: tuned switches changed the output",
                      D);
            for (int j = 0; j < 3; j++)
                CHECK_MSG(same_bits(&g1[j].g, &g2[j].g),
                          "head dim %d: tuned switches changed gradient %d", D, j);
            for (int j = 0; j < 3; j++)
                pair_free(&g1[j]), pair_free(&g2[j]);
            pair_free(&q), pair_free(&k), pair_free(&v), pair_free(&out), pair_free(&out2);
            pair_free(&dout);
            CHECK_OK(ad_cuda_set_attention_path(g_gpu, AD_CUDA_ATTENTION_AUTO));
            ad_backend_destroy(tuned);
        }
}

int main(void) {
    setup_backends(20261128);
    char name[256];
    g_emulated = ad_cuda_describe(0, name, sizeof name) == AD_OK && strstr(name, "emulator");
    /* The emulator's delays steer the tuning on a clock that only they and the launches
     * advance: on the host clock the candidates' own emulation times (under ASan, on a slow
     * machine) could outweigh them. */
    if (g_emulated) setenv("AUDISTILL_CUDA_EMU_CLOCK", "virtual", 1);
    RUN(test_tuned_problems);
    RUN(test_accumulate_untouched);
    RUN(test_steered_choices);
    RUN(test_tuning_file);
    RUN(test_flash_switches_tuned);
    teardown_backends();
    return test_report();
}
