/* The front end on the shared reference files: the generated 128-bin Slaney filterbank
 * against Whisper's published mel_128 matrix, and the features of jfk.wav against
 * transformers' WhisperFeatureExtractor (fixture jfk_features.npy: its 1100 valid frames
 * and 4 padded ones). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "audio/mel.h"
#include "io/audio_file.h"
#include "io/file.h"
#include "io/npy.h"
#include "test.h"

static char path[1024];

static void test_filter_bank(void) {
    snprintf(path, sizeof path, "%s/whisper/mel_128.f32", test_ref_dir());
    char *raw;
    size_t size;
    CHECK_OK(ad_read_file(path, 1 << 20, &raw, &size));
    CHECK(size == sizeof(float) * 128 * AD_MEL_N_FREQ);
    if (size != sizeof(float) * 128 * AD_MEL_N_FREQ) return;
    ad_mel mel;
    CHECK_OK(ad_mel_init(&mel, 128));
    const float *ref = (const float *)raw;
    double worst = 0, peak = 0;
    for (int i = 0; i < 128 * AD_MEL_N_FREQ; i++) {
        worst = fmax(worst, fabs(mel.filters[i] - ref[i]));
        peak = fmax(peak, fabs(ref[i]));
    }
    printf("mel filterbank 128x201: max |diff| %.3g vs Whisper's mel_128 (max value %.4g)\n", worst,
           peak);
    CHECK_MSG(worst <= 1e-6, "max |diff| %g", worst);
    ad_mel_free(&mel);
    free(raw);
}

static void test_jfk_features(void) {
    snprintf(path, sizeof path, "%s/audio/jfk.wav", test_ref_dir());
    float *x;
    int64_t n;
    CHECK_OK(ad_audio_read(path, 0, 0, AD_MEL_SAMPLE_RATE, &x, &n));
    CHECK(n == 176000 && ad_mel_valid_frames(n) == 1100);
    ad_mel mel;
    CHECK_OK(ad_mel_init(&mel, 128));
    float *feat = malloc(sizeof *feat * 128 * AD_MEL_FRAMES);
    CHECK_OK(ad_mel_compute(&mel, x, n, feat));
    snprintf(path, sizeof path, "%s/audio/jfk_features.npy", AUDISTILL_FIXTURES);
    ad_npy e;
    CHECK_OK(ad_npy_read(path, &e));
    CHECK(e.dtype == AD_NPY_F4 && e.ndim == 2 && e.shape[0] == 128 && e.shape[1] == 1104);
    if (e.ndim == 2 && e.shape[0] == 128 && e.shape[1] == 1104) {
        const float *want = e.data;
        double worst = 0;
        for (int m = 0; m < 128; m++)
            for (int t = 0; t < 1104; t++) {
                double d = fabs((double)feat[m * AD_MEL_FRAMES + t] - want[m * 1104 + t]);
                if (!(d <= worst)) worst = d;
            }
        printf("jfk.wav features: max |diff| %.3g vs WhisperFeatureExtractor (1104 frames)\n",
               worst);
        CHECK_MSG(worst <= 1e-4, "max |diff| %g", worst);
    }
    ad_npy_free(&e);
    free(feat);
    free(x);
    ad_mel_free(&mel);
}

int main(void) {
    snprintf(path, sizeof path, "%s/whisper/mel_128.f32", test_ref_dir());
    if (!ad_path_exists(path)) TEST_SKIP("reference files in %s not present", test_ref_dir());
    RUN(test_filter_bank);
    RUN(test_jfk_features);
    return test_report();
}
