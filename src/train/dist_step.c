/* Data-parallel and ZeRO-1 optimizer steps; see dist_step.h. */
#include "train/dist_step.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"

int ad_dist_opt_init(ad_dist_opt *d, ad_comm *comm, bool zero, ad_param_ref *params, int n) {
    memset(d, 0, sizeof *d);
    d->comm = comm, d->zero = zero, d->params = params, d->n_params = n;
    const int W = comm->world, R = comm->rank;
    d->offset = ad_calloc((size_t)(n ? n : 1), sizeof *d->offset, "parameter offsets");
    if (!d->offset) return AD_ERR;
    for (int i = 0; i < n; i++) {
        if (!params[i].grad || !params[i].m || !params[i].v)
            return ad_fail("internal: trainable tensor %s lacks a gradient or moments",
                           params[i].name);
        d->offset[i] = d->total;
        d->total += params[i].n;
    }
    d->shard = (d->total + W - 1) / W;
    d->lo = d->shard * R; /* may reach past N when N < world: then this rank owns nothing */
    d->hi = d->lo + d->shard < d->total ? d->lo + d->shard : d->total;
    if (W > 1 || zero) {
        d->flat = ad_calloc((size_t)W * (size_t)d->shard + 1, sizeof(float), "gradient buffer");
        if (!d->flat) return AD_ERR;
    }
    if (!zero) return AD_OK;
    d->m = ad_calloc((size_t)d->shard + 1, sizeof(float), "adam moments (shard)");
    d->v = ad_calloc((size_t)d->shard + 1, sizeof(float), "adam moments (shard)");
    d->refs = ad_calloc((size_t)(n ? n : 1), sizeof *d->refs, "shard tensors");
    if (!d->m || !d->v || !d->refs) return AD_ERR;
    for (int i = 0; i < n; i++) {
        const int64_t a = d->offset[i] > d->lo ? d->offset[i] : d->lo,
                      b = d->offset[i] + params[i].n < d->hi ? d->offset[i] + params[i].n : d->hi;
        if (a < b) {
            const int64_t in = a - d->offset[i];
            memcpy(d->m + (a - d->lo), params[i].m + in, sizeof(float) * (size_t)(b - a));
            memcpy(d->v + (a - d->lo), params[i].v + in, sizeof(float) * (size_t)(b - a));
            d->refs[d->n_refs++] = (ad_param_ref){.name = params[i].name,
                                                  .param = params[i].param + in,
                                                  .grad = d->flat + a,
                                                  .m = d->m + (a - d->lo),
                                                  .v = d->v + (a - d->lo),
                                                  .n = b - a,
                                                  .decay = params[i].decay};
        }
        free(params[i].m), free(params[i].v);
        params[i].m = params[i].v = NULL;
    }
    return AD_OK;
}

void ad_dist_opt_free(ad_dist_opt *d) {
    free(d->offset), free(d->flat), free(d->m), free(d->v), free(d->refs);
    memset(d, 0, sizeof *d);
}

int64_t ad_dist_opt_state_bytes(const ad_dist_opt *d) {
    return 2 * (int64_t)sizeof(float) * (d->zero ? d->shard : d->total);
}

static void pack_grads(ad_dist_opt *d) {
    for (int i = 0; i < d->n_params; i++)
        memcpy(d->flat + d->offset[i], d->params[i].grad, sizeof(float) * (size_t)d->params[i].n);
    const int64_t padded = (int64_t)d->comm->world * d->shard;
    memset(d->flat + d->total, 0, sizeof(float) * (size_t)(padded - d->total));
}

static int zero_step(ad_dist_opt *d, double max_norm, const ad_adamw_config *c, double lr,
                     int64_t t, double *norm) {
    ad_comm *comm = d->comm;
    pack_grads(d);
    AD_TRY(comm->reduce_scatter_sum(comm, d->flat, d->flat + d->lo, d->shard));
    /* the global norm: the slices' sums of squares added in rank order */
    const double local = ad_grad_norm(d->refs, d->n_refs);
    double ss = local * local;
    AD_TRY(comm->allreduce_sum_f64(comm, &ss, 1));
    *norm = sqrt(ss);
    if (!isfinite(*norm)) return AD_OK;
    /* as ad_clip_grad_norm, on the slice */
    const double coef = ad_clip_coefficient(*norm, max_norm);
    if (coef < 1.0) ad_grad_scale(d->refs, d->n_refs, coef);
    ad_adamw_step(d->refs, d->n_refs, c, lr, t);
    for (int k = 0; k < d->n_refs; k++)
        memcpy(d->refs[k].grad, d->refs[k].param, sizeof(float) * (size_t)d->refs[k].n);
    AD_TRY(comm->all_gather(comm, d->flat + d->lo, d->flat, d->shard));
    for (int i = 0; i < d->n_params; i++)
        memcpy(d->params[i].param, d->flat + d->offset[i], sizeof(float) * (size_t)d->params[i].n);
    return AD_OK;
}

int ad_dist_opt_step(ad_dist_opt *d, double max_norm, const ad_adamw_config *c, double lr,
                     int64_t t, double *norm) {
    if (d->zero) return zero_step(d, max_norm, c, lr, t, norm);
    if (d->comm->world > 1) {
        pack_grads(d);
        AD_TRY(d->comm->allreduce_sum(d->comm, d->flat, d->total));
        for (int i = 0; i < d->n_params; i++)
            memcpy(d->params[i].grad, d->flat + d->offset[i],
                   sizeof(float) * (size_t)d->params[i].n);
    }
    *norm = ad_clip_grad_norm(d->params, d->n_params, max_norm);
    if (isfinite(*norm)) ad_adamw_step(d->params, d->n_params, c, lr, t);
    return AD_OK;
}

int ad_dist_opt_full_moments(ad_dist_opt *d, float **m, float **v) {
    *m = *v = NULL;
    if (!d->zero) return AD_OK;
    const bool root = d->comm->rank == 0;
    float *out[2] = {NULL, NULL};
    int rc = AD_OK;
    for (int k = 0; k < 2 && rc == AD_OK; k++) {
        if (root && !(out[k] = ad_malloc(sizeof(float) * (size_t)(d->total + 1), "moments")))
            rc = AD_ERR; /* the others still join the gather; the trainer then aborts the job */
        float *mine = k ? d->v : d->m;
        memcpy(d->flat + d->lo, mine, sizeof(float) * (size_t)d->shard);
        if (d->comm->all_gather(d->comm, d->flat + d->lo, d->flat, d->shard) < 0) rc = AD_ERR;
        if (rc == AD_OK && root) memcpy(out[k], d->flat, sizeof(float) * (size_t)d->total);
    }
    if (rc < 0) {
        free(out[0]), free(out[1]);
        return AD_ERR;
    }
    *m = out[0], *v = out[1];
    return AD_OK;
}

void ad_dist_fault_point(const ad_comm *c, int64_t step) {
    const char *at = getenv("AUDISTILL_RANK_FAULT");
    if (!at || !*at) return;
    int rank = -1;
    long long s = -1;
    char mode[16] = "";
    if (sscanf(at, "%d:%lld:%15s", &rank, &s, mode) < 2 || rank != c->rank || s != step) return;
    fprintf(stderr, "audistill: rank %d: AUDISTILL_RANK_FAULT: %s at step %lld\n", c->rank,
            !strcmp(mode, "hang") ? "hanging" : "dying", s);
    fflush(stderr);
    if (!strcmp(mode, "hang"))
        for (;;)
            pause();
    raise(SIGKILL);
}
