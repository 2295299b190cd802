/* Energy VAD segmentation on synthetic recordings with known speech and pauses: boundaries
 * where the pauses are (within the padding and a frame), bridging of short gaps, cuts of
 * over-long speech at the quiet points, nothing found in silence or steady noise, and the
 * segmentation YAML entry format. */
#include <math.h>

#include "core/rng.h"
#include "data/segment.h"
#include "test.h"

#define RATE 16000

/* Voiced-speech-like signal: harmonics of a gliding pitch with a syllable-rate envelope that
 * never drops to zero, so its edges are where we put them. */
static void add_speech(float *x, int64_t from, int64_t to, float amplitude, ad_rng *rng) {
    double phase = 0.0, f0 = 110.0 + 60.0 * ad_rng_uniform(rng);
    for (int64_t i = from; i < to; i++) {
        double t = (double)(i - from) / RATE;
        phase += 2.0 * M_PI * (f0 + 20.0 * sin(2.0 * M_PI * 0.7 * t)) / RATE;
        double env = 0.65 + 0.35 * sin(2.0 * M_PI * 4.0 * t);
        double v = 0.0;
        for (int h = 1; h <= 6; h++)
            v += sin(h * phase) / h;
        x[i] += (float)(amplitude * env * v);
    }
}

static void add_noise(float *x, int64_t n, float rms, ad_rng *rng) {
    for (int64_t i = 0; i < n; i++)
        x[i] += rms * ad_rng_normal(rng);
}

static void test_boundaries(void) {
    /* pause, speech, pause, speech, ...: seconds */
    const double layout[] = {0.8, 2.0, 0.5, 1.5, 0.35, 3.0, 1.0, 0.6, 0.9};
    int parts = (int)(sizeof layout / sizeof layout[0]);
    double total = 0.0;
    for (int i = 0; i < parts; i++)
        total += layout[i];
    int64_t n = (int64_t)(total * RATE);
    float *x = calloc((size_t)n, sizeof *x);
    ad_rng rng;
    ad_rng_init(&rng, 99, 1);
    double starts[8], ends[8];
    int n_speech = 0;
    double t = 0.0;
    for (int i = 0; i < parts; i++) {
        if (i % 2 == 1) {
            starts[n_speech] = t;
            ends[n_speech] = t + layout[i];
            add_speech(x, (int64_t)(t * RATE), (int64_t)((t + layout[i]) * RATE), 0.1f, &rng);
            n_speech++;
        }
        t += layout[i];
    }
    add_noise(x, n, 0.003f, &rng); /* about 27 dB below the speech */

    ad_vad_options o;
    ad_vad_defaults(&o);
    ad_vad_segment *s = NULL;
    int count = 0;
    CHECK_OK(ad_vad_segment_audio(x, n, RATE, &o, &s, &count));
    CHECK_MSG(count == n_speech, "%d segments, expected %d", count, n_speech);
    for (int i = 0; i < count && i < n_speech; i++) {
        double a = (double)s[i].start / RATE, b = (double)s[i].end / RATE;
        /* Padding 0.1 s, except where two paddings meet inside a 0.35 s pause: halfway. */
        double want_a = starts[i] - o.pad, want_b = ends[i] + o.pad;
        if (i > 0 && starts[i] - ends[i - 1] < 2 * o.pad + 0.02)
            want_a = (starts[i] + ends[i - 1]) / 2;
        CHECK_MSG(fabs(a - want_a) <= 0.03, "segment %d starts at %.3f, expected %.3f", i, a,
                  want_a);
        CHECK_MSG(fabs(b - want_b) <= 0.03, "segment %d ends at %.3f, expected %.3f", i, b, want_b);
        if (i > 0) CHECK(s[i].start >= s[i - 1].end);
    }
    free(s);

    /* min_silence above the shortest pause (0.35 s) joins the two speech parts around it. */
    o.min_silence = 0.4;
    CHECK_OK(ad_vad_segment_audio(x, n, RATE, &o, &s, &count));
    CHECK_MSG(count == n_speech - 1, "%d segments with min_silence 0.4", count);
    free(s);
    free(x);
}

static void test_long_speech_is_cut_at_quiet_points(void) {
    /* 31 s of speech with 80 ms dips every 1.7 s: dips are too short to end a segment, so a
     * 10 s maximum must cut at them. */
    double seconds = 31.0;
    int64_t n = (int64_t)(seconds * RATE);
    float *x = calloc((size_t)n, sizeof *x);
    ad_rng rng;
    ad_rng_init(&rng, 5, 2);
    double dips[32];
    int n_dips = 0;
    double t = 0.5;
    while (t < seconds - 0.5) {
        double next = t + 1.7 < seconds - 0.5 ? t + 1.7 : seconds - 0.5;
        add_speech(x, (int64_t)(t * RATE), (int64_t)(next * RATE), 0.1f, &rng);
        if (next < seconds - 0.5) dips[n_dips++] = next + 0.04;
        t = next + 0.08;
    }
    add_noise(x, n, 0.003f, &rng);
    ad_vad_options o;
    ad_vad_defaults(&o);
    o.max_seconds = 10.0;
    ad_vad_segment *s = NULL;
    int count = 0;
    CHECK_OK(ad_vad_segment_audio(x, n, RATE, &o, &s, &count));
    CHECK_MSG(count >= 4, "%d segments", count);
    for (int i = 0; i < count; i++) {
        double len = (double)(s[i].end - s[i].start) / RATE;
        CHECK_MSG(len <= 10.0, "segment %d is %.3f s", i, len);
        if (i > 0) {
            CHECK(s[i].start == s[i - 1].end); /* a cut, not a pause */
            double cut = (double)s[i].start / RATE, nearest = 1e9;
            for (int d = 0; d < n_dips; d++)
                if (fabs(cut - dips[d]) < fabs(nearest)) nearest = cut - dips[d];
            CHECK_MSG(fabs(nearest) <= 0.06, "cut at %.3f s is %.3f s from a dip", cut, nearest);
        }
    }
    free(s);
    free(x);
}

static void test_no_speech(void) {
    int64_t n = 5 * RATE;
    float *x = calloc((size_t)n, sizeof *x);
    ad_vad_options o;
    ad_vad_defaults(&o);
    ad_vad_segment *s = NULL;
    int count = -1;
    CHECK_OK(ad_vad_segment_audio(x, n, RATE, &o, &s, &count));
    CHECK(count == 0);
    free(s);
    ad_rng rng;
    ad_rng_init(&rng, 3, 3);
    add_noise(x, n, 0.01f, &rng);
    CHECK_OK(ad_vad_segment_audio(x, n, RATE, &o, &s, &count));
    CHECK_MSG(count == 0, "%d segments in steady noise", count);
    free(s);
    o.max_seconds = 0.0;
    CHECK_FAILS_WITH(ad_vad_segment_audio(x, n, RATE, &o, &s, &count), "must be >= 0.1");
    free(x);
}

static void test_yaml_entry(void) {
    char buf[256];
    ad_segmentation_entry(buf, sizeof buf, 9440, 44800, RATE, "talk_1", "talk_1.wav");
    CHECK_MSG(
        strcmp(buf, "- {duration: 2.8, offset: 0.59, speaker_id: talk_1, wav: talk_1.wav}\n") == 0,
        "%s", buf);
    ad_segmentation_entry(buf, sizeof buf, 1, 16000, RATE, "a", "a.flac");
    CHECK_MSG(strcmp(buf, "- {duration: 1.0, offset: 0.0000625, speaker_id: a, wav: a.flac}\n") ==
                  0,
              "%s", buf);
}

int main(void) {
    RUN(test_boundaries);
    RUN(test_long_speech_is_cut_at_quiet_points);
    RUN(test_no_speech);
    RUN(test_yaml_entry);
    return test_report();
}
