/* Mixed-radix decimation-in-time FFT (the recursive structure of KISS FFT): each level splits
 * the input into `radix` interleaved sub-sequences, transforms them in place in the output,
 * then combines them with one generic radix butterfly. Everything is float64 so the front
 * end keeps parity with numpy.fft, which also computes in float64. */
#include "audio/fft.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int factorize(int n, int *factors) {
    int count = 0;
    /* Radix 4 first: fewer levels; then the remaining primes in increasing order. */
    while (n % 4 == 0 && count < AD_FFT_MAX_FACTORS) {
        factors[count++] = 4;
        n /= 4;
    }
    for (int p = 2; n > 1 && count < AD_FFT_MAX_FACTORS;) {
        if (n % p == 0) {
            if (p > AD_FFT_MAX_RADIX) return AD_ERR;
            factors[count++] = p;
            n /= p;
        } else {
            p++;
        }
    }
    return n == 1 ? count : AD_ERR;
}

static void fill_twiddles(ad_cplx *tw, int count, int n) {
    for (int k = 0; k < count; k++) {
        double angle = -2.0 * M_PI * (double)k / (double)n;
        tw[k].re = cos(angle);
        tw[k].im = sin(angle);
    }
}

int ad_fft_plan_init(ad_fft_plan *p, int n) {
    memset(p, 0, sizeof *p);
    if (n < 1) return ad_fail("FFT size %d must be positive", n);
    int count = n == 1 ? 0 : factorize(n, p->factors);
    if (count < 0)
        return ad_fail("FFT size %d has a prime factor above %d (not supported)", n,
                       AD_FFT_MAX_RADIX);
    p->n = n;
    p->n_factors = count;
    p->twiddles = ad_malloc(sizeof *p->twiddles * (size_t)n, "FFT twiddles");
    if (!p->twiddles) return AD_ERR;
    fill_twiddles(p->twiddles, n, n);
    return AD_OK;
}

void ad_fft_plan_free(ad_fft_plan *p) {
    free(p->twiddles);
    memset(p, 0, sizeof *p);
}

static void fft_level(const ad_fft_plan *p, ad_cplx *out, const ad_cplx *in, int stride,
                      const int *factors) {
    const int radix = factors[0];
    const int m = p->n / stride / radix;
    if (m == 1) {
        for (int j = 0; j < radix; j++)
            out[j] = in[(size_t)j * (size_t)stride];
    } else {
        for (int j = 0; j < radix; j++)
            fft_level(p, out + (size_t)j * (size_t)m, in + (size_t)j * (size_t)stride,
                      stride * radix, factors + 1);
    }
    /* Butterflies: X[k + q m] = sum_j W_radix^(j q) (W_(radix m)^(j k) Y_j[k]). */
    const ad_cplx *tw = p->twiddles;
    const int root_step = p->n / radix;
    ad_cplx t[AD_FFT_MAX_RADIX], roots[AD_FFT_MAX_RADIX];
    for (int r = 0; r < radix; r++)
        roots[r] = tw[(size_t)r * (size_t)root_step];
    for (int k = 0; k < m; k++) {
        for (int j = 0; j < radix; j++) {
            ad_cplx y = out[k + j * m];
            ad_cplx w = tw[(size_t)j * (size_t)k * (size_t)stride];
            t[j].re = y.re * w.re - y.im * w.im;
            t[j].im = y.re * w.im + y.im * w.re;
        }
        for (int q = 0; q < radix; q++) {
            double re = t[0].re, im = t[0].im;
            int r = 0; /* (j * q) mod radix, stepped instead of divided */
            for (int j = 1; j < radix; j++) {
                r += q;
                if (r >= radix) r -= radix;
                re += t[j].re * roots[r].re - t[j].im * roots[r].im;
                im += t[j].re * roots[r].im + t[j].im * roots[r].re;
            }
            out[k + q * m].re = re;
            out[k + q * m].im = im;
        }
    }
}

void ad_fft(const ad_fft_plan *p, const ad_cplx *in, ad_cplx *out) {
    if (p->n == 1) {
        out[0] = in[0];
        return;
    }
    fft_level(p, out, in, 1, p->factors);
}

int ad_rfft_plan_init(ad_rfft_plan *p, int n) {
    memset(p, 0, sizeof *p);
    if (n < 2 || n % 2) return ad_fail("real FFT size %d must be even and >= 2", n);
    AD_TRY(ad_fft_plan_init(&p->half, n / 2));
    p->n = n;
    p->twiddles = ad_malloc(sizeof *p->twiddles * (size_t)(n / 2 + 1), "FFT twiddles");
    if (!p->twiddles) {
        ad_fft_plan_free(&p->half);
        return AD_ERR;
    }
    fill_twiddles(p->twiddles, n / 2 + 1, n);
    return AD_OK;
}

void ad_rfft_plan_free(ad_rfft_plan *p) {
    ad_fft_plan_free(&p->half);
    free(p->twiddles);
    memset(p, 0, sizeof *p);
}

/* Packs even/odd samples into one complex sequence z = x[2j] + i x[2j+1], transforms it at
 * half size, and separates the two spectra: X[k] = E[k] + W_n^k O[k] with
 * E[k] = (Z[k] + conj Z[h-k]) / 2 and O[k] = (Z[k] - conj Z[h-k]) / 2i. */
void ad_rfft(const ad_rfft_plan *p, const double *in, ad_cplx *out, ad_cplx *scratch) {
    const int h = p->n / 2;
    ad_cplx *z = scratch, *Z = scratch + h;
    for (int j = 0; j < h; j++) {
        z[j].re = in[2 * j];
        z[j].im = in[2 * j + 1];
    }
    ad_fft(&p->half, z, Z);
    for (int k = 0; k <= h; k++) {
        ad_cplx a = Z[k % h], b = Z[(h - k) % h];
        double er = 0.5 * (a.re + b.re), ei = 0.5 * (a.im - b.im);
        double odd_re = 0.5 * (a.im + b.im), odd_im = -0.5 * (a.re - b.re);
        ad_cplx w = p->twiddles[k];
        out[k].re = er + (odd_re * w.re - odd_im * w.im);
        out[k].im = ei + (odd_re * w.im + odd_im * w.re);
    }
}
