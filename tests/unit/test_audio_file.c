/* Audio file reading and writing on files the test makes itself: 16-bit WAV round trip,
 * a 44.1 kHz stereo 24-bit file down-mixed and resampled against the analytic signal,
 * FLAC and OGG decoding, range reads against slices of whole-file reads, and clear errors
 * for missing, empty, non-audio and zero-length files and offsets past the end. */
#include <math.h>
#include <sndfile.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "io/audio_file.h"
#include "io/file.h"
#include "test.h"

static char tmp_path[512];

static const char *tmp(const char *name) {
    snprintf(tmp_path, sizeof tmp_path, "%s/audio_file_%ld_%s", AUDISTILL_TEST_TMP, (long)getpid(),
             name);
    return tmp_path;
}

/* The test signal: two sines per channel, different per channel so the mean matters. */
static double channel_signal(int c, double t) {
    return c == 0 ? 0.5 * sin(2 * M_PI * 440.0 * t) + 0.1 * sin(2 * M_PI * 3000.0 * t)
                  : 0.3 * sin(2 * M_PI * 440.0 * t + 1.0) - 0.2 * sin(2 * M_PI * 1234.5 * t);
}

static double mono_signal(double t) {
    return 0.5 * (channel_signal(0, t) + channel_signal(1, t));
}

/* Writes `seconds` of the signal with libsndfile directly (independent of the code tested). */
static int write_test_file(const char *path, int format, int rate, int channels, double seconds) {
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf) {
        fprintf(stderr, "cannot write %s: %s\n", path, sf_strerror(NULL));
        return -1;
    }
    int64_t frames = (int64_t)llround(seconds * rate);
    float *buf = malloc(sizeof *buf * (size_t)frames * (size_t)channels);
    for (int64_t i = 0; i < frames; i++)
        for (int c = 0; c < channels; c++)
            buf[i * channels + c] = (float)(channels == 1 ? mono_signal((double)i / rate)
                                                          : channel_signal(c, (double)i / rate));
    sf_count_t w = sf_writef_float(sf, buf, frames);
    free(buf);
    sf_close(sf);
    return w == frames ? 0 : -1;
}

/* SNR in dB of x against the analytic mono signal at `rate`, over samples [from, to). */
static double snr_vs_signal(const float *x, int64_t from, int64_t to, int rate) {
    double s = 0, e = 0;
    for (int64_t i = from; i < to; i++) {
        double ref = mono_signal((double)i / rate);
        s += ref * ref;
        e += (x[i] - ref) * (x[i] - ref);
    }
    return 10 * log10(s / (e > 0 ? e : 1e-300));
}

static void test_wav16_round_trip(void) {
    const char *path = tmp("round.wav");
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 1);
    const int64_t n = 12345;
    float *x = malloc(sizeof *x * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((double)ad_rng_below(&rng, 65536) - 32768) / 32768.0f;
    x[0] = 1.5f;  /* clipped to 32767 */
    x[1] = -2.0f; /* clipped to -32768 */
    CHECK_OK(ad_audio_write_wav16(path, x, n, 16000));
    ad_audio_info info;
    CHECK_OK(ad_audio_probe(path, &info));
    CHECK(info.sample_rate == 16000 && info.channels == 1 && info.frames == n);
    float *y;
    int64_t m;
    CHECK_OK(ad_audio_read(path, 0, 0, 16000, &y, &m));
    CHECK(m == n);
    if (m == n) {
        int exact = 1;
        for (int64_t i = 2; i < n; i++)
            exact &= y[i] == x[i];
        CHECK(exact);
        CHECK(y[0] == 32767.0f / 32768.0f && y[1] == -1.0f);
    }
    free(y);
    /* The temporary name is gone after the rename. */
    char leftover[600];
    snprintf(leftover, sizeof leftover, "%s.tmp.%ld", path, (long)getpid());
    CHECK(!ad_path_exists(leftover));
    CHECK_FAILS_WITH(ad_audio_write_wav16(tmp("no_such_dir/x.wav"), x, n, 16000), "no_such_dir");
    CHECK_FAILS_WITH(ad_audio_write_wav16(path, x, n, 0), "sample rate");
    free(x);
    unlink(path);
}

/* 44.1 kHz stereo 24-bit: down-mix + resampling against the analytic signal at 16 kHz. */
static void test_stereo_resample(void) {
    const char *path = tmp("stereo.wav");
    CHECK(write_test_file(path, SF_FORMAT_WAV | SF_FORMAT_PCM_24, 44100, 2, 2.5) == 0);
    ad_audio_info info;
    CHECK_OK(ad_audio_probe(path, &info));
    CHECK(info.sample_rate == 44100 && info.channels == 2 && info.frames == 110250);
    float *x;
    int64_t n;
    CHECK_OK(ad_audio_read(path, 0, 0, 16000, &x, &n));
    CHECK(n == 40000);
    /* Away from the edges (where the signal starts/stops abruptly) the resampler is
     * transparent: HQ soxr is specified at ~-125 dB, 24-bit input at ~-140 dB. */
    double snr = snr_vs_signal(x, 800, n - 800, 16000);
    printf("stereo 44.1 kHz -> 16 kHz mono: SNR %.1f dB vs the analytic signal\n", snr);
    CHECK_MSG(snr > 90, "SNR %.1f dB", snr);
    double snr_all = snr_vs_signal(x, 0, n, 16000);
    CHECK_MSG(snr_all > 30, "SNR with edges %.1f dB", snr_all);

    /* Range reads equal slices of the whole read. */
    const double ranges[][2] = {{0, 0.5},        {0.3, 0.25},   {1.0, 0}, {2.4, 5.0},
                                {1.23456, 0.01}, {0.0001, 0.3}, {2.49, 0}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        float *y;
        int64_t m;
        CHECK_OK(ad_audio_read(path, ranges[r][0], ranges[r][1], 16000, &y, &m));
        int64_t j0 = llround(ranges[r][0] * 16000);
        int64_t want = ranges[r][1] > 0 ? llround(ranges[r][1] * 16000) : n - j0;
        if (j0 + want > n) want = n - j0;
        CHECK_MSG(m == want, "range %g+%g: %lld samples, expected %lld", ranges[r][0], ranges[r][1],
                  (long long)m, (long long)want);
        double worst = 0;
        for (int64_t i = 0; i < m && i < want; i++) {
            double d = fabs((double)y[i] - x[j0 + i]);
            if (d > worst) worst = d;
        }
        CHECK_MSG(worst < 1e-5, "range %g+%g differs from the slice by %g", ranges[r][0],
                  ranges[r][1], worst);
        free(y);
    }
    free(x);
    unlink(path);
}

static void test_same_rate_range(void) {
    const char *path = tmp("mono16.wav");
    CHECK(write_test_file(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, 1.0) == 0);
    float *x, *y;
    int64_t n, m;
    CHECK_OK(ad_audio_read(path, 0, 0, 16000, &x, &n));
    CHECK(n == 16000);
    CHECK_OK(ad_audio_read(path, 0.25, 0.5, 16000, &y, &m));
    CHECK(m == 8000);
    if (n == 16000 && m == 8000) CHECK(memcmp(y, x + 4000, sizeof *y * 8000) == 0);
    free(y);
    free(x);
    unlink(path);
}

static void test_flac_ogg(void) {
    const struct {
        const char *name;
        int format;
        double min_snr;
    } cases[] = {{"t.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 60},
                 {"t.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 15}};
    for (size_t c = 0; c < 2; c++) {
        const char *path = tmp(cases[c].name);
        SF_INFO probe = {.samplerate = 22050, .channels = 1, .format = cases[c].format};
        if (!sf_format_check(&probe)) {
            printf("note: this libsndfile cannot write %s; not tested\n", cases[c].name);
            continue;
        }
        CHECK(write_test_file(path, cases[c].format, 22050, 1, 1.5) == 0);
        float *x;
        int64_t n;
        CHECK_OK(ad_audio_read(path, 0, 0, 16000, &x, &n));
        CHECK(n == 24000);
        double snr = n == 24000 ? snr_vs_signal(x, 800, n - 800, 16000) : 0;
        printf("%s 22.05 kHz -> 16 kHz: SNR %.1f dB\n", cases[c].name, snr);
        CHECK_MSG(snr > cases[c].min_snr, "%s: SNR %.1f dB", cases[c].name, snr);
        float *y;
        int64_t m;
        CHECK_OK(ad_audio_read(path, 0.7, 0.2, 16000, &y, &m));
        CHECK(m == 3200);
        double worst = 0;
        for (int64_t i = 0; i < m && n == 24000; i++)
            worst = fmax(worst, fabs((double)y[i] - x[11200 + i]));
        CHECK_MSG(worst < 1e-5, "%s range differs by %g", cases[c].name, worst);
        free(x);
        free(y);
        unlink(path);
    }
}

static void test_errors(void) {
    float *x = NULL;
    int64_t n;
    CHECK_FAILS_WITH(ad_audio_read(tmp("missing.wav"), 0, 0, 16000, &x, &n), "missing.wav");
    CHECK_FAILS_WITH(ad_audio_read(AUDISTILL_TEST_TMP, 0, 0, 16000, &x, &n), "directory");

    const char *empty = tmp("empty.wav");
    CHECK_OK(ad_write_file_atomic(empty, "", 0));
    CHECK_FAILS_WITH(ad_audio_read(empty, 0, 0, 16000, &x, &n), "empty");
    CHECK_FAILS_WITH(ad_audio_read(empty, 0, 0, 16000, &x, &n), "empty.wav");
    unlink(empty);

    const char *text = tmp("notes.wav");
    const char *words = "these are not the samples you are looking for\n";
    CHECK_OK(ad_write_file_atomic(text, words, strlen(words)));
    CHECK_FAILS_WITH(ad_audio_read(text, 0, 0, 16000, &x, &n), "not a readable audio file");
    CHECK_FAILS_WITH(ad_audio_probe(text, &(ad_audio_info){0}), "notes.wav");
    unlink(text);

    const char *zero = tmp("zero.wav");
    CHECK_OK(ad_audio_write_wav16(zero, NULL, 0, 16000));
    CHECK_FAILS_WITH(ad_audio_read(zero, 0, 0, 16000, &x, &n), "no audio samples");
    unlink(zero);

    const char *one = tmp("one_second.wav");
    float silence[16000] = {0};
    CHECK_OK(ad_audio_write_wav16(one, silence, 16000, 16000));
    CHECK_FAILS_WITH(ad_audio_read(one, 1.0, 0, 16000, &x, &n), "past the end");
    CHECK_FAILS_WITH(ad_audio_read(one, 3.5, 0, 16000, &x, &n), "one_second.wav");
    CHECK_FAILS_WITH(ad_audio_read(one, 5.0, 1.0, 8000, &x, &n), "past the end");
    CHECK_FAILS_WITH(ad_audio_read(one, -0.5, 0, 16000, &x, &n), "offset");
    CHECK_FAILS_WITH(ad_audio_read(one, NAN, 0, 16000, &x, &n), "offset");
    CHECK_FAILS_WITH(ad_audio_read(one, 0, 0, 0, &x, &n), "sample rate");
    CHECK_FAILS_WITH(ad_audio_read(one, 0, 1e-6, 16000, &x, &n), "holds no sample");
    /* Nearly at the end is still fine, and a duration past the end is cut. */
    CHECK_OK(ad_audio_read(one, 0.999, 10.0, 16000, &x, &n));
    CHECK(n == 16);
    free(x);
    unlink(one);
}

int main(void) {
    RUN(test_wav16_round_trip);
    RUN(test_stereo_resample);
    RUN(test_same_rate_range);
    RUN(test_flac_ogg);
    RUN(test_errors);
    return test_report();
}
