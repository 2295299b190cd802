// The fused distillation loss on CUDA: one block per supervised row. The block streams the
// row's vocabulary with per-thread online (max, sum) statistics for the student at T = 1,
// the student at T and the teacher at T, merges them with a fixed tree, accumulates the KL
// sums of the chosen kind, then writes the logits gradient in place (each element is read
// and written by the same thread after the statistics are complete, so grad may alias the
// student logits). The formulas are cpu_distill_loss.c's, term for term, and element math is
// in double like the reference: the kernel is memory-bound next to the lm_head GEMM, and
// float exponentials underflow in the skew mixtures where double ones do not. Row results go
// to a small device array that the host adds in row order: the sums are deterministic.
#include <math.h>

#include "cuda_internal.h"

#define LOSS_BLOCK 512

typedef struct {
    double loss, kl, ce;
    int status; /* 0 skipped (target < 0), 1 counted, 2 target outside the vocabulary */
    int pad;
} row_result;

typedef struct {
    double T, inv_T, lambda, alpha, scale;
    int kind;
} loss_consts;

/* Online softmax statistics of z = x * scale: running max and sum of exp(z - max). */
__device__ static inline void stats_add(double z, double &m, double &s) {
    if (z > m) {
        s = s * exp(m - z) + 1.0;
        m = z;
    } else {
        s += exp(z - m);
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

__global__ static void distill_kernel(float *grad, const char *student, int sdt,
                                      const char *teacher, int tdt, const int32_t *targets,
                                      int64_t V, loss_consts c, row_result *rows) {
    __shared__ double shd[32];
    const int64_t r = blockIdx.x;
    const int32_t y = targets[r];
    float *g = grad + r * V;
    const int64_t off = r * V;
    if (y < 0 || y >= V) {
        if (y < 0)
            for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
                g[j] = 0.0f;
        if (threadIdx.x == 0) {
            row_result res = {0, 0, 0, y < 0 ? 0 : 2, 0};
            rows[r] = res;
        }
        return;
    }
    const bool has_t = teacher != NULL;
    const double alpha = has_t ? c.alpha : 0.0;
    /* pass 1: statistics */
    double m1 = -INFINITY, s1 = 0, mq = -INFINITY, sq = 0, mp = -INFINITY, sp = 0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        const double x = cu_load(student, sdt, off + j);
        stats_add(x, m1, s1);
        if (has_t) {
            stats_add(x * c.inv_T, mq, sq);
            stats_add((double)cu_load(teacher, tdt, off + j) * c.inv_T, mp, sp);
        }
    }
    const double lse1 = stats_merge(m1, s1, shd);
    double lseq = 0, lsep = 0;
    if (has_t) {
        lseq = stats_merge(mq, sq, shd);
        lsep = stats_merge(mp, sp, shd);
    }
    const double ce = -((double)cu_load(student, sdt, off + y) - lse1);
    /* pass 2: KL sums */
    double kl = 0, sum_a = 0, sum_qlogq = 0, sum_qlogm = 0, sum_q2m = 0;
    if (has_t) {
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
            const double lq = (double)cu_load(student, sdt, off + j) * c.inv_T - lseq;
            const double lp = (double)cu_load(teacher, tdt, off + j) * c.inv_T - lsep;
            const double q = exp(lq), p = exp(lp);
            switch (c.kind) {
            case AD_KL_FORWARD: kl += p * (lp - lq); break;
            case AD_KL_REVERSE: kl += q * (lq - lp); break;
            case AD_KL_SKEW_FORWARD: {
                const double mix = c.lambda * p + (1 - c.lambda) * q;
                kl += p * (lp - log(mix));
                sum_a += p * q / mix;
                break;
            }
            default: {
                const double mix = c.lambda * q + (1 - c.lambda) * p;
                kl += q * (lq - log(mix));
                sum_qlogq += q * lq;
                sum_qlogm += q * log(mix);
                sum_q2m += q * q / mix;
                break;
            }
            }
        }
        kl = cu_block_sum(kl, shd);
        if (c.kind == AD_KL_SKEW_FORWARD) sum_a = cu_block_sum(sum_a, shd);
        if (c.kind == AD_KL_SKEW_REVERSE) {
            sum_qlogq = cu_block_sum(sum_qlogq, shd);
            sum_qlogm = cu_block_sum(sum_qlogm, shd);
            sum_q2m = cu_block_sum(sum_q2m, shd);
        }
    }
    /* Every thread has the statistics (block reductions broadcast); from here each thread
     * reads and then overwrites only its own elements. */
    __syncthreads();
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        const double s = cu_load(student, sdt, off + j);
        double gv = (1 - alpha) * (exp(s - lse1) - (j == y ? 1.0 : 0.0));
        if (has_t) {
            const double lq = s * c.inv_T - lseq;
            const double lp = (double)cu_load(teacher, tdt, off + j) * c.inv_T - lsep;
            const double q = exp(lq), p = exp(lp);
            double dz;
            switch (c.kind) {
            case AD_KL_FORWARD: dz = q - p; break;
            case AD_KL_REVERSE: dz = q * (lq - lp - kl); break;
            case AD_KL_SKEW_FORWARD: {
                const double mix = c.lambda * p + (1 - c.lambda) * q;
                dz = -(1 - c.lambda) * (p * q / mix - q * sum_a);
                break;
            }
            default: {
                const double mix = c.lambda * q + (1 - c.lambda) * p;
                dz = q * (lq - sum_qlogq) -
                     (q * log(mix) - q * sum_qlogm + c.lambda * (q * q / mix - q * sum_q2m));
                break;
            }
            }
            /* d(T^2 KL(z = s/T))/ds = T * dKL/dz */
            gv += alpha * c.T * dz;
        }
        g[j] = (float)(gv * c.scale);
    }
    if (threadIdx.x == 0) {
        row_result res = {alpha * c.T * c.T * kl + (1 - alpha) * ce, kl, ce, 1, 0};
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
    row_result *d_rows;
    AD_TRY(cu_scratch(be, CU_SCRATCH_STATS, (size_t)N * sizeof(row_result), (void **)&d_rows));
    loss_consts c;
    c.T = params->temperature;
    c.inv_T = 1.0 / c.T;
    c.lambda = params->skew;
    c.alpha = params->alpha;
    c.scale = params->grad_scale;
    c.kind = (int)params->kind;
    distill_kernel<<<(unsigned)N, LOSS_BLOCK>>>(
        (float *)grad->data, (const char *)student->data, student->dtype,
        teacher ? (const char *)teacher->data : NULL, teacher ? teacher->dtype : AD_F32,
        (const int32_t *)targets->data, V, c, d_rows);
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
