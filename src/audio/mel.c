/* Whisper log-mel features (see mel.h). The arithmetic follows transformers' numpy path step
 * by step, including its precisions: frames, window, FFT, power and the mel product are
 * float64; the FFT output passes through complex64 (transformers stores the STFT in a
 * complex64 array); log10 is taken in float64 and rounded to float32; the max-8 floor and the
 * final scaling are float32. Matching those roundings keeps parity far inside 1e-4. */
#include "audio/mel.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define MEL_LOG_FLOOR  1e-10
#define MEL_DYN_RANGE  8.0f
#define SLANEY_F_BREAK 1000.0 /* Hz where the Slaney scale turns from linear to log */
#define SLANEY_M_BREAK 15.0   /* mel at that frequency (3 * 1000 / 200) */

/* Slaney mel scale (librosa htk=False), written as transformers writes it. */
static double hz_to_mel(double hz) {
    if (hz >= SLANEY_F_BREAK) return SLANEY_M_BREAK + log(hz / SLANEY_F_BREAK) * (27.0 / log(6.4));
    return 3.0 * hz / 200.0;
}

static double mel_to_hz(double mel) {
    if (mel >= SLANEY_M_BREAK)
        return SLANEY_F_BREAK * exp((log(6.4) / 27.0) * (mel - SLANEY_M_BREAK));
    return 200.0 * mel / 3.0;
}

int ad_mel_filter_bank(int n_mels, int n_freq, double fmin_hz, double fmax_hz, int sample_rate,
                       double *out) {
    if (n_mels < 1 || n_freq < 2 || sample_rate < 1 || !(fmin_hz >= 0.0) || !(fmax_hz > fmin_hz))
        return ad_fail("mel filterbank: invalid settings (%d mels, %d bins, %g-%g Hz at %d Hz)",
                       n_mels, n_freq, fmin_hz, fmax_hz, sample_rate);
    double *edges = ad_malloc(sizeof *edges * (size_t)(n_mels + 2), "mel filter edges");
    if (!edges) return AD_ERR;
    /* numpy.linspace: start + i * step, the last point set to stop exactly. */
    const double mel_lo = hz_to_mel(fmin_hz), mel_hi = hz_to_mel(fmax_hz);
    const double mel_step = (mel_hi - mel_lo) / (double)(n_mels + 1);
    for (int i = 0; i < n_mels + 2; i++)
        edges[i] = mel_to_hz(i == n_mels + 1 ? mel_hi : (double)i * mel_step + mel_lo);
    const double nyquist = (double)(sample_rate / 2); /* transformers uses sampling_rate // 2 */
    const double bin_step = nyquist / (double)(n_freq - 1);
    for (int m = 0; m < n_mels; m++) {
        const double left = edges[m + 1] - edges[m], right = edges[m + 2] - edges[m + 1];
        const double enorm = 2.0 / (edges[m + 2] - edges[m]);
        for (int k = 0; k < n_freq; k++) {
            const double f = k == n_freq - 1 ? nyquist : (double)k * bin_step;
            const double down = -(edges[m] - f) / left, up = (edges[m + 2] - f) / right;
            double w = down < up ? down : up;
            if (w < 0.0) w = 0.0;
            out[(size_t)m * (size_t)n_freq + (size_t)k] = w * enorm;
        }
    }
    free(edges);
    return AD_OK;
}

int ad_mel_init(ad_mel *m, int n_mels) {
    memset(m, 0, sizeof *m);
    if (n_mels < 1 || n_mels > 1024)
        return ad_fail("mel front end: %d mel bins is out of range", n_mels);
    m->n_mels = n_mels;
    m->filters = ad_malloc(sizeof *m->filters * (size_t)n_mels * AD_MEL_N_FREQ, "mel filters");
    m->first = ad_malloc(sizeof *m->first * (size_t)n_mels, "mel filters");
    m->last = ad_malloc(sizeof *m->last * (size_t)n_mels, "mel filters");
    if (!m->filters || !m->first || !m->last ||
        ad_mel_filter_bank(n_mels, AD_MEL_N_FREQ, 0.0, AD_MEL_FMAX_HZ, AD_MEL_SAMPLE_RATE,
                           m->filters) < 0 ||
        ad_rfft_plan_init(&m->fft, AD_MEL_N_FFT) < 0) {
        ad_mel_free(m);
        return AD_ERR;
    }
    /* The filters are narrow triangles: summing only their support is exact (the rest are
     * zeros) and ~50x cheaper than the dense product. */
    for (int i = 0; i < n_mels; i++) {
        const double *row = m->filters + (size_t)i * AD_MEL_N_FREQ;
        int lo = 0, hi = AD_MEL_N_FREQ;
        while (lo < hi && row[lo] == 0.0)
            lo++;
        while (hi > lo && row[hi - 1] == 0.0)
            hi--;
        m->first[i] = lo;
        m->last[i] = hi;
    }
    /* numpy.hanning(401)[:-1] (periodic Hann), in numpy's own formula. */
    for (int i = 0; i < AD_MEL_N_FFT; i++)
        m->window[i] =
            0.5 + 0.5 * cos(M_PI * (double)(2 * i - AD_MEL_N_FFT) / (double)AD_MEL_N_FFT);
    return AD_OK;
}

void ad_mel_free(ad_mel *m) {
    free(m->filters);
    free(m->first);
    free(m->last);
    ad_rfft_plan_free(&m->fft);
    memset(m, 0, sizeof *m);
}

int64_t ad_mel_valid_frames(int64_t n_samples) {
    if (n_samples <= 0) return 0;
    int64_t v = (n_samples + AD_MEL_HOP_LENGTH - 1) / AD_MEL_HOP_LENGTH;
    return v < AD_MEL_FRAMES ? v : AD_MEL_FRAMES;
}

/* Per-thread working memory for one frame. */
typedef struct {
    double frame[AD_MEL_N_FFT];
    double power[AD_MEL_N_FREQ];
    ad_cplx spectrum[AD_MEL_N_FREQ];
    ad_cplx scratch[AD_MEL_N_FFT];
} frame_work;

static void mel_frame(const ad_mel *m, const float *padded, int t, frame_work *w, float *out) {
    const float *x = padded + (size_t)t * AD_MEL_HOP_LENGTH;
    for (int i = 0; i < AD_MEL_N_FFT; i++)
        w->frame[i] = (double)x[i] * m->window[i];
    ad_rfft(&m->fft, w->frame, w->spectrum, w->scratch);
    for (int k = 0; k < AD_MEL_N_FREQ; k++) {
        /* Through complex64 as numpy does. numpy then squares hypot(re, im); re^2 + im^2 of
         * the float values is the same number to ~1 ulp of float64 (the squares are exact)
         * and a quarter of the front end's time cheaper. */
        const double re = (float)w->spectrum[k].re, im = (float)w->spectrum[k].im;
        w->power[k] = re * re + im * im;
    }
    for (int i = 0; i < m->n_mels; i++) {
        const double *row = m->filters + (size_t)i * AD_MEL_N_FREQ;
        double sum = 0.0;
        for (int k = m->first[i]; k < m->last[i]; k++)
            sum += row[k] * w->power[k];
        if (sum < MEL_LOG_FLOOR) sum = MEL_LOG_FLOOR;
        out[(size_t)i * AD_MEL_FRAMES + (size_t)t] = (float)log10(sum);
    }
}

int ad_mel_compute(const ad_mel *m, const float *samples, int64_t n, float *out) {
    if (n < 0) return ad_fail("mel front end: negative sample count");
    const int pad = AD_MEL_N_FFT / 2;
    const int64_t len = AD_MEL_CHUNK_SAMPLES;
    const int64_t copy = n < len ? n : len;
    /* The 30 s chunk with reflect padding on both sides (numpy.pad mode="reflect"). */
    float *padded = ad_calloc((size_t)(len + 2 * pad), sizeof *padded, "mel input");
    int threads = omp_get_max_threads();
    frame_work *work = ad_malloc(sizeof *work * (size_t)threads, "mel work");
    if (!padded || !work) {
        free(padded);
        free(work);
        return AD_ERR;
    }
    float *body = padded + pad;
    if (copy > 0) memcpy(body, samples, sizeof *samples * (size_t)copy);
    for (int i = 1; i <= pad; i++) {
        body[-i] = body[i];
        body[len - 1 + i] = body[len - 1 - i];
    }
    /* Frames whose window lies wholly in the zero padding after a short clip have zero power:
     * each of their values is log10 of the floor, bit for bit what mel_frame computes, so only
     * the frames that reach the clip are transformed (a 3 s clip: a tenth of the 30 s). */
    int computed = AD_MEL_FRAMES;
    if (copy < len - pad) {
        const int64_t reach = (copy + pad) / AD_MEL_HOP_LENGTH + 2;
        if (reach < computed) computed = (int)reach;
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int t = 0; t < computed; t++)
        mel_frame(m, padded, t, &work[omp_get_thread_num()], out);
    const float silent = (float)log10(MEL_LOG_FLOOR);
    for (int i = 0; i < m->n_mels; i++)
        for (int t = computed; t < AD_MEL_FRAMES; t++)
            out[(size_t)i * AD_MEL_FRAMES + (size_t)t] = silent;

    const size_t total = (size_t)m->n_mels * AD_MEL_FRAMES;
    float max = -INFINITY;
    for (size_t i = 0; i < total; i++)
        if (out[i] > max) max = out[i];
    const float floor_value = max - MEL_DYN_RANGE;
    for (size_t i = 0; i < total; i++) {
        float v = out[i] < floor_value ? floor_value : out[i];
        out[i] = (v + 4.0f) / 4.0f;
    }
    free(padded);
    free(work);
    return AD_OK;
}
