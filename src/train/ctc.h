/* CTC (connectionist temporal classification) loss of one sequence and its gradient with
 * respect to the unnormalized logits, on the host: the forward-backward recursion over the
 * transcript with a blank around every token, in log space and double precision. It owns no
 * state and never touches a device; the caller copies logits in and the gradient out. */
#ifndef AUDISTILL_TRAIN_CTC_H
#define AUDISTILL_TRAIN_CTC_H

#include <stdbool.h>
#include <stdint.h>

/* CTC loss of one sequence: logits [T, V] row-major (unnormalized, f32), target ids [L]
 * (none equal to `blank`, each in [0, V)), blank id. Computes nll = -log p(target | logits)
 * summed over all alignments (log-space forward-backward in double), and, when grad is not
 * NULL, writes grad[t*V + k] = scale * d nll / d logits[t,k] = scale * (softmax(logits[t])[k]
 * - posterior occupancy of label k at t). Returns AD_OK; *feasible = false (nll = +inf,
 * grad rows zeroed) when no alignment exists (T < L + number of adjacent repeats); errors
 * (ad_fail) on bad arguments (T<1, V<2, L<0, blank or a target out of range, a target equal
 * to blank) or non-finite logits (naming t and k). L = 0 is valid (all blanks). */
int ad_ctc_loss(const float *logits, int T, int V, const int32_t *target, int L, int blank,
                float scale, float *grad, double *nll, bool *feasible);

#endif
