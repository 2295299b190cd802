/* The communicator the trainer calls where ranks must agree: gradient averaging, broadcasts,
 * barriers. This issue ships the single-process implementation; MPI (CPU) and NCCL (GPU) fill
 * the same table, so the trainer never changes. Rank discovery reads the environments that
 * mpirun and srun set. */
#ifndef AUDISTILL_DIST_COMM_H
#define AUDISTILL_DIST_COMM_H

#include <stdint.h>

typedef struct ad_comm ad_comm;

struct ad_comm {
    const char *name;
    int rank, world, local_rank;
    /* In place: buf[i] = mean over ranks of buf[i]. */
    int (*allreduce_mean)(ad_comm *c, float *buf, int64_t n);
    int (*allreduce_sum_f64)(ad_comm *c, double *buf, int64_t n);
    int (*broadcast)(ad_comm *c, void *buf, int64_t bytes, int root);
    int (*barrier)(ad_comm *c);
    void (*destroy)(ad_comm *c);
};

typedef struct {
    int rank, world, local_rank;
    const char *source; /* which environment said so ("single process" when none) */
} ad_rank_info;

/* From OMPI_COMM_WORLD_*, PMI_RANK/PMI_SIZE, or SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID. */
int ad_discover_ranks(ad_rank_info *info);
/* The single-process communicator (identity operations); sets the log rank. */
int ad_comm_single(ad_comm **out);

#endif
