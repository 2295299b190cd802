/* The communicator: every place where ranks must agree goes through this table (gradient
 * averaging, broadcasts of the initial weights and of resume decisions, barriers around
 * checkpoints, ZeRO-1 reduce-scatter/all-gather of optimizer shards, abort on a failing rank).
 * This module owns the interface, rank discovery from the launcher's environment, and the
 * single-process implementation (identity operations). MPI (CPU) and NCCL (GPU)
 * implementations fill the same table, so the trainer never changes.
 *
 * Contract for every implementation: operations are collective (all ranks call them in the
 * same order with the same sizes), in place where a single buffer is given, and
 * deterministic: a sum over ranks is computed in rank order (or in any fixed order that does
 * not depend on timing), so the same inputs give the same bits on every run. Failures return
 * AD_ERR with a message naming the operation and the rank. */
#ifndef AUDISTILL_DIST_COMM_H
#define AUDISTILL_DIST_COMM_H

#include <stdint.h>

typedef struct ad_comm ad_comm;

struct ad_comm {
    const char *name; /* "single process", "mpi", "nccl" */
    int rank, world, local_rank;
    /* buf[i] = sum over ranks of buf[i] (float and double). */
    int (*allreduce_sum)(ad_comm *c, float *buf, int64_t n);
    int (*allreduce_sum_f64)(ad_comm *c, double *buf, int64_t n);
    /* buf[i] = mean over ranks of buf[i]: the sum, then multiplied by (float)(1/world). */
    int (*allreduce_mean)(ad_comm *c, float *buf, int64_t n);
    /* bytes from rank `root` into buf on every rank. */
    int (*broadcast)(ad_comm *c, void *buf, int64_t bytes, int root);
    /* send holds world * n floats; rank r receives in recv[0..n) the sum over ranks of
     * send[r*n .. r*n+n) (ZeRO-1: each rank owns one shard of the gradients). recv may alias
     * send + rank * n. */
    int (*reduce_scatter_sum)(ad_comm *c, const float *send, float *recv, int64_t n);
    /* send holds n floats; recv (world * n) receives every rank's send in rank order. send may
     * alias recv + rank * n (ZeRO-1: the updated parameter shards back to everyone). */
    int (*all_gather)(ad_comm *c, const float *send, float *recv, int64_t n);
    int (*barrier)(ad_comm *c);
    /* Ends every rank of the job (a failing rank must not leave the others waiting forever in
     * a collective). Does not return. */
    void (*abort)(ad_comm *c, int exit_code);
    void (*destroy)(ad_comm *c);
};

typedef struct {
    int rank, world, local_rank;
    const char *source; /* which launcher said so: "Open MPI", "PMI", "Slurm", "single process" */
} ad_rank_info;

/* Where this process sits in the job, from the launcher's environment, first match wins:
 *   Open MPI: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
 *   PMI (MPICH, Intel MPI): PMI_RANK, PMI_SIZE, MPI_LOCALRANKID
 *   Slurm (srun): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
 * none of them: rank 0 of 1. Rank and size must come together and satisfy 0 <= rank < size; a
 * missing local rank means one node (local rank = rank). Malformed values are an error naming
 * the variable. Also sets the log's rank (ad_log_set_rank), so only rank 0 prints. */
int ad_discover_ranks(ad_rank_info *info);

/* The single-process communicator: rank 0 of 1, every operation the identity (a sum or mean
 * over one rank is the value itself; reduce-scatter and all-gather copy). Warns when the
 * environment says the job has more ranks: each would then train alone and write the same
 * run directory. */
int ad_comm_single(ad_comm **out);

/* The MPI communicator (CPU buffers), when built with MPI (AUDISTILL_HAVE_MPI): initializes
 * MPI unless the caller did (then the caller finalizes), checks that MPI's world matches
 * ad_discover_ranks, and makes every collective deterministic: sums are formed by the owner
 * of each slice from every rank's values in rank order (in double), whatever algorithm MPI
 * picks. A watchdog ends the whole job when one collective waits longer than
 * AUDISTILL_COMM_TIMEOUT seconds (default 1800): a rank that hangs or died unnoticed never
 * leaves the others waiting forever. Without MPI it fails with a message saying so. */
int ad_comm_mpi(ad_comm **out);

/* The NCCL communicator (device buffers: every pointer given to it is CUDA memory on GPU
 * local_rank), when built with CUDA and NCCL (AUDISTILL_HAVE_NCCL). The NCCL unique id made by
 * rank 0 reaches the others through `bootstrap` (e.g. the MPI communicator) when it is not
 * NULL, else through the file `id_file` on a filesystem every rank sees (Slurm installations
 * without PMIx): rank 0 writes it atomically, the others wait for it (AUDISTILL_COMM_TIMEOUT).
 * Sums are NCCL's: deterministic for a fixed topology and NCCL version, not across them. abort
 * and barrier go through bootstrap when given. Without NCCL it fails with a message saying so. */
int ad_comm_nccl(ad_comm *bootstrap, const char *id_file, ad_comm **out);

/* The communicator the launcher's environment asks for: one rank = single process, more =
 * MPI (an error naming the launcher when this build has no MPI, rather than N processes each
 * training alone into the same run directory). */
int ad_comm_create(ad_comm **out);

/* Seconds a collective may wait before the job is ended (AUDISTILL_COMM_TIMEOUT, default
 * 1800; a malformed value is an error). */
int ad_comm_timeout(double *seconds);

#endif
