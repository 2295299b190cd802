/* Rank discovery and the single-process communicator; see comm.h. */
#include "dist/comm.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"

/* 1 when set to a non-negative integer, 0 when unset or empty, AD_ERR when malformed. */
static int env_int(const char *name, int *out) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    const long x = strtol(v, &end, 10);
    if (*end || end == v || errno || x < 0 || x > (1L << 24))
        return ad_fail("%s='%s' is not a rank number (a non-negative integer)", name, v);
    *out = (int)x;
    return 1;
}

int ad_discover_ranks(ad_rank_info *info) {
    static const struct {
        const char *rank, *world, *local, *source;
    } schemes[] = {
        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI"},
        {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "PMI"},
        {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "Slurm"},
    };
    *info = (ad_rank_info){0, 1, 0, "single process"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        int r = 0, w = 1, l = 0;
        const int has_r = env_int(schemes[i].rank, &r);
        if (has_r < 0) return AD_ERR;
        const int has_w = env_int(schemes[i].world, &w);
        if (has_w < 0) return AD_ERR;
        if (!has_r && !has_w) continue;
        if (has_r != has_w)
            return ad_fail("%s is set but %s is not: cannot tell this process's rank",
                           has_r ? schemes[i].rank : schemes[i].world,
                           has_r ? schemes[i].world : schemes[i].rank);
        if (w < 1 || r >= w)
            return ad_fail("%s=%d is not below %s=%d", schemes[i].rank, r, schemes[i].world, w);
        const int has_l = env_int(schemes[i].local, &l);
        if (has_l < 0) return AD_ERR;
        if (!has_l) l = r; /* one node */
        if (l > r) return ad_fail("%s=%d exceeds %s=%d", schemes[i].local, l, schemes[i].rank, r);
        *info = (ad_rank_info){r, w, l, schemes[i].source};
        break;
    }
    ad_log_set_rank(info->rank, info->world);
    return AD_OK;
}

/* ---- single process ------------------------------------------------------------------------ */

static int single_allreduce(ad_comm *c, float *buf, int64_t n) {
    (void)c, (void)buf;
    return n >= 0 ? AD_OK : ad_fail("allreduce: negative count %lld", (long long)n);
}

static int single_allreduce_f64(ad_comm *c, double *buf, int64_t n) {
    (void)c, (void)buf;
    return n >= 0 ? AD_OK : ad_fail("allreduce: negative count %lld", (long long)n);
}

static int single_broadcast(ad_comm *c, void *buf, int64_t bytes, int root) {
    (void)c, (void)buf;
    if (bytes < 0) return ad_fail("broadcast: negative size %lld", (long long)bytes);
    return root == 0 ? AD_OK : ad_fail("broadcast from rank %d in a single process", root);
}

static int single_reduce_scatter(ad_comm *c, const float *send, float *recv, int64_t n) {
    (void)c;
    if (n < 0) return ad_fail("reduce-scatter: negative count %lld", (long long)n);
    if (n && send != recv) memmove(recv, send, sizeof(float) * (size_t)n);
    return AD_OK;
}

static int single_all_gather(ad_comm *c, const float *send, float *recv, int64_t n) {
    (void)c;
    if (n < 0) return ad_fail("all-gather: negative count %lld", (long long)n);
    if (n && send != recv) memmove(recv, send, sizeof(float) * (size_t)n);
    return AD_OK;
}

static int single_barrier(ad_comm *c) {
    (void)c;
    return AD_OK;
}

static void single_abort(ad_comm *c, int exit_code) {
    (void)c;
    exit(exit_code ? exit_code : 1);
}

static void single_destroy(ad_comm *c) {
    free(c);
}

int ad_comm_single(ad_comm **out) {
    *out = NULL;
    ad_rank_info info;
    if (ad_discover_ranks(&info) < 0)
        ad_warn("%s (ignored: running as a single process)", ad_error());
    else if (info.world > 1)
        ad_warn("%s says this job has %d ranks, but this build runs each process alone (single "
                "process communicator): launch one process",
                info.source, info.world);
    ad_comm *c = ad_calloc(1, sizeof *c, "communicator");
    if (!c) return AD_ERR;
    *c = (ad_comm){.name = "single process",
                   .rank = 0,
                   .world = 1,
                   .local_rank = 0,
                   .allreduce_sum = single_allreduce,
                   .allreduce_sum_f64 = single_allreduce_f64,
                   .allreduce_mean = single_allreduce,
                   .broadcast = single_broadcast,
                   .reduce_scatter_sum = single_reduce_scatter,
                   .all_gather = single_all_gather,
                   .barrier = single_barrier,
                   .abort = single_abort,
                   .destroy = single_destroy};
    ad_log_set_rank(0, 1);
    ad_error_clear();
    *out = c;
    return AD_OK;
}

/* ---- choosing one -------------------------------------------------------------------------- */

int ad_comm_timeout(double *seconds) {
    *seconds = 1800;
    const char *v = getenv("AUDISTILL_COMM_TIMEOUT");
    if (!v || !*v) return AD_OK;
    char *end;
    errno = 0;
    const double x = strtod(v, &end);
    if (*end || end == v || errno || !(x > 0) || x > 1e7)
        return ad_fail("AUDISTILL_COMM_TIMEOUT='%s' is not a number of seconds (> 0)", v);
    *seconds = x;
    return AD_OK;
}

int ad_comm_create(ad_comm **out) {
    *out = NULL;
    ad_rank_info info;
    AD_TRY(ad_discover_ranks(&info));
    if (info.world == 1) return ad_comm_single(out);
#ifdef AUDISTILL_HAVE_MPI
    return ad_comm_mpi(out);
#else
    return ad_fail("%s says this job has %d ranks, but this audistill was built without MPI "
                   "(install libopenmpi-dev and rebuild): each rank would train alone into the "
                   "same run directory",
                   info.source, info.world);
#endif
}
