/* The Whisper log-mel front end, exactly as transformers' WhisperFeatureExtractor computes it
 * on its numpy path: 16 kHz mono samples truncated or zero-padded to 30 s, periodic Hann
 * window of 400, centred frames (reflect padding of 200), 400-point real FFT, power spectrum,
 * Slaney mel filterbank (0-8000 Hz, area-normalised), log10 of max(x, 1e-10), the last STFT
 * frame dropped, a floor at (the example's maximum - 8) and (x + 4) / 4.
 * It owns the numbers only: reading audio files is src/io/audio_file.h's job. */
#ifndef AUDISTILL_AUDIO_MEL_H
#define AUDISTILL_AUDIO_MEL_H

#include <stdint.h>

#include "audio/fft.h"
#include "core/error.h"

#define AD_MEL_SAMPLE_RATE   16000
#define AD_MEL_N_FFT         400
#define AD_MEL_HOP_LENGTH    160
#define AD_MEL_N_FREQ        (AD_MEL_N_FFT / 2 + 1)
#define AD_MEL_CHUNK_SAMPLES (30 * AD_MEL_SAMPLE_RATE)
#define AD_MEL_FRAMES        (AD_MEL_CHUNK_SAMPLES / AD_MEL_HOP_LENGTH)
#define AD_MEL_FMAX_HZ       8000.0

typedef struct {
    int n_mels;
    double *filters;   /* n_mels x AD_MEL_N_FREQ, row-major */
    int *first, *last; /* nonzero bins of filter m: [first[m], last[m]) */
    double window[AD_MEL_N_FFT];
    ad_rfft_plan fft;
} ad_mel;

/* The Slaney-scale, Slaney-normalised triangular filters of transformers' mel_filter_bank
 * (mel_scale="slaney", norm="slaney"), computed in float64: n_mels x n_freq, row-major
 * (the transpose of transformers' layout), for FFT bins spaced evenly over [0, rate/2]. */
int ad_mel_filter_bank(int n_mels, int n_freq, double fmin_hz, double fmax_hz, int sample_rate,
                       double *out);

/* Builds the filterbank (n_mels filters), the window and the FFT plan. */
int ad_mel_init(ad_mel *m, int n_mels);
void ad_mel_free(ad_mel *m);

/* Frames that carry audio: ceil(n_samples / hop), at most AD_MEL_FRAMES. */
int64_t ad_mel_valid_frames(int64_t n_samples);

/* Log-mel features of n 16 kHz samples into out (n_mels x AD_MEL_FRAMES, row-major, as
 * transformers' input_features[0]). Samples past 30 s are ignored, missing ones are zeros.
 * Frames are spread over OpenMP threads. */
int ad_mel_compute(const ad_mel *m, const float *samples, int64_t n, float *out);

#endif
