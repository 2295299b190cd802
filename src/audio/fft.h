/* Discrete Fourier transforms in float64 for the audio front end: a mixed-radix complex FFT
 * (any size whose prime factors are at most 64; Whisper needs 400 = 2^4 * 5^2) and a real FFT
 * built on the half-size complex one. Plans are read-only after init, so one plan serves
 * many threads; each thread brings its own scratch. */
#ifndef AUDISTILL_AUDIO_FFT_H
#define AUDISTILL_AUDIO_FFT_H

#include "core/error.h"

typedef struct {
    double re, im;
} ad_cplx;

#define AD_FFT_MAX_FACTORS 32
#define AD_FFT_MAX_RADIX   64

typedef struct {
    int n;
    int n_factors;
    int factors[AD_FFT_MAX_FACTORS];
    ad_cplx *twiddles; /* exp(-2 pi i k / n), k < n */
} ad_fft_plan;

int ad_fft_plan_init(ad_fft_plan *p, int n);
void ad_fft_plan_free(ad_fft_plan *p);
/* out[k] = sum_j in[j] exp(-2 pi i j k / n); out must not alias in. */
void ad_fft(const ad_fft_plan *p, const ad_cplx *in, ad_cplx *out);

typedef struct {
    int n; /* even */
    ad_fft_plan half;
    ad_cplx *twiddles; /* exp(-2 pi i k / n), k <= n / 2 */
} ad_rfft_plan;

int ad_rfft_plan_init(ad_rfft_plan *p, int n);
void ad_rfft_plan_free(ad_rfft_plan *p);
/* The n/2 + 1 non-negative-frequency bins of the DFT of n real samples (numpy.fft.rfft).
 * scratch holds n complex values. */
void ad_rfft(const ad_rfft_plan *p, const double *in, ad_cplx *out, ad_cplx *scratch);

#endif
