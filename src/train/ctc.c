/* CTC loss and gradient of one sequence (see ctc.h). Everything runs in double: a transcript
 * of a few hundred tokens over a thousand frames sums products of thousands of probabilities,
 * and float log-space sums lose the last digits the trainer's loss curves are read at. */
#include "train/ctc.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* log(exp(a) + exp(b)) without overflow; -inf is the log of an impossible path. */
static double log_add(double a, double b) {
    if (a == -INFINITY) return b;
    if (b == -INFINITY) return a;
    return a > b ? a + log1p(exp(b - a)) : b + log1p(exp(a - b));
}

static int check_args(const float *logits, int T, int V, const int32_t *target, int L, int blank,
                      const double *nll, const bool *feasible) {
    if (!logits || !nll || !feasible || (L > 0 && !target))
        return ad_fail("CTC loss: NULL logits, target, nll or feasible");
    if (T < 1 || V < 2 || L < 0)
        return ad_fail("CTC loss: bad sizes T %d (need >= 1), V %d (need >= 2), L %d (need >= 0)",
                       T, V, L);
    /* the extended label sequence has 2L+1 positions and must index in int */
    if (L > (INT_MAX - 1) / 2) return ad_fail("CTC loss: target length %d too large", L);
    if (blank < 0 || blank >= V)
        return ad_fail("CTC loss: blank id %d outside the vocabulary [0, %d)", blank, V);
    for (int i = 0; i < L; i++) {
        if (target[i] < 0 || target[i] >= V)
            return ad_fail("CTC loss: target token %d at position %d outside the vocabulary "
                           "[0, %d)",
                           (int)target[i], i, V);
        if (target[i] == blank)
            return ad_fail("CTC loss: target token at position %d is the blank id %d", i, blank);
    }
    return AD_OK;
}

int ad_ctc_loss(const float *logits, int T, int V, const int32_t *target, int L, int blank,
                float scale, float *grad, double *nll, bool *feasible) {
    AD_TRY(check_args(logits, T, V, target, L, blank, nll, feasible));
    *nll = INFINITY;
    *feasible = false;
    const int S = 2 * L + 1;
    const size_t TS = (size_t)T * (size_t)S;
    /* Only each row's max and log-sum-exp are kept, not the [T, V] log-probabilities: V is the
     * whole text vocabulary (~150k) for the trainer's CTC term, and the recursion reads only
     * the 2L+1 labels of each row. */
    size_t n_doubles, bytes;
    if (ad_mul_overflows(TS, 2, &n_doubles) || n_doubles > SIZE_MAX - 2 * (size_t)T - (size_t)V ||
        ad_mul_overflows(n_doubles + 2 * (size_t)T + (size_t)V, sizeof(double), &bytes))
        return ad_fail("CTC loss: work arrays for T %d, L %d, V %d overflow size_t", T, L, V);
    double *work = ad_malloc(bytes, "CTC loss work arrays");
    if (!work) return AD_ERR;
    double *alpha = work, *beta = alpha + TS, *row_max = beta + TS, *lse = row_max + T,
           *occ = lse + T;

    /* [T, V] is read three times in all (max, exp, gradient); the finiteness check rides on
     * the first pass and the softmax numerators of the second are kept in grad, so that the
     * costly part, T*V exps, happens once. */
    for (int t = 0; t < T; t++) {
        const float *x = logits + (size_t)t * (size_t)V;
        float mx = x[0];
        bool finite = true;
        for (int k = 0; k < V; k++) {
            finite &= isfinite(x[k]);
            mx = x[k] > mx ? x[k] : mx;
        }
        if (!finite) {
            int k = 0;
            while (isfinite(x[k]))
                k++;
            free(work);
            return ad_fail("CTC loss: logit at t %d, k %d is not finite (%g)", t, k, (double)x[k]);
        }
        row_max[t] = mx;
    }
    /* a label equal to its predecessor needs a blank between them, so one more frame */
    int repeats = 0;
    for (int i = 1; i < L; i++)
        repeats += target[i] == target[i - 1];
    if ((int64_t)T < (int64_t)L + repeats) {
        if (grad) memset(grad, 0, sizeof(float) * (size_t)T * (size_t)V);
        free(work);
        return AD_OK;
    }
    for (int t = 0; t < T; t++) {
        const float *x = logits + (size_t)t * (size_t)V;
        const double mx = row_max[t];
        double sum = 0;
        if (grad) {
            float *g = grad + (size_t)t * (size_t)V;
            for (int k = 0; k < V; k++) {
                const double e = exp((double)x[k] - mx);
                g[k] = (float)e;
                sum += e;
            }
        } else {
            for (int k = 0; k < V; k++)
                sum += exp((double)x[k] - mx);
        }
        lse[t] = mx + log(sum);
    }
#define LABEL(s)   ((s) % 2 == 0 ? blank : (int)target[(s) / 2])
#define LOGP(t, k) ((double)logits[(size_t)(t) * (size_t)V + (size_t)(k)] - lse[t])
    /* A label may follow the previous label directly, skipping the blank between them, unless
     * the two are equal: then the blank is what separates them in the collapsed output. */
#define CAN_SKIP(s) ((s) % 2 == 1 && (s) >= 2 && target[(s) / 2] != target[(s) / 2 - 1])

    /* alpha_t(s): log-prob of frames 0..t with frame t emitting extended position s. */
    for (size_t i = 0; i < 2 * TS; i++)
        work[i] = -INFINITY;
    alpha[0] = LOGP(0, blank);
    if (S > 1) alpha[1] = LOGP(0, LABEL(1));
    for (int t = 1; t < T; t++) {
        const double *prev = alpha + (size_t)(t - 1) * S;
        double *cur = alpha + (size_t)t * S;
        for (int s = 0; s < S; s++) {
            double v = prev[s];
            if (s >= 1) v = log_add(v, prev[s - 1]);
            if (CAN_SKIP(s)) v = log_add(v, prev[s - 2]);
            cur[s] = v == -INFINITY ? v : v + LOGP(t, LABEL(s));
        }
    }
    /* beta_t(s): log-prob of frames t+1..T-1 given frame t is at s, excluding frame t's own
     * emission, so that alpha_t(s) + beta_t(s) is the log-mass of paths through (t, s). */
    double *last = beta + (size_t)(T - 1) * S;
    last[S - 1] = 0;
    if (S > 1) last[S - 2] = 0;
    for (int t = T - 2; t >= 0; t--) {
        const double *next = beta + (size_t)(t + 1) * S;
        double *cur = beta + (size_t)t * S;
        for (int s = 0; s < S; s++) {
            double v = next[s] + LOGP(t + 1, LABEL(s));
            if (s + 1 < S) v = log_add(v, next[s + 1] + LOGP(t + 1, LABEL(s + 1)));
            if (s + 2 < S && CAN_SKIP(s + 2))
                v = log_add(v, next[s + 2] + LOGP(t + 1, LABEL(s + 2)));
            cur[s] = v;
        }
    }
    const double *alast = alpha + (size_t)(T - 1) * S;
    const double logp = S > 1 ? log_add(alast[S - 1], alast[S - 2]) : alast[S - 1];
    /* With finite logits every feasible alignment has finite log-prob; -inf here would mean
     * the length check above and the recursion disagree. */
    assert(isfinite(logp));
    if (!isfinite(logp)) {
        free(work);
        return ad_fail("CTC loss: log-likelihood %g for a feasible target (T %d, L %d)", logp, T,
                       L);
    }
    *nll = -logp;
    *feasible = true;

#ifndef NDEBUG
    /* Every frame is at exactly one extended position on every path, so each frame's
     * occupancy sums to P: a cheap check that alpha and beta agree. */
    for (int t = 0; t < T; t++) {
        double tot = -INFINITY;
        for (int s = 0; s < S; s++)
            tot = log_add(tot, alpha[(size_t)t * S + s] + beta[(size_t)t * S + s]);
        assert(fabs(tot - logp) <= 1e-6 * fmax(1.0, fabs(logp)));
    }
#endif

    if (grad) {
        for (int t = 0; t < T; t++) {
            const double *a = alpha + (size_t)t * S, *b = beta + (size_t)t * S;
            float *g = grad + (size_t)t * (size_t)V;
            /* occ[] is only read and reset at this row's labels, keeping a row O(V + S) */
            for (int s = 0; s < S; s++)
                occ[LABEL(s)] = 0;
            for (int s = 0; s < S; s++)
                occ[LABEL(s)] += exp(a[s] + b[s] - logp);
            /* g holds exp(x - max) from the softmax pass; the label entries are recomputed
             * in double below, where softmax and occupancy may nearly cancel */
            const float f = (float)(scale * exp(row_max[t] - lse[t]));
            for (int k = 0; k < V; k++)
                g[k] *= f;
            for (int s = 0; s < S; s++) {
                const int k = LABEL(s);
                g[k] = (float)(scale * (exp(LOGP(t, k)) - occ[k]));
            }
        }
    }
#undef CAN_SKIP
#undef LOGP
#undef LABEL
    free(work);
    return AD_OK;
}
