/* Every backward op against central finite differences of an independent double-precision
 * forward written plainly here, on fresh random shapes and values: L = sum(r * f(x)) with a
 * random r, so dy = r and dL/dx is what the op must return. Tolerance: max error <= 1e-4 of
 * the largest gradient (the op computes in fp32). Accumulation (+=) of parameter gradients,
 * GQA, causal masks with an offset and key-length masks are covered. */
#include <unistd.h>

#include "backend/cpu/cpu_backward.h"
#include "core/rng.h"
#include "test.h"

static ad_rng rng;
static ad_backend be;

static double *rnd(int64_t n, double scale) {
    double *x = malloc(sizeof(double) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * ad_rng_normal(&rng);
    return x;
}

static float *zeros(int64_t n) {
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static float *to_f32(const double *x, int64_t n) {
    float *f = malloc(sizeof(float) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)x[i];
    return f;
}

/* Inputs are rounded to float once, so the op and the reference see the same values. */
static void round_f32(double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)x[i];
}

static ad_tensor t3(float *d, int64_t a, int64_t b, int64_t c, const char *name) {
    ad_tensor t;
    ad_tensor_init(&t, d, AD_F32, AD_DEVICE_CPU, 3, (int64_t[]){a, b, c}, name);
    return t;
}

static ad_tensor t2(float *d, int64_t a, int64_t b, const char *name) {
    ad_tensor t;
    ad_tensor_init(&t, d, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){a, b}, name);
    return t;
}

typedef double (*loss_fn)(void *ctx);

/* Compares grad (float, n) against central differences of loss() w.r.t. x (double, n). */
static void check_grad(const char *what, double *x, int64_t n, const float *grad, loss_fn loss,
                       void *ctx) {
    double max_err = 0, max_g = 0;
    int64_t nonfinite = 0; /* fmax below would skip a NaN */
    for (int64_t i = 0; i < n; i++) {
        nonfinite += !isfinite(grad[i]);
        const double h = 1e-4 * fmax(1.0, fabs(x[i]));
        double keep = x[i];
        x[i] = keep + h;
        double up = loss(ctx);
        x[i] = keep - h;
        double down = loss(ctx);
        x[i] = keep;
        double fd = (up - down) / (2 * h);
        max_err = fmax(max_err, fabs(fd - grad[i]));
        max_g = fmax(max_g, fabs(fd));
    }
    CHECK_MSG(nonfinite == 0 && max_err <= 1e-4 * max_g + 1e-6,
              "%s: max error %.3g (max |grad| %.3g), %lld non-finite", what, max_err, max_g,
              (long long)nonfinite);
}

/* ---- linear ------------------------------------------------------------------------------ */
typedef struct {
    double *x, *w, *b, *r;
    int64_t M, N, K;
} linear_ctx;

static double linear_loss(void *p) {
    linear_ctx *c = p;
    double L = 0;
    for (int64_t m = 0; m < c->M; m++)
        for (int64_t n = 0; n < c->N; n++) {
            double y = c->b[n];
            for (int64_t k = 0; k < c->K; k++)
                y += c->x[m * c->K + k] * c->w[n * c->K + k];
            L += c->r[m * c->N + n] * y;
        }
    return L;
}

static void test_linear(void) {
    linear_ctx c = {.M = 2 + ad_rng_below(&rng, 6),
                    .N = 1 + ad_rng_below(&rng, 7),
                    .K = 1 + ad_rng_below(&rng, 9)};
    c.x = rnd(c.M * c.K, 1), c.w = rnd(c.N * c.K, 1), c.b = rnd(c.N, 1), c.r = rnd(c.M * c.N, 1);
    round_f32(c.x, c.M * c.K), round_f32(c.w, c.N * c.K), round_f32(c.b, c.N),
        round_f32(c.r, c.M * c.N);
    float *x = to_f32(c.x, c.M * c.K), *w = to_f32(c.w, c.N * c.K), *r = to_f32(c.r, c.M * c.N);
    float *dx = zeros(c.M * c.K), *dw = zeros(c.N * c.K), *db = zeros(c.N);
    for (int64_t i = 0; i < c.N * c.K; i++)
        dw[i] = 0.5f; /* parameter gradients accumulate */
    ad_tensor tx = t2(x, c.M, c.K, "x"), tw = t2(w, c.N, c.K, "w"), tr = t2(r, c.M, c.N, "dy");
    ad_tensor tdx = t2(dx, c.M, c.K, "dx"), tdw = t2(dw, c.N, c.K, "dw"), tdb;
    ad_tensor_init(&tdb, db, AD_F32, AD_DEVICE_CPU, 1, (int64_t[]){c.N}, "db");
    CHECK_OK(be.linear_backward(&be, &tdx, &tdw, &tdb, &tr, &tx, &tw, false));
    for (int64_t i = 0; i < c.N * c.K; i++)
        dw[i] -= 0.5f;
    check_grad("linear dx", c.x, c.M * c.K, dx, linear_loss, &c);
    check_grad("linear dw", c.w, c.N * c.K, dw, linear_loss, &c);
    check_grad("linear db", c.b, c.N, db, linear_loss, &c);
    /* dw_overwrite: dw written over NaN (no accumulation), db still accumulated. */
    for (int64_t i = 0; i < c.N * c.K; i++)
        dw[i] = NAN;
    for (int64_t i = 0; i < c.N; i++)
        db[i] = 0.5f;
    CHECK_OK(be.linear_backward(&be, &tdx, &tdw, &tdb, &tr, &tx, &tw, true));
    for (int64_t i = 0; i < c.N; i++)
        db[i] -= 0.5f;
    check_grad("linear dw overwritten", c.w, c.N * c.K, dw, linear_loss, &c);
    check_grad("linear db beside an overwritten dw", c.b, c.N, db, linear_loss, &c);
    /* ... and with no rows, zeros */
    ad_tensor none_x = t2(x, 0, c.K, "x"), none_dy = t2(r, 0, c.N, "dy");
    CHECK_OK(be.linear_backward(&be, NULL, &tdw, NULL, &none_dy, &none_x, &tw, true));
    int nonzero = 0;
    for (int64_t i = 0; i < c.N * c.K; i++)
        nonzero += dw[i] != 0.0f;
    CHECK_MSG(nonzero == 0, "%d of dw's values not zero after an overwrite from no rows", nonzero);
    ad_tensor bad = t2(dx, c.K, c.M + 1, "bad");
    CHECK_FAILS_WITH(be.linear_backward(&be, &bad, NULL, NULL, &tr, &tx, &tw, false), "dx (bad)");
    free(c.x), free(c.w), free(c.b), free(c.r), free(x), free(w), free(r), free(dx), free(dw),
        free(db);
}

/* ---- conv1d (channels-last) ---------------------------------------------------------------- */
typedef struct {
    double *x, *w, *b, *r;
    int64_t B, L, Cin, Cout, K, Lout;
    int stride, pad;
} conv_ctx;

static double conv_loss(void *p) {
    conv_ctx *c = p;
    double L = 0;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t o = 0; o < c->Lout; o++)
            for (int64_t co = 0; co < c->Cout; co++) {
                double y = c->b[co];
                for (int64_t ci = 0; ci < c->Cin; ci++)
                    for (int64_t k = 0; k < c->K; k++) {
                        int64_t t = o * c->stride + k - c->pad;
                        if (t >= 0 && t < c->L)
                            y += c->w[(co * c->Cin + ci) * c->K + k] *
                                 c->x[(b * c->L + t) * c->Cin + ci];
                    }
                L += c->r[(b * c->Lout + o) * c->Cout + co] * y;
            }
    return L;
}

static void test_conv1d(void) {
    for (int stride = 1; stride <= 2; stride++) {
        conv_ctx c = {.B = 2,
                      .L = 5 + ad_rng_below(&rng, 4),
                      .Cin = 3,
                      .Cout = 4,
                      .K = 3,
                      .stride = stride,
                      .pad = 1};
        c.Lout = (c.L + 2 * c.pad - c.K) / c.stride + 1;
        int64_t nx = c.B * c.L * c.Cin, nw = c.Cout * c.Cin * c.K, ny = c.B * c.Lout * c.Cout;
        c.x = rnd(nx, 1), c.w = rnd(nw, 1), c.b = rnd(c.Cout, 1), c.r = rnd(ny, 1);
        round_f32(c.x, nx), round_f32(c.w, nw), round_f32(c.b, c.Cout), round_f32(c.r, ny);
        float *x = to_f32(c.x, nx), *w = to_f32(c.w, nw), *r = to_f32(c.r, ny);
        float *dx = zeros(nx), *dw = zeros(nw), *db = zeros(c.Cout);
        ad_tensor tx = t3(x, c.B, c.L, c.Cin, "x"), tw = t3(w, c.Cout, c.Cin, c.K, "w"),
                  tr = t3(r, c.B, c.Lout, c.Cout, "dy");
        ad_tensor tdx = t3(dx, c.B, c.L, c.Cin, "dx"), tdw = t3(dw, c.Cout, c.Cin, c.K, "dw"), tdb;
        ad_tensor_init(&tdb, db, AD_F32, AD_DEVICE_CPU, 1, (int64_t[]){c.Cout}, "db");
        CHECK_OK(be.conv1d_backward(&be, &tdx, &tdw, &tdb, &tr, &tx, &tw, c.stride, c.pad));
        check_grad(stride == 1 ? "conv1d dx" : "conv1d/2 dx", c.x, nx, dx, conv_loss, &c);
        check_grad("conv1d dw", c.w, nw, dw, conv_loss, &c);
        check_grad("conv1d db", c.b, c.Cout, db, conv_loss, &c);
        free(c.x), free(c.w), free(c.b), free(c.r), free(x), free(w), free(r), free(dx), free(dw),
            free(db);
    }
}

/* ---- elementwise ------------------------------------------------------------------------- */
typedef struct {
    double *a, *b, *r;
    int64_t n;
    int kind; /* 0 gelu(a), 1 silu(a) * b */
} ew_ctx;

static double ew_loss(void *p) {
    ew_ctx *c = p;
    double L = 0;
    for (int64_t i = 0; i < c->n; i++) {
        double x = c->a[i];
        double y = c->kind == 0 ? 0.5 * x * (1 + erf(x / sqrt(2.0))) : x / (1 + exp(-x)) * c->b[i];
        L += c->r[i] * y;
    }
    return L;
}

static void test_elementwise(void) {
    ew_ctx c = {.n = 50};
    c.a = rnd(c.n, 2), c.b = rnd(c.n, 1), c.r = rnd(c.n, 1);
    round_f32(c.a, c.n), round_f32(c.b, c.n), round_f32(c.r, c.n);
    float *a = to_f32(c.a, c.n), *b = to_f32(c.b, c.n), *r = to_f32(c.r, c.n), *da = zeros(c.n),
          *db = zeros(c.n);
    ad_tensor ta = t2(a, 5, 10, "a"), tb = t2(b, 5, 10, "b"), tr = t2(r, 5, 10, "dy"),
              tda = t2(da, 5, 10, "da"), tdb = t2(db, 5, 10, "db");
    CHECK_OK(be.gelu_backward(&be, &tda, &tr, &ta));
    check_grad("gelu", c.a, c.n, da, ew_loss, &c);
    c.kind = 1;
    CHECK_OK(be.silu_mul_backward(&be, &tda, &tdb, &tr, &ta, &tb));
    check_grad("silu_mul dgate", c.a, c.n, da, ew_loss, &c);
    check_grad("silu_mul dup", c.b, c.n, db, ew_loss, &c);
    free(c.a), free(c.b), free(c.r), free(a), free(b), free(r), free(da), free(db);
}

/* ---- norms ------------------------------------------------------------------------------- */
typedef struct {
    double *x, *w, *b, *r;
    int64_t rows, C;
    double eps;
    int rms;
} norm_ctx;

static double norm_loss(void *p) {
    norm_ctx *c = p;
    double L = 0;
    for (int64_t i = 0; i < c->rows; i++) {
        const double *x = c->x + i * c->C;
        double mean = 0, var = 0;
        for (int64_t k = 0; k < c->C; k++)
            mean += x[k];
        mean /= c->C;
        for (int64_t k = 0; k < c->C; k++)
            var += c->rms ? x[k] * x[k] : (x[k] - mean) * (x[k] - mean);
        var /= c->C;
        for (int64_t k = 0; k < c->C; k++) {
            double y = c->rms ? x[k] / sqrt(var + c->eps) * c->w[k]
                              : (x[k] - mean) / sqrt(var + c->eps) * c->w[k] + c->b[k];
            L += c->r[i * c->C + k] * y;
        }
    }
    return L;
}

static void test_norms(void) {
    for (int rms = 0; rms < 2; rms++) {
        norm_ctx c = {.rows = 70 + ad_rng_below(&rng, 80), .C = 16, .eps = 1e-5, .rms = rms};
        int64_t n = c.rows * c.C;
        c.x = rnd(n, 2), c.w = rnd(c.C, 1), c.b = rnd(c.C, 1), c.r = rnd(n, 1);
        round_f32(c.x, n), round_f32(c.w, c.C), round_f32(c.b, c.C), round_f32(c.r, n);
        float *x = to_f32(c.x, n), *w = to_f32(c.w, c.C), *r = to_f32(c.r, n);
        float *dx = zeros(n), *dw = zeros(c.C), *db = zeros(c.C);
        ad_tensor tx = t2(x, c.rows, c.C, "x"), tr = t2(r, c.rows, c.C, "dy"),
                  tdx = t2(dx, c.rows, c.C, "dx"), tw, tdw, tdb;
        ad_tensor_init(&tw, w, AD_F32, AD_DEVICE_CPU, 1, (int64_t[]){c.C}, "w");
        ad_tensor_init(&tdw, dw, AD_F32, AD_DEVICE_CPU, 1, (int64_t[]){c.C}, "dw");
        ad_tensor_init(&tdb, db, AD_F32, AD_DEVICE_CPU, 1, (int64_t[]){c.C}, "db");
        /* dx accumulates onto 0.5 (the residual's gradient), subtracted before the check */
        for (int64_t i = 0; i < n; i++)
            dx[i] = 0.5f;
        if (rms)
            CHECK_OK(be.rmsnorm_backward(&be, &tdx, &tdw, &tr, &tx, &tw, (float)c.eps, true));
        else
            CHECK_OK(
                be.layernorm_backward(&be, &tdx, &tdw, &tdb, &tr, &tx, &tw, (float)c.eps, true));
        float *acc = zeros(n);
        for (int64_t i = 0; i < n; i++)
            acc[i] = dx[i] - 0.5f;
        check_grad(rms ? "rmsnorm dx accumulated" : "layernorm dx accumulated", c.x, 3 * c.C, acc,
                   norm_loss, &c);
        free(acc);
        for (int64_t i = 0; i < c.C; i++)
            dw[i] = db[i] = 0.0f;
        for (int64_t i = 0; i < n; i++)
            dx[i] = NAN; /* overwritten */
        if (rms)
            CHECK_OK(be.rmsnorm_backward(&be, &tdx, &tdw, &tr, &tx, &tw, (float)c.eps, false));
        else
            CHECK_OK(
                be.layernorm_backward(&be, &tdx, &tdw, &tdb, &tr, &tx, &tw, (float)c.eps, false));
        /* The row count spans several of the op's row blocks. */
        check_grad(rms ? "rmsnorm dx" : "layernorm dx", c.x, 3 * c.C, dx, norm_loss, &c);
        check_grad(rms ? "rmsnorm dw" : "layernorm dw", c.w, c.C, dw, norm_loss, &c);
        if (!rms) check_grad("layernorm db", c.b, c.C, db, norm_loss, &c);
        free(c.x), free(c.w), free(c.b), free(c.r), free(x), free(w), free(r), free(dx), free(dw),
            free(db);
    }
}

/* ---- rope: backward is the transpose of the forward rotation ---------------------------- */
static void test_rope(void) {
    const int64_t B = 2, T = 5;
    const int H = 3, D = 8;
    const float theta = 10000.0f;
    int32_t pos[10];
    for (int i = 0; i < B * T; i++)
        pos[i] = (int32_t)ad_rng_below(&rng, 3000);
    int64_t n = B * T * H * D;
    double *x = rnd(n, 1), *r = rnd(n, 1);
    round_f32(x, n), round_f32(r, n);
    /* Forward rotation in double with transformers' float32 angles. */
    double fx_dot_r = 0;
    for (int64_t bt = 0; bt < B * T; bt++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < D / 2; j++) {
                float inv = 1.0f / powf(theta, (float)(2 * j) / (float)D),
                      ang = (float)pos[bt] * inv;
                double c = cosf(ang), s = sinf(ang);
                const double *v = x + (bt * H + h) * D;
                double y1 = v[j] * c - v[j + D / 2] * s, y2 = v[j + D / 2] * c + v[j] * s;
                fx_dot_r += y1 * r[(bt * H + h) * D + j] + y2 * r[(bt * H + h) * D + j + D / 2];
            }
    float *g = to_f32(r, n);
    ad_tensor tg = t3(g, B, T, H * D, "dx"), tp;
    ad_tensor_init(&tp, pos, AD_I32, AD_DEVICE_CPU, 2, (int64_t[]){B, T}, "pos");
    CHECK_OK(be.rope_backward(&be, &tg, &tp, H, D, theta));
    double x_dot_g = 0;
    for (int64_t i = 0; i < n; i++)
        x_dot_g += x[i] * g[i];
    CHECK_NEAR(x_dot_g, fx_dot_r, 1e-4 * fabs(fx_dot_r) + 1e-4);
    free(x), free(r), free(g);
}

/* ---- attention ----------------------------------------------------------------------------- */
typedef struct {
    double *q, *k, *v, *r;
    int64_t B, Tq, Tk;
    int H, KVH, D, causal, q_offset;
    int key_len[2];
    double *out; /* forward output (filled by attn_forward) */
} attn_ctx;

static double attn_forward(attn_ctx *c) {
    double L = 0;
    const int group = c->H / c->KVH;
    double scale = 1.0 / sqrt(c->D);
    for (int64_t b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int64_t i = 0; i < c->Tq; i++) {
                int64_t limit = c->key_len[b];
                if (c->causal && c->q_offset + i + 1 < limit) limit = c->q_offset + i + 1;
                double s[64], mx = -1e300, sum = 0;
                for (int64_t j = 0; j < limit; j++) {
                    s[j] = 0;
                    for (int d = 0; d < c->D; d++)
                        s[j] += c->q[((b * c->Tq + i) * c->H + h) * c->D + d] *
                                c->k[((b * c->Tk + j) * c->KVH + h / group) * c->D + d];
                    s[j] *= scale;
                    mx = fmax(mx, s[j]);
                }
                for (int64_t j = 0; j < limit; j++)
                    sum += (s[j] = exp(s[j] - mx));
                for (int d = 0; d < c->D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < limit; j++)
                        o += s[j] / sum * c->v[((b * c->Tk + j) * c->KVH + h / group) * c->D + d];
                    int64_t idx = ((b * c->Tq + i) * c->H + h) * c->D + d;
                    if (c->out) c->out[idx] = o;
                    L += c->r[idx] * o;
                }
            }
    return L;
}

static double attn_loss(void *p) {
    attn_ctx *c = p;
    double *keep = c->out;
    c->out = NULL;
    double L = attn_forward(c);
    c->out = keep;
    return L;
}

static void test_attention(void) {
    for (int variant = 0; variant < 2; variant++) {
        attn_ctx c = {.B = 2, .H = 4, .KVH = 2, .D = 4};
        if (variant == 0) { /* bidirectional encoder with padded keys */
            c.Tq = c.Tk = 6;
            c.key_len[0] = 6, c.key_len[1] = 4;
        } else { /* causal decoder continuing after 3 cached positions */
            c.Tq = 3, c.Tk = 6, c.causal = 1, c.q_offset = 3;
            c.key_len[0] = c.key_len[1] = 6;
        }
        int64_t nq = c.B * c.Tq * c.H * c.D, nk = c.B * c.Tk * c.KVH * c.D;
        c.q = rnd(nq, 1), c.k = rnd(nk, 1), c.v = rnd(nk, 1), c.r = rnd(nq, 1), c.out = rnd(nq, 0);
        round_f32(c.q, nq), round_f32(c.k, nk), round_f32(c.v, nk), round_f32(c.r, nq);
        attn_forward(&c);
        float *q = to_f32(c.q, nq), *k = to_f32(c.k, nk), *v = to_f32(c.v, nk),
              *r = to_f32(c.r, nq), *o = to_f32(c.out, nq);
        float *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
        ad_tensor tq = t3(q, c.B, c.Tq, c.H * c.D, "q"), tk = t3(k, c.B, c.Tk, c.KVH * c.D, "k"),
                  tv = t3(v, c.B, c.Tk, c.KVH * c.D, "v");
        ad_tensor tr = t3(r, c.B, c.Tq, c.H * c.D, "dout"), to = t3(o, c.B, c.Tq, c.H * c.D, "out");
        ad_tensor tdq = t3(dq, c.B, c.Tq, c.H * c.D, "dq"),
                  tdk = t3(dk, c.B, c.Tk, c.KVH * c.D, "dk"),
                  tdv = t3(dv, c.B, c.Tk, c.KVH * c.D, "dv");
        ad_attention_params p = {.n_heads = c.H,
                                 .n_kv_heads = c.KVH,
                                 .head_dim = c.D,
                                 .causal = c.causal,
                                 .q_offset = c.q_offset,
                                 .scale = 1.0f / sqrtf((float)c.D),
                                 .key_len = c.key_len};
        /* the gradients are overwritten: one that is also an input is refused */
        CHECK_FAILS_WITH(be.attention_backward(&be, &tq, &tdk, &tdv, &tr, &to, &tq, &tk, &tv, &p),
                         "overlaps input q");
        CHECK_FAILS_WITH(be.attention_backward(&be, &tr, &tdk, &tdv, &tr, &to, &tq, &tk, &tv, &p),
                         "overlaps input dout");
        CHECK_OK(be.attention_backward(&be, &tdq, &tdk, &tdv, &tr, &to, &tq, &tk, &tv, &p));
        check_grad(variant ? "causal attention dq" : "masked attention dq", c.q, nq, dq, attn_loss,
                   &c);
        check_grad(variant ? "causal attention dk" : "masked attention dk", c.k, nk, dk, attn_loss,
                   &c);
        check_grad(variant ? "causal attention dv" : "masked attention dv", c.v, nk, dv, attn_loss,
                   &c);
        free(c.q), free(c.k), free(c.v), free(c.r), free(c.out), free(q), free(k), free(v), free(r),
            free(o), free(dq), free(dk), free(dv);
    }
}

/* ---- pooling, embedding, gather -------------------------------------------------------------- */
typedef struct {
    double *x, *r;
    int64_t B, L, C, Lout;
} pool_ctx;

static double pool_loss(void *p) {
    pool_ctx *c = p;
    double L = 0;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t o = 0; o < c->Lout; o++)
            for (int64_t ch = 0; ch < c->C; ch++)
                L += c->r[(b * c->Lout + o) * c->C + ch] * 0.5 *
                     (c->x[(b * c->L + 2 * o) * c->C + ch] +
                      c->x[(b * c->L + 2 * o + 1) * c->C + ch]);
    return L;
}

static void test_pool_embedding_gather(void) {
    pool_ctx c = {.B = 2, .L = 7, .C = 3};
    c.Lout = (c.L - 2) / 2 + 1;
    int64_t nx = c.B * c.L * c.C, ny = c.B * c.Lout * c.C;
    c.x = rnd(nx, 1), c.r = rnd(ny, 1);
    round_f32(c.r, ny);
    float *r = to_f32(c.r, ny), *dx = zeros(nx);
    ad_tensor tr = t3(r, c.B, c.Lout, c.C, "dy"), tdx = t3(dx, c.B, c.L, c.C, "dx");
    CHECK_OK(be.avg_pool1d_backward(&be, &tdx, &tr, 2, 2));
    check_grad("avg_pool1d", c.x, nx, dx, pool_loss, &c);

    /* embedding: dtable[id] += dy rows, skipping negative ids, accumulating. */
    int32_t ids[6] = {2, 0, 2, -1, 4, 2};
    float dy[6 * 3], table[5 * 3];
    for (int i = 0; i < 18; i++)
        dy[i] = (float)(i + 1);
    for (int i = 0; i < 15; i++)
        table[i] = 1.0f;
    ad_tensor tdy = t2(dy, 6, 3, "dy"), tt = t2(table, 5, 3, "dtable"), tid;
    ad_tensor_init(&tid, ids, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){6}, "ids");
    CHECK_OK(be.embedding_backward(&be, &tt, &tdy, &tid));
    CHECK(table[2 * 3 + 0] == 1 + 1 + 7 + 16 && table[0] == 1 + 4 && table[4 * 3 + 2] == 1 + 15 &&
          table[3 * 3] == 1.0f);
    ids[1] = 5;
    CHECK_FAILS_WITH(be.embedding_backward(&be, &tt, &tdy, &tid), "outside the table");

    int32_t rows[2] = {4, 1};
    float g[2 * 3];
    ad_tensor tg = t2(g, 2, 3, "dx"), trows;
    ad_tensor_init(&trows, rows, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){2}, "rows");
    CHECK_OK(be.gather_rows(&be, &tg, &tdy, &trows));
    CHECK(g[0] == 13 && g[3] == 4 && g[5] == 6);
    rows[0] = -1; /* a row scatter_rows skipped: zeros */
    CHECK_OK(be.gather_rows(&be, &tg, &tdy, &trows));
    CHECK(g[0] == 0 && g[1] == 0 && g[2] == 0 && g[3] == 4 && g[5] == 6);
    rows[0] = 6;
    CHECK_FAILS_WITH(be.gather_rows(&be, &tg, &tdy, &trows), "row 6 at 0 outside [0, 6)");
    free(c.x), free(c.r), free(r), free(dx);
}

int main(void) {
    ad_rng_init(&rng, (uint64_t)getpid() * 7919u, 51);
    memset(&be, 0, sizeof be);
    ad_cpu_register_backward(&be);
    for (int round = 0; round < 3; round++) {
        RUN(test_linear);
        RUN(test_conv1d);
        RUN(test_elementwise);
        RUN(test_norms);
        RUN(test_rope);
        RUN(test_attention);
        RUN(test_pool_embedding_gather);
    }
    return test_report();
}
