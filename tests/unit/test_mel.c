/* The log-mel front end against transformers' WhisperFeatureExtractor (numpy path) on the
 * committed fixtures of tests/fixtures/make_audio_fixtures.py: a 3.3 s noise + sine WAV, a
 * 31 s generated signal (truncated to 30 s) and a 999-sample one; plus the FFT against a
 * direct DFT on fresh random input, and thread-count independence. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audio/fft.h"
#include "audio/mel.h"
#include "core/rng.h"
#include "io/audio_file.h"
#include "io/npy.h"
#include "test.h"

/* Parity with transformers' float32 output (~1e-6 observed; torch's own path differs from
 * numpy's by ~4e-5). */
#define FEATURE_TOL 1e-4

static char fixture[1024];
static ad_mel mel_128;
static float *feat; /* 128 x AD_MEL_FRAMES */

static const char *fx(const char *name) {
    snprintf(fixture, sizeof fixture, "%s/audio/%s", AUDISTILL_FIXTURES, name);
    return fixture;
}

/* The integer signal of make_audio_fixtures.py's synth_int16, as float samples. */
static float *synth(int64_t n, uint32_t seed) {
    float *x = malloc(sizeof *x * (size_t)n);
    uint32_t state = seed;
    for (int64_t i = 0; i < n; i++) {
        state = state * 1664525u + 1013904223u;
        int64_t sec = i / 16000;
        if (sec % 4 == 3) {
            x[i] = 0.0f;
            continue;
        }
        int shift = 2 + (int)(sec % 3);
        int noise = (int)((state >> 16) >> shift) - (32768 >> shift);
        int t = (int)(i % 146);
        int tri = (t < 73 ? t : 146 - t) * 8000 / 73 - 4000;
        x[i] = (float)(noise + tri) / 32768.0f;
    }
    return x;
}

/* Compares the frames listed (or 0..k-1 when frames is NULL) with a (n_mels, k) fixture. */
static double compare(const float *feat, const char *name, const int32_t *frames) {
    ad_npy e;
    if (ad_npy_read(fx(name), &e) < 0) {
        CHECK_MSG(0, "%s", ad_error());
        return INFINITY;
    }
    CHECK(e.dtype == AD_NPY_F4 && e.ndim == 2 && e.shape[0] == 128);
    double worst = 0;
    const float *want = e.data;
    int64_t k = e.shape[1];
    for (int m = 0; m < 128; m++)
        for (int64_t j = 0; j < k; j++) {
            int64_t t = frames ? frames[j] : j;
            double d = fabs((double)feat[(size_t)m * AD_MEL_FRAMES + (size_t)t] -
                            want[(size_t)m * (size_t)k + (size_t)j]);
            if (!(d <= worst)) worst = d; /* NaN propagates */
        }
    printf("%s: max |diff| %.3g over %lld frames\n", name, worst, (long long)k);
    CHECK_MSG(worst <= FEATURE_TOL, "%s: max |diff| %g", name, worst);
    ad_npy_free(&e);
    return worst;
}

static void test_fft_vs_dft(void) {
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid() * 7919u, 3);
    const int sizes[] = {1, 2, 3, 5, 7, 12, 16, 61, 200, 400, 4 * 9 * 25 * 7};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        ad_fft_plan p;
        if (ad_fft_plan_init(&p, n) < 0) {
            CHECK_MSG(0, "%s", ad_error());
            continue;
        }
        ad_cplx *in = malloc(sizeof *in * (size_t)n), *out = malloc(sizeof *out * (size_t)n);
        for (int i = 0; i < n; i++)
            in[i] = (ad_cplx){ad_rng_normal(&rng), ad_rng_normal(&rng)};
        ad_fft(&p, in, out);
        double worst = 0;
        long double *c = malloc(sizeof *c * (size_t)n), *sn = malloc(sizeof *sn * (size_t)n);
        for (int j = 0; j < n; j++) {
            long double a = -2.0L * 3.14159265358979323846264338327950288L * j / n;
            c[j] = cosl(a);
            sn[j] = sinl(a);
        }
        for (int k = 0; k < n; k++) {
            long double re = 0, im = 0;
            for (int j = 0; j < n; j++) {
                size_t r = (size_t)((int64_t)j * k % n);
                re += in[j].re * c[r] - in[j].im * sn[r];
                im += in[j].re * sn[r] + in[j].im * c[r];
            }
            worst = fmax(worst, (double)fabsl(re - out[k].re) + (double)fabsl(im - out[k].im));
        }
        CHECK_MSG(worst < 1e-12 * n, "complex FFT %d: error %g", n, worst);
        free(c);
        free(sn);
        free(in);
        free(out);
        ad_fft_plan_free(&p);
    }
    ad_rfft_plan rp;
    CHECK_OK(ad_rfft_plan_init(&rp, 400));
    double x[400];
    ad_cplx X[201], scratch[400];
    for (int i = 0; i < 400; i++)
        x[i] = ad_rng_normal(&rng);
    ad_rfft(&rp, x, X, scratch);
    double worst = 0;
    for (int k = 0; k <= 200; k++) {
        long double re = 0, im = 0;
        for (int j = 0; j < 400; j++) {
            long double a = -2.0L * 3.14159265358979323846264338327950288L * (j * k % 400) / 400;
            re += x[j] * cosl(a);
            im += x[j] * sinl(a);
        }
        worst = fmax(worst, (double)fabsl(re - X[k].re) + (double)fabsl(im - X[k].im));
    }
    printf("real FFT 400: max error %.2g vs a long double DFT\n", worst);
    CHECK_MSG(worst < 1e-11, "real FFT error %g", worst);
    ad_rfft_plan_free(&rp);
    CHECK_FAILS_WITH(ad_fft_plan_init(&(ad_fft_plan){0}, 67 * 2), "prime factor");
    CHECK_FAILS_WITH(ad_rfft_plan_init(&rp, 401), "even");
}

static void test_medium_wav(void) {
    const ad_mel *mel = &mel_128;
    float *x;
    int64_t n;
    CHECK_OK(ad_audio_read(fx("synth_medium.wav"), 0, 0, AD_MEL_SAMPLE_RATE, &x, &n));
    CHECK(n == 52937);
    CHECK(ad_mel_valid_frames(n) == 331);
    CHECK_OK(ad_mel_compute(mel, x, n, feat));
    compare(feat, "synth_medium_features.npy", NULL);
    /* Frames past the audio are all at the floor: one value, max - 8 scaled. */
    float pad = feat[AD_MEL_FRAMES - 1];
    float max = -INFINITY;
    int floor_only = 1;
    for (size_t i = 0; i < (size_t)128 * AD_MEL_FRAMES; i++)
        max = fmaxf(max, feat[i]);
    for (int m = 0; m < 128; m++)
        for (int t = 400; t < AD_MEL_FRAMES; t++)
            floor_only &= feat[m * AD_MEL_FRAMES + t] == pad;
    CHECK(floor_only);
    CHECK_NEAR(max - pad, 2.0, 1e-5); /* a range of 8 in log10 units is 2 after /4 */
    free(x);
}

static void test_long_and_short(void) {
    const ad_mel *mel = &mel_128;
    float *x = synth(500000, 12345);
    CHECK_OK(ad_mel_compute(mel, x, 500000, feat));
    CHECK(ad_mel_valid_frames(500000) == AD_MEL_FRAMES);
    ad_npy frames;
    if (ad_npy_read(fx("synth_long_frames.npy"), &frames) == 0) {
        CHECK(frames.dtype == AD_NPY_I4 && frames.ndim == 1);
        compare(feat, "synth_long_features.npy", frames.data);
        ad_npy_free(&frames);
    } else {
        CHECK_MSG(0, "%s", ad_error());
    }
    /* Truncation: the samples past 30 s change nothing. */
    float *feat2 = malloc(sizeof *feat2 * 128 * AD_MEL_FRAMES);
    CHECK_OK(ad_mel_compute(mel, x, AD_MEL_CHUNK_SAMPLES, feat2));
    CHECK(memcmp(feat, feat2, sizeof *feat * 128 * AD_MEL_FRAMES) == 0);
    free(x);

    x = synth(999, 777);
    CHECK_OK(ad_mel_compute(mel, x, 999, feat));
    CHECK(ad_mel_valid_frames(999) == 7);
    compare(feat, "synth_short_features.npy", NULL);
    free(x);

    /* No samples at all: everything is the floor, (log10(1e-10) + 4) / 4. */
    CHECK_OK(ad_mel_compute(mel, NULL, 0, feat));
    CHECK_NEAR(feat[0], -1.5, 1e-6);
    CHECK_NEAR(feat[128 * AD_MEL_FRAMES - 1], -1.5, 1e-6);
    CHECK(ad_mel_valid_frames(0) == 0 && ad_mel_valid_frames(160) == 1 &&
          ad_mel_valid_frames(161) == 2);
    CHECK_FAILS_WITH(ad_mel_compute(mel, NULL, -1, feat), "negative");
    free(feat2);
}

/* Frames are independent, so the thread count must not change a single bit. */
static void test_threads(void) {
    const ad_mel *mel = &mel_128;
    float *x = synth(300000, 99);
    float *a = malloc(sizeof *a * 128 * AD_MEL_FRAMES),
          *b = malloc(sizeof *b * 128 * AD_MEL_FRAMES);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK_OK(ad_mel_compute(mel, x, 300000, a));
    omp_set_num_threads(3);
    CHECK_OK(ad_mel_compute(mel, x, 300000, b));
    omp_set_num_threads(saved);
    CHECK(memcmp(a, b, sizeof *a * 128 * AD_MEL_FRAMES) == 0);
    free(a);
    free(b);
    free(x);
}

int main(void) {
    RUN(test_fft_vs_dft);
    CHECK_OK(ad_mel_init(&mel_128, 128));
    feat = malloc(sizeof *feat * 128 * AD_MEL_FRAMES);
    RUN(test_medium_wav);
    RUN(test_long_and_short);
    RUN(test_threads);
    CHECK_FAILS_WITH(ad_mel_init(&(ad_mel){0}, 0), "mel bins");
    free(feat);
    ad_mel_free(&mel_128);
    return test_report();
}
