#include "dist/comm.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"

static int env_int(const char *name, int *out) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1 << 24) return -1;
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
        int has_r = env_int(schemes[i].rank, &r), has_w = env_int(schemes[i].world, &w);
        if (has_r < 0 || has_w < 0)
            return ad_fail("%s/%s are not non-negative integers", schemes[i].rank,
                           schemes[i].world);
        if (!has_r && !has_w) continue;
        if (has_r != has_w)
            return ad_fail("%s and %s must be set together", schemes[i].rank, schemes[i].world);
        if (w < 1 || r >= w)
            return ad_fail("%s=%d is not below %s=%d", schemes[i].rank, r, schemes[i].world, w);
        if (env_int(schemes[i].local, &l) <= 0) l = r; /* one node */
        *info = (ad_rank_info){r, w, l, schemes[i].source};
        return AD_OK;
    }
    return AD_OK;
}

static int single_allreduce(ad_comm *c, float *buf, int64_t n) {
    (void)c, (void)buf, (void)n;
    return AD_OK;
}
static int single_allreduce_f64(ad_comm *c, double *buf, int64_t n) {
    (void)c, (void)buf, (void)n;
    return AD_OK;
}
static int single_broadcast(ad_comm *c, void *buf, int64_t bytes, int root) {
    (void)c, (void)buf, (void)bytes;
    return root == 0 ? AD_OK : ad_fail("broadcast from rank %d in a single process", root);
}
static int single_barrier(ad_comm *c) {
    (void)c;
    return AD_OK;
}
static void single_destroy(ad_comm *c) {
    free(c);
}

int ad_comm_single(ad_comm **out) {
    ad_comm *c = ad_calloc(1, sizeof *c, "communicator");
    if (!c) return AD_ERR;
    *c = (ad_comm){"single process",
                   0,
                   1,
                   0,
                   single_allreduce,
                   single_allreduce_f64,
                   single_broadcast,
                   single_barrier,
                   single_destroy};
    ad_log_set_rank(0, 1);
    *out = c;
    return AD_OK;
}
