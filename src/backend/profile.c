/* The op profile (profile.h): a shim per op of the table around the original entry. */
#include "backend/profile.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/progress.h"

typedef struct {
    char key[160];
    long calls;
    double seconds, flops, bytes;
} prof_row;

typedef struct {
    ad_backend orig; /* the table before profiling */
    prof_row *rows;
    int n_rows, cap_rows;
    double seconds;
    bool timing;  /* false: FLOPs counted, nothing timed (ad_backend_count_flops) */
    double flops; /* every op's, since the start */
} prof_state;

static prof_state *P(ad_backend *be) {
    return (prof_state *)be->profile;
}

static void device_sync(ad_backend *be) {
    if (be->synchronize) (void)be->synchronize(be);
}

static double begin(ad_backend *be, const char *op) {
    if (!P(be)->timing) return 0;
    device_sync(be);
    if (be->range_push) be->range_push(be, op);
    return ad_now_seconds();
}

static double tensor_bytes(const ad_tensor *t) {
    return t ? (double)ad_tensor_numel(t) * ad_dtype_bits(t->dtype) / 8.0 : 0.0;
}

/* The weight's name with layer numbers (all-digit path components) folded, so all layers share
 * a row: "model.layers.12.mlp.fc1.weight" -> "model.layers.#.mlp.fc1.weight". */
static void fold_digits(const char *name, char *out, size_t size) {
    size_t o = 0;
    for (const char *p = name; *p && o + 1 < size; p++) {
        const char *q = p;
        while (isdigit((unsigned char)*q))
            q++;
        if (q > p && (p == name || p[-1] == '.') && (*q == '.' || *q == '\0')) {
            out[o++] = '#';
            p = q - 1;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void end(ad_backend *be, double t0, const char *op, const ad_tensor *weight, double flops,
                double bytes) {
    prof_state *s = P(be);
    s->flops += flops;
    if (!s->timing) return;
    device_sync(be);
    const double dt = ad_now_seconds() - t0;
    if (be->range_pop) be->range_pop(be);
    char key[160], folded[128] = "";
    if (weight && weight->name && weight->name[0]) fold_digits(weight->name, folded, sizeof folded);
    snprintf(key, sizeof key, "%s%s%s", op, folded[0] ? " " : "", folded);
    prof_row *r = NULL;
    for (int i = 0; i < s->n_rows; i++)
        if (!strcmp(s->rows[i].key, key)) {
            r = &s->rows[i];
            break;
        }
    if (!r) {
        if (s->n_rows == s->cap_rows) {
            int cap = s->cap_rows ? 2 * s->cap_rows : 64;
            prof_row *grown = realloc(s->rows, sizeof *grown * (size_t)cap);
            if (!grown) return; /* the profile loses a row; the op's result stands */
            s->rows = grown;
            s->cap_rows = cap;
        }
        r = &s->rows[s->n_rows++];
        memset(r, 0, sizeof *r);
        snprintf(r->key, sizeof r->key, "%s", key);
    }
    r->calls++;
    r->seconds += dt;
    r->flops += flops;
    r->bytes += bytes;
    s->seconds += dt;
}

static int64_t last_dim(const ad_tensor *t) {
    return t && t->ndim > 0 ? t->shape[t->ndim - 1] : 0;
}

static double B2(const ad_tensor *a, const ad_tensor *b) {
    return tensor_bytes(a) + tensor_bytes(b);
}

/* ---- shims: time the original entry, credit FLOPs and bytes --------------------------------- */
#define RUN(call, op, weight, flops, bytes)                                                        \
    do {                                                                                           \
        const double t0_ = begin(be, op);                                                          \
        const int rc_ = P(be)->orig.call;                                                          \
        end(be, t0_, op, weight, flops, bytes);                                                    \
        return rc_;                                                                                \
    } while (0)

static int p_copy(ad_backend *be, ad_tensor *dst, const ad_tensor *src) {
    RUN(copy(be, dst, src), "copy", NULL, 0, B2(dst, src));
}
static int p_fill(ad_backend *be, ad_tensor *dst, float value) {
    RUN(fill(be, dst, value), "fill", NULL, 0, tensor_bytes(dst));
}
static int p_matmul(ad_backend *be, ad_tensor *y, const ad_tensor *a, bool ta, const ad_tensor *b,
                    bool tb, float alpha, float beta) {
    const int64_t k = ta ? (last_dim(a) ? ad_tensor_numel(a) / last_dim(a) : 0) : last_dim(a);
    RUN(matmul(be, y, a, ta, b, tb, alpha, beta), "matmul", b,
        2.0 * (double)ad_tensor_numel(y) * (double)k, B2(y, a) + tensor_bytes(b));
}
static int p_linear(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                    const ad_tensor *bias) {
    RUN(linear(be, y, x, w, bias), "linear", w, 2.0 * (double)ad_tensor_numel(y) * last_dim(x),
        B2(y, x) + tensor_bytes(w));
}
static int p_linear_residual(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                             const ad_tensor *bias, const ad_tensor *residual) {
    RUN(linear_residual(be, y, x, w, bias, residual), "linear_residual", w,
        2.0 * (double)ad_tensor_numel(y) * last_dim(x), B2(y, x) + B2(w, residual));
}
static int p_conv1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                    const ad_tensor *bias, int stride, int padding) {
    const double per_out = w && w->ndim == 3 ? (double)w->shape[1] * w->shape[2] : 0;
    RUN(conv1d(be, y, x, w, bias, stride, padding), "conv1d", w,
        2.0 * (double)ad_tensor_numel(y) * per_out, B2(y, x) + tensor_bytes(w));
}
static int p_gelu(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    RUN(gelu(be, y, x), "gelu", NULL, 0, B2(y, x));
}
static int p_silu_mul(ad_backend *be, ad_tensor *y, const ad_tensor *g, const ad_tensor *u) {
    RUN(silu_mul(be, y, g, u), "silu_mul", NULL, 0, B2(y, g) + tensor_bytes(u));
}
static int p_add(ad_backend *be, ad_tensor *y, const ad_tensor *a, const ad_tensor *b) {
    RUN(add(be, y, a, b), "add", NULL, 0, B2(y, a) + tensor_bytes(b));
}
static int p_layernorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                       const ad_tensor *b, float eps) {
    RUN(layernorm(be, y, x, w, b, eps), "layernorm", NULL, 0, B2(y, x));
}
static int p_rmsnorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                     float eps) {
    RUN(rmsnorm(be, y, x, w, eps), "rmsnorm", NULL, 0, B2(y, x));
}
static int p_softmax(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    RUN(softmax(be, y, x), "softmax", NULL, 0, B2(y, x));
}
static int p_rope(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *pos, int nh,
                  int hd, float th) {
    RUN(rope(be, y, x, pos, nh, hd, th), "rope", NULL, 0, tensor_bytes(x) + tensor_bytes(y));
}
/* Both products of attention over every (query, key) pair: 4 * Tq * Tk * heads * head_dim per
 * batch element (causal masking not discounted; the backward recomputes the scores and forms
 * four products: 10). */
static double attention_flops(const ad_tensor *q, const ad_tensor *k, const ad_attention_params *p,
                              double per_pair) {
    if (!q || !k || q->ndim != 3 || k->ndim != 3) return 0;
    return per_pair * (double)q->shape[0] * q->shape[1] * k->shape[1] * p->n_heads * p->head_dim;
}
/* A row per kind of attention, so the encoder's (bidirectional, head dim 64 in Whisper) and
 * the decoder's (causal, 128 in Qwen) are timed apart. */
static void attention_label(char *buf, size_t size, const char *op, const ad_attention_params *p) {
    snprintf(buf, size, "%s (%shead dim %d)", op, p && p->causal ? "causal, " : "",
             p ? p->head_dim : 0);
}
static int p_attention(ad_backend *be, ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                       const ad_tensor *v, const ad_attention_params *p) {
    char op[64];
    attention_label(op, sizeof op, "attention", p);
    RUN(attention(be, out, q, k, v, p), op, NULL, attention_flops(q, k, p, 4),
        B2(out, q) + B2(k, v));
}
static int p_avg_pool1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, int kernel, int stride) {
    RUN(avg_pool1d(be, y, x, kernel, stride), "avg_pool1d", NULL, 0, B2(y, x));
}
static int p_embedding(ad_backend *be, ad_tensor *y, const ad_tensor *t, const ad_tensor *ids) {
    RUN(embedding(be, y, t, ids), "embedding", NULL, 0, 2 * tensor_bytes(y));
}
static int p_scatter_rows(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *r) {
    RUN(scatter_rows(be, y, x, r), "scatter_rows", NULL, 0, 2 * tensor_bytes(x));
}
static int p_transpose(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    RUN(transpose(be, y, x), "transpose", NULL, 0, B2(y, x));
}
static int p_linear_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                             const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w, bool ow) {
    const double one = 2.0 * (double)ad_tensor_numel(dy) * last_dim(x);
    RUN(linear_backward(be, dx, dw, db, dy, x, w, ow), "linear_backward", w,
        one * ((dx != NULL) + (dw != NULL)), B2(dx, dw) + B2(dy, x) + tensor_bytes(w));
}
static int p_conv1d_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                             const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w,
                             int stride, int padding) {
    const double per_out = w && w->ndim == 3 ? (double)w->shape[1] * w->shape[2] : 0;
    const double one = 2.0 * (double)ad_tensor_numel(dy) * per_out;
    RUN(conv1d_backward(be, dx, dw, db, dy, x, w, stride, padding), "conv1d_backward", w,
        one * ((dx != NULL) + (dw != NULL)), B2(dx, dw) + B2(dy, x) + tensor_bytes(w));
}
static int p_gelu_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *x) {
    RUN(gelu_backward(be, dx, dy, x), "gelu_backward", NULL, 0, B2(dx, dy) + tensor_bytes(x));
}
static int p_silu_mul_backward(ad_backend *be, ad_tensor *dg, ad_tensor *du, const ad_tensor *dy,
                               const ad_tensor *g, const ad_tensor *u) {
    RUN(silu_mul_backward(be, dg, du, dy, g, u), "silu_mul_backward", NULL, 0,
        B2(dg, du) + B2(dy, g) + tensor_bytes(u));
}
static int p_layernorm_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                                const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w,
                                float eps, bool acc) {
    RUN(layernorm_backward(be, dx, dw, db, dy, x, w, eps, acc), "layernorm_backward", NULL, 0,
        B2(dx, dy) + tensor_bytes(x) + (acc ? tensor_bytes(dx) : 0));
}
static int p_rmsnorm_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, const ad_tensor *dy,
                              const ad_tensor *x, const ad_tensor *w, float eps, bool acc) {
    RUN(rmsnorm_backward(be, dx, dw, dy, x, w, eps, acc), "rmsnorm_backward", NULL, 0,
        B2(dx, dy) + tensor_bytes(x) + (acc ? tensor_bytes(dx) : 0));
}
static int p_rope_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *pos, int nh, int hd,
                           float th) {
    RUN(rope_backward(be, dx, pos, nh, hd, th), "rope_backward", NULL, 0, 2 * tensor_bytes(dx));
}
static int p_attention_backward(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                                const ad_tensor *dout, const ad_tensor *out, const ad_tensor *q,
                                const ad_tensor *k, const ad_tensor *v,
                                const ad_attention_params *p) {
    char op[64];
    attention_label(op, sizeof op, "attention_backward", p);
    RUN(attention_backward(be, dq, dk, dv, dout, out, q, k, v, p), op, NULL,
        attention_flops(q, k, p, 10), B2(dq, dk) + B2(dv, dout) + B2(out, q) + B2(k, v));
}
static int p_avg_pool1d_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, int kernel,
                                 int stride) {
    RUN(avg_pool1d_backward(be, dx, dy, kernel, stride), "avg_pool1d_backward", NULL, 0,
        B2(dx, dy));
}
static int p_embedding_backward(ad_backend *be, ad_tensor *dt, const ad_tensor *dy,
                                const ad_tensor *ids) {
    RUN(embedding_backward(be, dt, dy, ids), "embedding_backward", NULL, 0, 2 * tensor_bytes(dy));
}
static int p_gather_rows(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *r) {
    RUN(gather_rows(be, dx, dy, r), "gather_rows", NULL, 0, 2 * tensor_bytes(dx));
}
static int p_distill_loss(ad_backend *be, ad_tensor *grad, const ad_tensor *s, const ad_tensor *t,
                          const ad_tensor *targets, const ad_distill_params *params,
                          ad_distill_sums *sums) {
    RUN(distill_loss(be, grad, s, t, targets, params, sums), "distill_loss", NULL, 0,
        B2(grad, s) + tensor_bytes(t));
}
static int p_sum_squares(ad_backend *be, const ad_tensor *const *xs, int n, double *out) {
    double bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += tensor_bytes(xs[i]);
    RUN(sum_squares(be, xs, n, out), "sum_squares", NULL, 0, bytes);
}
static int p_scale(ad_backend *be, ad_tensor *x, float s) {
    RUN(scale(be, x, s), "scale", NULL, 0, 2 * tensor_bytes(x));
}
static int p_adamw(ad_backend *be, ad_tensor *w, const ad_tensor *g, ad_tensor *m, ad_tensor *v,
                   const ad_adamw_params *p, ad_tensor *w_bf16) {
    RUN(adamw(be, w, g, m, v, p, w_bf16), "adamw", NULL, 0,
        2 * (B2(w, m) + tensor_bytes(v)) + tensor_bytes(g) + (w_bf16 ? tensor_bytes(w_bf16) : 0));
}

/* Each entry is replaced only where the backend has one (a missing op stays missing). */
#define SHIM(op)                                                                                   \
    if (be->op) be->op = p_##op

static int start(ad_backend *be, bool timing) {
    if (be->profile) {
        prof_state *s = P(be);
        s->n_rows = 0;
        s->seconds = 0;
        s->flops = 0;
        s->timing = timing;
        return AD_OK;
    }
    prof_state *s = calloc(1, sizeof *s);
    if (!s) return ad_fail("out of memory for the op profile");
    s->orig = *be;
    s->timing = timing;
    be->profile = s;
    SHIM(copy);
    SHIM(fill);
    SHIM(matmul);
    SHIM(linear);
    SHIM(linear_residual);
    SHIM(conv1d);
    SHIM(gelu);
    SHIM(silu_mul);
    SHIM(add);
    SHIM(layernorm);
    SHIM(rmsnorm);
    SHIM(softmax);
    SHIM(rope);
    SHIM(attention);
    SHIM(avg_pool1d);
    SHIM(embedding);
    SHIM(scatter_rows);
    SHIM(transpose);
    SHIM(linear_backward);
    SHIM(conv1d_backward);
    SHIM(gelu_backward);
    SHIM(silu_mul_backward);
    SHIM(layernorm_backward);
    SHIM(rmsnorm_backward);
    SHIM(rope_backward);
    SHIM(attention_backward);
    SHIM(avg_pool1d_backward);
    SHIM(embedding_backward);
    SHIM(gather_rows);
    SHIM(distill_loss);
    SHIM(sum_squares);
    SHIM(scale);
    SHIM(adamw);
    return AD_OK;
}

int ad_backend_profile_start(ad_backend *be) {
    return start(be, true);
}

int ad_backend_count_flops(ad_backend *be) {
    return be->profile ? AD_OK : start(be, false);
}

bool ad_backend_profile_timing(const ad_backend *be) {
    return be && be->profile && ((const prof_state *)be->profile)->timing;
}

double ad_backend_profile_flops(const ad_backend *be) {
    return be && be->profile ? ((const prof_state *)be->profile)->flops : -1;
}

void ad_backend_profile_stop(ad_backend *be) {
    prof_state *s = be ? P(be) : NULL;
    if (!s) return;
    *be = s->orig; /* the table as it was, profile NULL */
    free(s->rows);
    free(s);
}

static int by_time(const void *a, const void *b) {
    const prof_row *x = a, *y = b;
    return (x->seconds < y->seconds) - (x->seconds > y->seconds);
}

double ad_backend_profile_report(ad_backend *be, FILE *out, int max_rows) {
    prof_state *s = be ? P(be) : NULL;
    if (!s || !s->timing) return -1;
    qsort(s->rows, (size_t)s->n_rows, sizeof *s->rows, by_time);
    fprintf(out, "op profile (%s backend): %.3f s in %d kinds of op call\n", be->name, s->seconds,
            s->n_rows);
    fprintf(out, "%-72s %7s %10s %6s %10s %9s %8s\n", "op [weight]", "calls", "ms", "%", "GFLOP",
            "TFLOP/s", "GB/s");
    const int n = max_rows > 0 && max_rows < s->n_rows ? max_rows : s->n_rows;
    for (int i = 0; i < n; i++) {
        const prof_row *r = &s->rows[i];
        const double t = r->seconds > 0 ? r->seconds : 1e-30;
        fprintf(out, "%-72.72s %7ld %10.3f %6.1f %10.4g %9.2f %8.1f\n", r->key, r->calls,
                1e3 * r->seconds, s->seconds > 0 ? 100.0 * r->seconds / s->seconds : 0.0,
                r->flops / 1e9, r->flops / t / 1e12, r->bytes / t / 1e9);
    }
    if (n < s->n_rows) fprintf(out, "(%d more rows)\n", s->n_rows - n);
    return s->seconds;
}
