/* The optimizer as backend ops, one process or several, plain or ZeRO-1; see device_opt.h. */
#include "train/device_opt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static int host_view(ad_tensor *t, float *data, int64_t n, const char *name) {
    return ad_tensor_init(t, data, AD_F32, AD_DEVICE_CPU, 1, (int64_t[]){n}, name);
}

/* Elements [at, at + n) of the tensor x (any shape, contiguous) as a 1-D tensor. */
static int slice_view(ad_tensor *out, const ad_tensor *x, int64_t at, int64_t n) {
    return ad_tensor_init(out, (char *)x->data + ad_dtype_bytes_for(x->dtype, at), x->dtype,
                          x->device, 1, (int64_t[]){n}, x->name);
}

/* Param i's weights are bf16 (the student computes in bf16), updated through an fp32 master. */
static bool is_bf16(const ad_param_table *t, int i) {
    return t->dev_w[i] && t->dev_w[i]->dtype == AD_BF16;
}

static int world_of(const ad_param_table *t) {
    return t->grad_comm ? t->grad_comm->world : 1;
}
static int rank_of(const ad_param_table *t) {
    return t->grad_comm ? t->grad_comm->rank : 0;
}

/* Tensor i's slice length s (ZeRO-1: the world's slices of ceil(n / world) elements). A bf16
 * weight's slices have an even length, so that each is whole 4-byte words, which the float
 * all-gather moves. */
static int64_t slice_size(const ad_param_table *t, int i) {
    const int64_t W = world_of(t);
    const int64_t s = (t->params[i].n + W - 1) / W;
    return W > 1 && is_bf16(t, i) ? s + (s & 1) : s;
}

static int device_f32(ad_backend *be, int64_t n, const char *name, ad_tensor *out) {
    void *data;
    AD_TRY(be->alloc(be, sizeof(float) * (size_t)(n ? n : 1), &data));
    if (ad_tensor_init(out, data, AD_F32, be->device, 1, (int64_t[]){n}, name) < 0) {
        be->release(be, data);
        return AD_ERR;
    }
    return AD_OK;
}

int ad_device_opt_init(ad_param_table *t, ad_comm *grad_comm, ad_comm *host_comm, bool zero) {
    if (t->qat.n)
        return ad_fail("train.optimizer: device: not with quantization-aware training (its "
                       "master weights live on the host)");
    ad_backend *be = t->be;
    if (!be->adamw || !be->sum_squares || !be->copy || !be->fill)
        return ad_fail("train.optimizer: device: the %s backend has no optimizer ops", be->name);
    if (grad_comm && grad_comm->world > 1 && !host_comm)
        return ad_fail("internal: the device optimizer over ranks needs a host communicator");
    t->grad_comm = grad_comm && grad_comm->world > 1 ? grad_comm : NULL;
    t->host_comm = t->grad_comm ? host_comm : NULL;
    t->zero = zero;
    const int n = t->n_params ? t->n_params : 1;
    t->opt_m = ad_calloc((size_t)n, sizeof *t->opt_m, "moments");
    t->opt_v = ad_calloc((size_t)n, sizeof *t->opt_v, "moments");
    t->slice_at = ad_calloc((size_t)n, sizeof *t->slice_at, "moment slices");
    t->dev_master = ad_calloc((size_t)n, sizeof *t->dev_master, "fp32 masters");
    if (!t->opt_m || !t->opt_v || !t->slice_at || !t->dev_master) return AD_ERR;
    t->on_device = true; /* from here ad_params_free releases what was allocated */
    const int64_t W = world_of(t), R = rank_of(t);
    int64_t scratch = 0;
    for (int i = 0; i < t->n_params; i++) {
        ad_param_ref *p = &t->params[i];
        const ad_tensor *w = t->dev_w[i], *g = t->dev_g[i];
        if (!w || !g) return ad_fail("internal: parameter %s has no device tensor", p->name);
        const bool bf16 = is_bf16(t, i);
        if ((w->dtype != AD_F32 && !bf16) || g->dtype != AD_F32 || (bf16 && !p->param))
            return ad_fail("train.optimizer: device: %s is %s with a %s gradient (f32, or bf16 "
                           "with an fp32 master, needed)",
                           p->name, ad_dtype_name(w->dtype), ad_dtype_name(g->dtype));
        int64_t at = 0, len = p->n;
        if (zero) {
            const int64_t s = slice_size(t, i);
            at = R * s < p->n ? R * s : p->n;
            len = p->n - at < s ? p->n - at : s;
            if (W * s != p->n && W * s > scratch) scratch = W * s;
        }
        t->slice_at[i] = at;
        AD_TRY(device_f32(be, len, "exp_avg", &t->opt_m[i]));
        AD_TRY(device_f32(be, len, "exp_avg_sq", &t->opt_v[i]));
        ad_tensor h;
        AD_TRY(host_view(&h, p->m + at, len, p->name));
        AD_TRY(be->upload(be, &t->opt_m[i], &h));
        AD_TRY(host_view(&h, p->v + at, len, p->name));
        AD_TRY(be->upload(be, &t->opt_v[i], &h));
        if (bf16) { /* the master of this rank's slice, from the host's exact values */
            AD_TRY(device_f32(be, len, p->name, &t->dev_master[i]));
            AD_TRY(host_view(&h, p->param + at, len, p->name));
            AD_TRY(be->upload(be, &t->dev_master[i], &h));
        }
        if (t->mirrored) { /* gradients never come down now */
            free(p->grad);
            p->grad = NULL;
        }
        if (R != 0) { /* only rank 0 writes checkpoints: the host copies are its alone */
            free(p->m), free(p->v);
            p->m = p->v = NULL;
            if (t->mirrored) { /* the weights' host mirror too; a CPU backend's are the weights */
                free(p->param);
                p->param = NULL;
            }
        }
    }
    if (scratch) {
        /* zeroed once: the padding past a tensor's end is summed and gathered but never read
         * back, so it only has to hold defined values */
        AD_TRY(device_f32(be, scratch, "ZeRO-1 scratch", &t->zero_scratch));
        AD_TRY(be->fill(be, &t->zero_scratch, 0.0f));
    }
    return AD_OK;
}

int64_t ad_device_opt_state_bytes(const ad_param_table *t) {
    int64_t n = 0;
    for (int i = 0; t->on_device && i < t->n_params; i++)
        n += ad_tensor_numel(&t->opt_m[i]);
    return 2 * (int64_t)sizeof(float) * n;
}

/* Gradient i summed over the ranks into this rank's slice [at, at + len) of it. */
static int reduce_scatter_grad(ad_param_table *t, int i) {
    ad_backend *be = t->be;
    ad_comm *c = t->grad_comm;
    ad_tensor *g = t->dev_g[i];
    const int64_t n = t->params[i].n, s = slice_size(t, i), R = c->rank;
    float *gd = g->data;
    if (n == c->world * s) return c->reduce_scatter_sum(c, gd, gd + R * s, s);
    /* padded: the gradient into the scratch, and this rank's slice back */
    ad_tensor *sc = &t->zero_scratch, a, b;
    const int64_t len = ad_tensor_numel(&t->opt_m[i]);
    AD_TRY(slice_view(&a, sc, 0, n));
    AD_TRY(slice_view(&b, g, 0, n));
    AD_TRY(be->copy(be, &a, &b));
    AD_TRY(c->reduce_scatter_sum(c, sc->data, (float *)sc->data + R * s, s));
    if (!len) return AD_OK;
    AD_TRY(slice_view(&a, g, t->slice_at[i], len));
    AD_TRY(slice_view(&b, sc, R * s, len));
    return be->copy(be, &a, &b);
}

/* Weight i's slices from every rank into the whole weight on every rank: the f32 weight, or
 * the bf16 one (its fp32 master stays sliced), whose even slices travel as float words. */
static int all_gather_weight(ad_param_table *t, int i) {
    ad_backend *be = t->be;
    ad_comm *c = t->grad_comm;
    ad_tensor *w = t->dev_w[i];
    const int64_t n = t->params[i].n, s = slice_size(t, i), R = c->rank;
    const int64_t per_word = w->dtype == AD_BF16 ? 2 : 1, words = s / per_word;
    if (n == c->world * s)
        return c->all_gather(c, (const float *)w->data + R * words, w->data, words);
    ad_tensor sc, a, b; /* the scratch in w's dtype */
    AD_TRY(ad_tensor_init(&sc, t->zero_scratch.data, w->dtype, w->device, 1,
                          (int64_t[]){c->world * s}, "ZeRO-1 scratch"));
    const int64_t len = ad_tensor_numel(&t->opt_m[i]);
    if (len) {
        AD_TRY(slice_view(&a, &sc, R * s, len));
        AD_TRY(slice_view(&b, w, t->slice_at[i], len));
        AD_TRY(be->copy(be, &a, &b));
    }
    AD_TRY(c->all_gather(c, (const float *)sc.data + R * words, sc.data, words));
    AD_TRY(slice_view(&a, w, 0, n));
    AD_TRY(slice_view(&b, &sc, 0, n));
    return be->copy(be, &a, &b);
}

int ad_device_opt_step(ad_param_table *t, double max_norm, const ad_adamw_config *c, double lr,
                       int64_t step, double *norm) {
    ad_backend *be = t->be;
    const int n = t->n_params;
    const bool sharded = t->zero && t->grad_comm;
    for (int i = 0; t->grad_comm && i < n; i++) {
        if (sharded)
            AD_TRY(reduce_scatter_grad(t, i));
        else
            AD_TRY(t->grad_comm->allreduce_sum(t->grad_comm, t->dev_g[i]->data, t->params[i].n));
    }
    /* This rank's part of every gradient: the whole tensor, or (ZeRO-1) its slice. */
    ad_tensor *gv = ad_calloc((size_t)(n ? n : 1), sizeof *gv, "gradient views");
    const ad_tensor **list = ad_calloc((size_t)(n ? n : 1), sizeof *list, "gradient views");
    double *sums = ad_malloc(sizeof(double) * (size_t)(n ? n : 1), "norms");
    int rc = gv && list && sums ? AD_OK : AD_ERR, k = 0;
    for (int i = 0; rc == AD_OK && i < n; i++) {
        const int64_t len = ad_tensor_numel(&t->opt_m[i]);
        if (!len) continue;
        rc = slice_view(&gv[i], t->dev_g[i], t->slice_at[i], len);
        list[k++] = &gv[i];
    }
    if (rc == AD_OK && k) rc = be->sum_squares(be, list, k, sums);
    double total = 0;
    for (int i = 0; rc == AD_OK && i < k; i++)
        total += sums[i];       /* in list order, as the host optimizer adds them */
    if (rc == AD_OK && sharded) /* the slices' sums, added in rank order */
        rc = t->host_comm->allreduce_sum_f64(t->host_comm, &total, 1);
    free(list), free(sums);
    *norm = sqrt(total);
    if (rc < 0 || !isfinite(*norm)) {
        free(gv);
        return rc;
    }
    const double coef = ad_clip_coefficient(*norm, max_norm);
    t->host_stale = true;
    for (int i = 0; rc == AD_OK && i < n; i++) {
        const int64_t len = ad_tensor_numel(&t->opt_m[i]);
        ad_tensor wv, low;
        const bool bf16 = is_bf16(t, i);
        if (len) {
            /* clipping rides in the step: no pass of its own over the gradients */
            const ad_adamw_params a = {lr,
                                       c->beta1,
                                       c->beta2,
                                       c->eps,
                                       c->weight_decay,
                                       t->params[i].decay,
                                       step,
                                       coef < 1.0 ? (float)coef : 1.0f};
            /* a bf16 weight's master holds just this rank's part; the step also writes the
             * part's bf16 weights */
            rc = bf16 ? slice_view(&wv, &t->dev_master[i], 0, len)
                      : slice_view(&wv, t->dev_w[i], t->slice_at[i], len);
            if (rc == AD_OK && bf16) rc = slice_view(&low, t->dev_w[i], t->slice_at[i], len);
            if (rc == AD_OK)
                rc = be->adamw(be, &wv, &gv[i], &t->opt_m[i], &t->opt_v[i], &a, bf16 ? &low : NULL);
        }
        if (rc == AD_OK && sharded) rc = all_gather_weight(t, i);
    }
    free(gv);
    return rc;
}

int ad_device_opt_gather_moments(ad_param_table *t) {
    if (!t->on_device || !t->zero) return AD_OK;
    ad_backend *be = t->be;
    ad_comm *c = t->host_comm;
    const int64_t W = world_of(t), R = rank_of(t);
    int64_t most = 0;
    for (int i = 0; i < t->n_params; i++)
        if (slice_size(t, i) > most) most = slice_size(t, i);
    float *buf = ad_calloc((size_t)(W * most + 1), sizeof(float), "moment slices");
    if (!buf) return AD_ERR;
    int rc = AD_OK;
    for (int i = 0; rc == AD_OK && i < t->n_params; i++) {
        ad_param_ref *p = &t->params[i];
        const int64_t s = slice_size(t, i), len = ad_tensor_numel(&t->opt_m[i]);
        for (int k = 0; rc == AD_OK && k < (is_bf16(t, i) ? 3 : 2); k++) {
            ad_tensor *src = k == 2 ? &t->dev_master[i] : k ? &t->opt_v[i] : &t->opt_m[i];
            float *dst = k == 2 ? p->param : k ? p->v : p->m;
            ad_tensor h;
            memset(buf + R * s, 0, sizeof(float) * (size_t)s);
            rc = host_view(&h, buf + R * s, len, p->name);
            if (rc == AD_OK && len) rc = be->download(be, &h, src);
            if (rc == AD_OK && c) rc = c->all_gather(c, buf + R * s, buf, s);
            if (rc == AD_OK && dst) memcpy(dst, buf, sizeof(float) * (size_t)p->n);
        }
    }
    free(buf);
    return rc;
}
