/* The reference recording: jfk.flac (44.1 kHz stereo 24-bit) decoded, down-mixed and
 * resampled to 16 kHz must match jfk.wav (the same speech as 16 kHz mono 16-bit) to 30 dB
 * SNR, and time-range reads of the FLAC must equal slices of the whole read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/audio_file.h"
#include "io/file.h"
#include "test.h"

static char flac[1024], wav[1024];

static double snr_db(const float *ref, const float *x, int64_t n, int64_t lag) {
    double s = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i + lag;
        double xv = j >= 0 && j < n ? x[j] : 0.0;
        s += (double)ref[i] * ref[i];
        e += (xv - ref[i]) * (xv - ref[i]);
    }
    return 10 * log10(s / e);
}

static void test_flac_matches_wav(void) {
    ad_audio_info info;
    CHECK_OK(ad_audio_probe(flac, &info));
    CHECK(info.sample_rate == 44100 && info.channels == 2);
    float *a, *b;
    int64_t na, nb;
    CHECK_OK(ad_audio_read(flac, 0, 0, 16000, &a, &na));
    CHECK_OK(ad_audio_read(wav, 0, 0, 16000, &b, &nb));
    CHECK(nb == 176000);
    CHECK_MSG(llabs(na - nb) <= 16, "flac gives %lld samples, wav %lld", (long long)na,
              (long long)nb);
    int64_t n = na < nb ? na : nb;
    double snr = snr_db(b, a, n, 0);
    double best = snr;
    int64_t best_lag = 0;
    for (int64_t lag = -20; lag <= 20; lag++) {
        double s = snr_db(b, a, n, lag);
        if (s > best) best = s, best_lag = lag;
    }
    printf("jfk.flac -> 16 kHz mono vs jfk.wav: %lld vs %lld samples, SNR %.2f dB at lag 0 "
           "(best %.2f dB at lag %lld)\n",
           (long long)na, (long long)nb, snr, best, (long long)best_lag);
    CHECK_MSG(snr >= 30.0, "SNR %.2f dB", snr);
    free(a);
    free(b);
}

static void test_flac_ranges(void) {
    float *x;
    int64_t n;
    CHECK_OK(ad_audio_read(flac, 0, 0, 16000, &x, &n));
    const double ranges[][2] = {{0, 1.0}, {2.5, 3.0}, {7.77, 0}, {10.9, 2.0}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        float *y;
        int64_t m;
        CHECK_OK(ad_audio_read(flac, ranges[r][0], ranges[r][1], 16000, &y, &m));
        int64_t j0 = llround(ranges[r][0] * 16000);
        int64_t want = ranges[r][1] > 0 ? llround(ranges[r][1] * 16000) : n - j0;
        if (j0 + want > n) want = n - j0;
        CHECK(m == want);
        double worst = 0;
        for (int64_t i = 0; i < m && i < want; i++)
            worst = fmax(worst, fabs((double)y[i] - x[j0 + i]));
        CHECK_MSG(worst < 1e-5, "range %g+%g differs from the slice by %g", ranges[r][0],
                  ranges[r][1], worst);
        free(y);
    }
    free(x);
    CHECK_FAILS_WITH(ad_audio_read(flac, 11.5, 0, 16000, &x, &n), "jfk.flac");
}

int main(void) {
    snprintf(flac, sizeof flac, "%s/audio/jfk.flac", test_ref_dir());
    snprintf(wav, sizeof wav, "%s/audio/jfk.wav", test_ref_dir());
    if (!ad_path_exists(flac) || !ad_path_exists(wav))
        TEST_SKIP("reference audio %s not present", flac);
    RUN(test_flac_matches_wav);
    RUN(test_flac_ranges);
    return test_report();
}
