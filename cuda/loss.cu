// The fused distillation loss on CUDA, over supervised rows split into vocabulary chunks (a
// block per chunk, three launches): each chunk's online (max, sum) statistics for the student
// at T = 1, the student at T and the teacher at T, merged with a fixed tree; then the KL sums
// of the chosen kind per chunk; then the logits gradient, written in place (each element is
// read and written by the same thread after the statistics are complete, so grad may alias
// the student logits). The formulas are cpu_distill_loss.c's; the arguments, products and sums
// are in double as there, but each exponential is one float ex2.approx (loss_exp): the double
// exp (about twenty double-precision instructions each, seven per vocabulary entry over the
// three launches) made the kernel compute-bound on an H100's FP64 units (run 5: 3.9 ms at
// 309 GB/s for 4,880 tokens). That costs ~3e-7 relative per probability, and float
// exponentials reach 0 below e^-87 where double ones reach e^-745, so the skew mixtures are
// formed in the log domain (log_mix) and never divide by an underflowed mixture. Row results
// go to a small device array that the host adds in row order: the sums are deterministic.
#include <math.h>

#include "cuda_internal.h"

#define LOSS_BLOCK 256

typedef struct {
    double loss, kl, ce;
    int status; /* 0 skipped (target < 0), 1 counted, 2 target outside the vocabulary */
    int pad;
} row_result;

typedef struct {
    double T, inv_T, lambda, alpha, scale;
    double log_lambda, log_1m_lambda; /* log(lambda) (-inf at 0), log(1 - lambda) */
    int kind;
} loss_consts;

/* e^d through one float exponential (cu_exp2_approx): its 2 ulp plus the float rounding of the
 * argument (6e-8 |d| relative), so ~3e-7 where a softmax's mass is; 0 below about -87. */
__device__ static inline double loss_exp(double d) {
    return (double)cu_exp2_approx((float)(d * 1.4426950408889634));
}

/* log(e^a + e^b) without forming either exponential: the log of a skew mixture whose terms may
 * both be below float range. */
__device__ static inline double log_mix(double a, double b) {
    const double hi = fmax(a, b), lo = fmin(a, b);
    if (lo == -INFINITY) return hi;
    return hi + (double)log1pf((float)loss_exp(lo - hi));
}

/* Online softmax statistics of z = x * scale: running max and sum of exp(z - max). */
__device__ static inline void stats_add(double z, double &m, double &s) {
    if (z > m) {
        s = s * loss_exp(m - z) + 1.0;
        m = z;
    } else {
        s += loss_exp(z - m);
    }
}

/* Block-wide merge; returns log-sum-exp (max + log sum). */
__device__ static inline double stats_merge(double m, double s, double *shd) {
    __shared__ float shf[32];
    const float mf = m == -INFINITY ? -INFINITY : (float)m;
    /* The max only picks the reference point; its float rounding does not change the sum. */
    const double M = (double)cu_block_max(mf, shf);
    const double scaled = m == -INFINITY ? 0.0 : s * exp(m - M);
    const double S = cu_block_sum(scaled, shd);
    return M + log(S);
}

/* Rows are split into vocabulary chunks, one block each, in three launches (a row's chunks
 * need each other's statistics): one block per row left an H100 mostly idle at a batch's ~160
 * supervised rows (2 ms, latency-bound on the double exponentials). Each launch merges the
 * per-chunk results of the one before in chunk order, so the sums stay deterministic. */
#define LOSS_MIN_CHUNK  4096 /* vocabulary entries per block at least */
#define LOSS_MAX_CHUNKS 64
#define LOSS_ROW_BLOCKS 1024 /* blocks to aim for over all rows */

/* A chunk's log-sum-exps: the student at T = 1, the student and the teacher at T. */
typedef struct {
    double lse1, lseq, lsep;
} chunk_stats;

typedef struct {
    double kl, a, qlogq, qlogm, lq2m; /* the chunk's KL sums (see the kinds below) */
} chunk_sums;

typedef struct {
    const char *student, *teacher;
    int sdt, tdt;
    const int32_t *targets;
    int64_t V, per; /* vocabulary; entries per chunk */
    int chunks;
} loss_rows;

__device__ static inline bool row_valid(const loss_rows &L, int64_t r) {
    const int32_t y = L.targets[r];
    return y >= 0 && y < L.V;
}

/* Log-sum-exp over chunks in chunk order (every block of a row computes the same bits). */
__device__ static inline double lse_merge(const double *lse, int stride, int n) {
    double m = -INFINITY;
    for (int c = 0; c < n; c++)
        m = fmax(m, lse[c * stride]);
    if (m == -INFINITY) return m;
    double s = 0;
    for (int c = 0; c < n; c++)
        s += exp(lse[c * stride] - m);
    return m + log(s);
}

__device__ static inline void row_lse(const loss_rows &L, const chunk_stats *st, int64_t r,
                                      double *lse1, double *lseq, double *lsep) {
    const chunk_stats *row = st + r * L.chunks;
    const int stride = (int)(sizeof(chunk_stats) / sizeof(double));
    *lse1 = lse_merge(&row->lse1, stride, L.chunks);
    *lseq = lse_merge(&row->lseq, stride, L.chunks);
    *lsep = lse_merge(&row->lsep, stride, L.chunks);
}

/* Launch 1: each chunk's log-sum-exps. */
__global__ static void loss_stats_kernel(loss_rows L, loss_consts c, chunk_stats *st) {
    __shared__ double shd[32];
    const int64_t r = blockIdx.x / L.chunks;
    const int ch = (int)(blockIdx.x % L.chunks);
    if (!row_valid(L, r)) return;
    const int64_t off = r * L.V, j0 = ch * L.per, j1 = j0 + L.per < L.V ? j0 + L.per : L.V;
    const bool has_t = L.teacher != NULL;
    double m1 = -INFINITY, s1 = 0, mq = -INFINITY, sq = 0, mp = -INFINITY, sp = 0;
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
        const double x = cu_load(L.student, L.sdt, off + j);
        stats_add(x, m1, s1);
        if (has_t) {
            stats_add(x * c.inv_T, mq, sq);
            stats_add((double)cu_load(L.teacher, L.tdt, off + j) * c.inv_T, mp, sp);
        }
    }
    chunk_stats out;
    out.lse1 = stats_merge(m1, s1, shd);
    out.lseq = has_t ? stats_merge(mq, sq, shd) : 0.0;
    out.lsep = has_t ? stats_merge(mp, sp, shd) : 0.0;
    if (threadIdx.x == 0) st[blockIdx.x] = out;
}

/* Launch 2: each chunk's KL sums, and the row's cross-entropy (chunk 0: the target logit is
 * read here, before launch 3 may overwrite it with its gradient). */
__global__ static void loss_sums_kernel(loss_rows L, loss_consts c, const chunk_stats *st,
                                        chunk_sums *sums, double *ce) {
    __shared__ double shd[32];
    const int64_t r = blockIdx.x / L.chunks;
    const int ch = (int)(blockIdx.x % L.chunks);
    if (!row_valid(L, r)) return;
    const int64_t off = r * L.V, j0 = ch * L.per, j1 = j0 + L.per < L.V ? j0 + L.per : L.V;
    double lse1, lseq, lsep;
    row_lse(L, st, r, &lse1, &lseq, &lsep);
    if (ch == 0 && threadIdx.x == 0)
        ce[r] = -((double)cu_load(L.student, L.sdt, off + L.targets[r]) - lse1);
    chunk_sums out = {0, 0, 0, 0, 0};
    if (L.teacher) {
        double kl = 0, sum_a = 0, sum_qlogq = 0, sum_qlogm = 0, sum_lq2m = 0;
        for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
            const double lq = (double)cu_load(L.student, L.sdt, off + j) * c.inv_T - lseq;
            const double lp = (double)cu_load(L.teacher, L.tdt, off + j) * c.inv_T - lsep;
            const double q = loss_exp(lq), p = loss_exp(lp);
            switch (c.kind) {
            case AD_KL_FORWARD: kl += p * (lp - lq); break;
            case AD_KL_REVERSE: kl += q * (lq - lp); break;
            case AD_KL_SKEW_FORWARD: { /* mix = lambda p + (1 - lambda) q */
                const double lmix = log_mix(c.log_lambda + lp, c.log_1m_lambda + lq);
                kl += p * (lp - lmix);
                sum_a += loss_exp(lp + lq - lmix); /* p q / mix */
                break;
            }
            default: { /* mix = lambda q + (1 - lambda) p */
                const double lmix = log_mix(c.log_lambda + lq, c.log_1m_lambda + lp);
                kl += q * (lq - lmix);
                sum_qlogq += q * lq;
                sum_qlogm += q * lmix;
                /* lambda q^2 / mix <= q: q^2 / mix alone overflows floats at lambda = 0 */
                sum_lq2m += loss_exp(c.log_lambda + 2 * lq - lmix);
                break;
            }
            }
        }
        out.kl = cu_block_sum(kl, shd);
        if (c.kind == AD_KL_SKEW_FORWARD) out.a = cu_block_sum(sum_a, shd);
        if (c.kind == AD_KL_SKEW_REVERSE) {
            out.qlogq = cu_block_sum(sum_qlogq, shd);
            out.qlogm = cu_block_sum(sum_qlogm, shd);
            out.lq2m = cu_block_sum(sum_lq2m, shd);
        }
    }
    if (threadIdx.x == 0) sums[blockIdx.x] = out;
}

/* Launch 3: the logits gradient of each chunk (in place over the student logits when grad
 * aliases them: each element read, then written, by one thread), and the row results. */
__global__ static void loss_grad_kernel(float *grad, loss_rows L, loss_consts c,
                                        const chunk_stats *st, const chunk_sums *sums,
                                        const double *ce, row_result *rows) {
    const int64_t r = blockIdx.x / L.chunks;
    const int ch = (int)(blockIdx.x % L.chunks);
    const int32_t y = L.targets[r];
    const int64_t off = r * L.V, j0 = ch * L.per, j1 = j0 + L.per < L.V ? j0 + L.per : L.V;
    float *g = grad + off;
    if (!row_valid(L, r)) {
        if (y < 0)
            for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x)
                g[j] = 0.0f;
        if (ch == 0 && threadIdx.x == 0) {
            row_result res = {0, 0, 0, y < 0 ? 0 : 2, 0};
            rows[r] = res;
        }
        return;
    }
    const bool has_t = L.teacher != NULL;
    const double alpha = has_t ? c.alpha : 0.0;
    double lse1, lseq, lsep;
    row_lse(L, st, r, &lse1, &lseq, &lsep);
    double kl = 0, sum_a = 0, sum_qlogq = 0, sum_qlogm = 0, sum_lq2m = 0;
    for (int k = 0; k < L.chunks; k++) { /* chunk order: the same bits in every block */
        const chunk_sums &s = sums[r * L.chunks + k];
        kl += s.kl, sum_a += s.a, sum_qlogq += s.qlogq, sum_qlogm += s.qlogm, sum_lq2m += s.lq2m;
    }
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
        const double s = cu_load(L.student, L.sdt, off + j);
        double gv = (1 - alpha) * (loss_exp(s - lse1) - (j == y ? 1.0 : 0.0));
        if (has_t) {
            const double lq = s * c.inv_T - lseq;
            const double lp = (double)cu_load(L.teacher, L.tdt, off + j) * c.inv_T - lsep;
            const double q = loss_exp(lq), p = loss_exp(lp);
            double dz;
            switch (c.kind) {
            case AD_KL_FORWARD: dz = q - p; break;
            case AD_KL_REVERSE: dz = q * (lq - lp - kl); break;
            case AD_KL_SKEW_FORWARD: {
                const double lmix = log_mix(c.log_lambda + lp, c.log_1m_lambda + lq);
                dz = -(1 - c.lambda) * (loss_exp(lp + lq - lmix) - q * sum_a);
                break;
            }
            default: {
                const double lmix = log_mix(c.log_lambda + lq, c.log_1m_lambda + lp);
                dz = q * (lq - sum_qlogq) - (q * lmix - q * sum_qlogm +
                                             loss_exp(c.log_lambda + 2 * lq - lmix) - q * sum_lq2m);
                break;
            }
            }
            /* d(T^2 KL(z = s/T))/ds = T * dKL/dz */
            gv += alpha * c.T * dz;
        }
        g[j] = (float)(gv * c.scale);
    }
    if (ch == 0 && threadIdx.x == 0) {
        row_result res = {alpha * c.T * c.T * kl + (1 - alpha) * ce[r], kl, ce[r], 1, 0};
        rows[r] = res;
    }
}

static int check_logits(const char *op, const char *role, const ad_tensor *t, unsigned mask,
                        int64_t n, int64_t v) {
    AD_TRY(cu_check(op, role, t, mask));
    AD_TRY(ad_op_check_ndim(op, t, 2, 2));
    AD_TRY(ad_op_check_contiguous(op, t));
    if (n >= 0 && (t->shape[0] != n || t->shape[1] != v))
        return ad_op_fail_tensor(op, t, "(%s) expected [%lld, %lld]", role, (long long)n,
                                 (long long)v);
    return AD_OK;
}

int cu_distill_loss(ad_backend *be, ad_tensor *grad, const ad_tensor *student,
                    const ad_tensor *teacher, const ad_tensor *targets,
                    const ad_distill_params *params, ad_distill_sums *sums) {
    const char *op = "distill_loss";
    if (!params || !sums) return ad_fail("%s: params and sums are required", op);
    AD_TRY(check_logits(op, "student logits", student, CU_ACT, -1, -1));
    const int64_t N = student->shape[0], V = student->shape[1];
    AD_TRY(check_logits(op, "gradient", grad, CU_F32, N, V));
    if (teacher) AD_TRY(check_logits(op, "teacher logits", teacher, CU_ACT, N, V));
    AD_TRY(cu_check(op, "targets", targets, CU_I32));
    if (targets->ndim != 1 || targets->shape[0] != N || !ad_tensor_is_contiguous(targets))
        return ad_op_fail_tensor(op, targets, "expected contiguous I32 [%lld]", (long long)N);
    if (grad->data == student->data && student->dtype != AD_F32)
        return ad_op_fail_tensor(op, student, "an in-place gradient needs F32 student logits");
    if (grad->data != student->data) AD_TRY(ad_op_check_no_alias(op, grad, student));
    if (teacher) AD_TRY(ad_op_check_no_alias(op, grad, teacher));
    if (!(params->temperature > 0) || params->alpha < 0 || params->alpha > 1 || params->skew < 0 ||
        params->skew >= 1)
        return ad_fail("%s: need temperature > 0, 0 <= alpha <= 1, 0 <= skew < 1", op);
    if ((unsigned)params->kind > AD_KL_SKEW_REVERSE)
        return ad_fail("%s: unknown KL kind %d", op, (int)params->kind);
    if (N == 0) return AD_OK;
    if (N > INT32_MAX) return ad_fail("%s: %lld rows exceed one launch", op, (long long)N);
    loss_rows L;
    L.student = (const char *)student->data;
    L.sdt = student->dtype;
    L.teacher = teacher ? (const char *)teacher->data : NULL;
    L.tdt = teacher ? teacher->dtype : AD_F32;
    L.targets = (const int32_t *)targets->data;
    L.V = V;
    int64_t chunks = (LOSS_ROW_BLOCKS + N - 1) / N;
    if (chunks > V / LOSS_MIN_CHUNK) chunks = V / LOSS_MIN_CHUNK;
    if (chunks > LOSS_MAX_CHUNKS) chunks = LOSS_MAX_CHUNKS;
    if (chunks < 1) chunks = 1;
    L.chunks = (int)chunks;
    L.per = (V + chunks - 1) / chunks;
    if (N * chunks > INT32_MAX) return ad_fail("%s: %lld rows exceed one launch", op, (long long)N);
    /* One scratch: row results, cross-entropies, chunk statistics, chunk sums. */
    const size_t rows_b = (size_t)N * sizeof(row_result), ce_b = (size_t)N * sizeof(double),
                 st_b = (size_t)(N * chunks) * sizeof(chunk_stats),
                 sums_b = (size_t)(N * chunks) * sizeof(chunk_sums);
    char *scratch;
    AD_TRY(cu_scratch(be, CU_SCRATCH_STATS, rows_b + ce_b + st_b + sums_b, (void **)&scratch));
    row_result *d_rows = (row_result *)scratch;
    double *d_ce = (double *)(scratch + rows_b);
    chunk_stats *d_st = (chunk_stats *)(scratch + rows_b + ce_b);
    chunk_sums *d_sums = (chunk_sums *)(scratch + rows_b + ce_b + st_b);
    loss_consts c;
    c.T = params->temperature;
    c.inv_T = 1.0 / c.T;
    c.lambda = params->skew;
    c.log_lambda = c.lambda > 0 ? log(c.lambda) : -INFINITY;
    c.log_1m_lambda = log1p(-c.lambda);
    c.alpha = params->alpha;
    c.scale = params->grad_scale;
    c.kind = (int)params->kind;
    const unsigned blocks = (unsigned)(N * chunks);
    loss_stats_kernel<<<blocks, LOSS_BLOCK>>>(L, c, d_st);
    CUDA_TRY_LAUNCH();
    loss_sums_kernel<<<blocks, LOSS_BLOCK>>>(L, c, d_st, d_sums, d_ce);
    CUDA_TRY_LAUNCH();
    loss_grad_kernel<<<blocks, LOSS_BLOCK>>>((float *)grad->data, L, c, d_st, d_sums, d_ce, d_rows);
    CUDA_TRY_LAUNCH();
    row_result *h_rows = (row_result *)ad_malloc((size_t)N * sizeof(row_result), "loss rows");
    if (!h_rows) return AD_ERR;
    cudaError_t err =
        cudaMemcpy(h_rows, d_rows, (size_t)N * sizeof(row_result), cudaMemcpyDeviceToHost);
    if (err != cudaSuccess) {
        free(h_rows);
        return ad_fail("%s: reading the row results failed: %s", op, cudaGetErrorString(err));
    }
    int rc = AD_OK;
    ad_distill_sums add = {0, 0, 0, 0};
    for (int64_t i = 0; i < N && rc == AD_OK; i++) {
        if (h_rows[i].status == 2) {
            int32_t bad = 0;
            cudaMemcpy(&bad, (const int32_t *)targets->data + i, sizeof bad,
                       cudaMemcpyDeviceToHost);
            rc = ad_fail("%s: target %d of row %lld outside the vocabulary (%lld)", op, bad,
                         (long long)i, (long long)V);
        } else if (h_rows[i].status == 1) {
            add.loss += h_rows[i].loss;
            add.kl += h_rows[i].kl;
            add.ce += h_rows[i].ce;
            add.rows++;
        }
    }
    free(h_rows);
    AD_TRY(rc);
    sums->loss += add.loss;
    sums->kl += add.kl;
    sums->ce += add.ce;
    sums->rows += add.rows;
    if (!isfinite(sums->loss))
        return ad_fail("%s: the loss is not finite (NaN or inf logits?)", op);
    return AD_OK;
}
