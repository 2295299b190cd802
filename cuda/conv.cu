// CUDA conv1d (channels-last) as im2col + one cuBLASLt GEMM, and its backward. The im2col
// row of output step o holds input steps o*stride - padding + [0, K) in (channel, tap)
// order, c*K + k, which is the checkpoint's [C_out, C_in, K] weight layout: the weight is
// used as a [C_out, C_in*K] matrix without repacking, and its gradient accumulates into it
// directly. The column gradient goes back to the input by a gather (col2im) in which each
// input element sums its taps in the CPU reference's order: deterministic, no atomics.
#include "cuda_internal.h"

#define CONV_BLOCK 256

__global__ static void im2col_kernel(char *cols, int cdt, const char *x, int xdt, int64_t xb,
                                     int64_t xt, int64_t B, int64_t L, int64_t Cin, int64_t L_out,
                                     int K, int stride, int padding) {
    const int64_t width = Cin * K;
    CU_GRID_STRIDE(i, B * L_out * width) {
        const int64_t r = i / width, col = i % width, ci = col / K, k = col % K;
        const int64_t b = r / L_out, o = r % L_out, t = o * stride + k - padding;
        const float v = (t >= 0 && t < L) ? cu_load(x, xdt, b * xb + t * xt + ci) : 0.0f;
        cu_store(cols, cdt, i, v);
    }
}

__global__ static void col2im_kernel(char *dx, int dxdt, int64_t xb, int64_t xt, const float *dcols,
                                     int64_t B, int64_t L, int64_t Cin, int64_t L_out, int K,
                                     int stride, int padding) {
    const int64_t width = Cin * K;
    CU_GRID_STRIDE(i, B * L * Cin) {
        const int64_t ci = i % Cin, t = (i / Cin) % L, b = i / (Cin * L);
        float s = 0.0f;
        /* taps in decreasing k = windows in increasing o, the order the CPU adds them */
        for (int k = K - 1; k >= 0; k--) {
            const int64_t num = t + padding - k;
            if (num < 0 || num % stride) continue;
            const int64_t o = num / stride;
            if (o >= L_out) continue;
            s += dcols[(b * L_out + o) * width + ci * K + k];
        }
        cu_store(dx, dxdt, b * xb + t * xt + ci, s);
    }
}

typedef struct {
    int64_t B, L, Cin, Cout, K, L_out;
} conv_dims;

static int conv_check(const char *op, const ad_tensor *x, const ad_tensor *w, int stride,
                      int padding, conv_dims *d) {
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(cu_check(op, "w", w, CU_FLOAT));
    AD_TRY(ad_op_check_ndim(op, x, 3, 3));
    AD_TRY(ad_op_check_ndim(op, w, 3, 3));
    AD_TRY(ad_op_check_rows(op, x));
    AD_TRY(ad_op_check_contiguous(op, w));
    if (stride < 1 || padding < 0)
        return ad_fail("%s: stride %d must be >= 1 and padding %d >= 0", op, stride, padding);
    d->B = x->shape[0];
    d->L = x->shape[1];
    d->Cin = x->shape[2];
    d->Cout = w->shape[0];
    d->K = w->shape[2];
    if (w->shape[1] != d->Cin)
        return ad_op_fail_tensor(op, w, "expected [C_out, %lld, K] for input %s", (long long)d->Cin,
                                 x->name);
    if (d->K < 1 || d->L + 2 * padding < d->K)
        return ad_op_fail_tensor(op, x, "length %lld with padding %d is shorter than kernel %lld",
                                 (long long)d->L, padding, (long long)d->K);
    d->L_out = (d->L + 2 * padding - d->K) / stride + 1;
    return AD_OK;
}

static int check_out3(const char *op, const ad_tensor *t, int64_t a, int64_t b, int64_t c) {
    if (t->ndim != 3 || t->shape[0] != a || t->shape[1] != b || t->shape[2] != c)
        return ad_op_fail_tensor(op, t, "expected [%lld, %lld, %lld]", (long long)a, (long long)b,
                                 (long long)c);
    return AD_OK;
}

/* im2col of x into the COLS scratch, in x's dtype; its matrix view [B*L_out, C_in*K]. */
static int im2col(ad_backend *be, const ad_tensor *x, const conv_dims *d, int stride, int padding,
                  cu_mat *cols) {
    const int64_t rows = d->B * d->L_out, width = d->Cin * d->K;
    void *buf;
    AD_TRY(
        cu_scratch(be, CU_SCRATCH_COLS, (size_t)(rows * width) * (size_t)cu_esize(x->dtype), &buf));
    if (rows * width > 0) {
        im2col_kernel<<<cu_blocks(rows * width, CONV_BLOCK), CONV_BLOCK>>>(
            (char *)buf, x->dtype, (const char *)x->data, x->dtype, x->stride[0], x->stride[1],
            d->B, d->L, d->Cin, d->L_out, (int)d->K, stride, padding);
        CUDA_TRY_LAUNCH();
    }
    cols->data = (char *)buf;
    cols->dtype = x->dtype;
    cols->rows = rows;
    cols->cols = width;
    cols->ld = width > 0 ? width : 1;
    cols->trans = false;
    return AD_OK;
}

static cu_mat weight_mat(const ad_tensor *w, const conv_dims *d) {
    cu_mat W;
    W.data = (char *)w->data;
    W.dtype = w->dtype;
    W.rows = d->Cout;
    W.cols = d->Cin * d->K;
    W.ld = W.cols > 0 ? W.cols : 1;
    W.trans = false;
    return W;
}

int cu_conv1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
              const ad_tensor *bias, int stride, int padding) {
    const char *op = "conv1d";
    conv_dims d;
    AD_TRY(conv_check(op, x, w, stride, padding, &d));
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(check_out3(op, y, d.B, d.L_out, d.Cout));
    AD_TRY(ad_op_check_no_alias(op, y, x));
    cu_mat Y;
    AD_TRY(cu_mat_of(op, y, &Y));
    if (Y.trans) return ad_op_fail_tensor(op, y, "the output's rows must be contiguous");
    if (d.B == 0 || d.L_out == 0 || d.Cout == 0) return AD_OK;
    cu_mat cols;
    AD_TRY(im2col(be, x, &d, stride, padding, &cols));
    const cu_mat W = weight_mat(w, &d);
    return cu_gemm(be, op, &Y, &cols, false, &W, true, 1.0f, 0.0f, bias);
}

int cu_conv1d_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                       const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w, int stride,
                       int padding) {
    const char *op = "conv1d_backward";
    conv_dims d;
    AD_TRY(conv_check(op, x, w, stride, padding, &d));
    AD_TRY(cu_check(op, "dy", dy, CU_ACT));
    AD_TRY(check_out3(op, dy, d.B, d.L_out, d.Cout));
    cu_mat DY;
    AD_TRY(cu_mat_of(op, dy, &DY));
    if (DY.trans) return ad_op_fail_tensor(op, dy, "rows must be contiguous");
    const cu_mat W = weight_mat(w, &d);
    if (dw) {
        AD_TRY(cu_check(op, "dw", dw, CU_F32));
        AD_TRY(ad_op_check_contiguous(op, dw));
        AD_TRY(check_out3(op, dw, d.Cout, d.Cin, d.K));
    }
    if (db) {
        AD_TRY(cu_check(op, "db", db, CU_F32));
        AD_TRY(ad_op_check_vector(op, db, d.Cout));
        AD_TRY(ad_op_check_contiguous(op, db));
    }
    if (dx) {
        AD_TRY(cu_check(op, "dx", dx, CU_ACT));
        AD_TRY(ad_op_check_rows(op, dx));
        AD_TRY(check_out3(op, dx, d.B, d.L, d.Cin));
    }
    const int64_t rows = d.B * d.L_out, width = d.Cin * d.K;
    if (dw && rows > 0) {
        cu_mat cols, DW = weight_mat(dw, &d);
        AD_TRY(im2col(be, x, &d, stride, padding, &cols));
        AD_TRY(cu_gemm(be, op, &DW, &DY, true, &cols, false, 1.0f, 1.0f, NULL));
    }
    if (db)
        AD_TRY(cu_colsum_accumulate(be, (float *)db->data, DY.data, DY.dtype, rows, d.Cout, DY.ld));
    if (dx) {
        const int64_t n = d.B * d.L * d.Cin;
        if (n == 0) return AD_OK;
        float *buf;
        AD_TRY(cu_scratch(be, CU_SCRATCH_DCOLS, (size_t)(rows * width) * sizeof(float),
                          (void **)&buf));
        cu_mat DC;
        DC.data = (char *)buf;
        DC.dtype = AD_F32;
        DC.rows = rows;
        DC.cols = width;
        DC.ld = width > 0 ? width : 1;
        DC.trans = false;
        if (rows > 0) AD_TRY(cu_gemm(be, op, &DC, &DY, false, &W, false, 1.0f, 0.0f, NULL));
        col2im_kernel<<<cu_blocks(n, CONV_BLOCK), CONV_BLOCK>>>(
            (char *)dx->data, dx->dtype, dx->stride[0], dx->stride[1], buf, d.B, d.L, d.Cin,
            d.L_out, (int)d.K, stride, padding);
        CUDA_TRY_LAUNCH();
    }
    return AD_OK;
}
