/* The NCCL communicator on device buffers against results formed on the host from every
 * rank's seeded inputs. Alone it runs one rank (the unique id passed through a file, as on a
 * Slurm installation without PMIx); under `mpirun -np N` (N GPUs on the node, or N nodes) it
 * runs N ranks bootstrapped through the MPI communicator, e.g. from tests/gpu/check.sh:
 *   mpirun -np 2 build/tests/test_comm_nccl
 * Sums and means within 1e-6 relative (NCCL's float order is not ours); gather, scatter
 * blocks and broadcast exact. Skips (77) without NCCL or without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "dist/comm.h"
#include "test.h"

#ifdef AUDISTILL_HAVE_NCCL
#include <cuda_runtime.h>

static ad_comm *comm;

static void fill(float *x, int64_t n, uint64_t seed, int rank) {
    ad_rng rng;
    ad_rng_init(&rng, seed, (uint64_t)rank);
    for (int64_t i = 0; i < n; i++)
        x[i] = ad_rng_normal(&rng);
}

static float *to_device(const float *h, int64_t n) {
    float *d = NULL;
    if (cudaMalloc((void **)&d, sizeof(float) * (size_t)(n + 1)) != cudaSuccess) return NULL;
    if (h) cudaMemcpy(d, h, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice);
    return d;
}

static void collectives(int64_t n) {
    const int W = comm->world, R = comm->rank;
    const int64_t all = W * n;
    float *h = malloc(sizeof(float) * (size_t)all), *other = malloc(sizeof(float) * (size_t)all),
          *got = malloc(sizeof(float) * (size_t)all);
    double *want = calloc((size_t)all, sizeof(double));
    fill(h, all, 11, R);
    for (int q = 0; q < W; q++) {
        fill(other, all, 11, q);
        for (int64_t i = 0; i < all; i++)
            want[i] += other[i];
    }
    float *d = to_device(h, all);
    CHECK(d != NULL);
    if (!d) return;
    /* allreduce (sum, then mean from the same inputs) */
    CHECK_OK(comm->allreduce_sum(comm, d, all));
    cudaMemcpy(got, d, sizeof(float) * (size_t)all, cudaMemcpyDeviceToHost);
    double worst = 0;
    for (int64_t i = 0; i < all; i++)
        worst = fmax(worst, fabs(got[i] - want[i]) / fmax(1.0, fabs(want[i])));
    CHECK_MSG(worst <= 1e-6, "allreduce: %.3g", worst);
    cudaMemcpy(d, h, sizeof(float) * (size_t)all, cudaMemcpyHostToDevice);
    CHECK_OK(comm->allreduce_mean(comm, d, all));
    cudaMemcpy(got, d, sizeof(float) * (size_t)all, cudaMemcpyDeviceToHost);
    worst = 0;
    for (int64_t i = 0; i < all; i++)
        worst = fmax(worst, fabs(got[i] - want[i] / W) / fmax(1.0, fabs(want[i] / W)));
    CHECK_MSG(worst <= 1e-6, "mean: %.3g", worst);
    /* reduce-scatter in place: this rank's block of the sums */
    cudaMemcpy(d, h, sizeof(float) * (size_t)all, cudaMemcpyHostToDevice);
    CHECK_OK(comm->reduce_scatter_sum(comm, d, d + R * n, n));
    cudaMemcpy(got, d + R * n, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost);
    worst = 0;
    for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(got[i] - want[R * n + i]) / fmax(1.0, fabs(want[R * n + i])));
    CHECK_MSG(worst <= 1e-6, "reduce-scatter: %.3g", worst);
    /* all-gather in place: every rank's first n inputs, exactly */
    cudaMemcpy(d + R * n, h, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice);
    CHECK_OK(comm->all_gather(comm, d + R * n, d, n));
    cudaMemcpy(got, d, sizeof(float) * (size_t)all, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int q = 0; q < W; q++) {
        fill(other, all, 11, q);
        bad += memcmp(got + q * n, other, sizeof(float) * (size_t)n) != 0;
    }
    CHECK_MSG(!bad, "all-gather: %d blocks differ", bad);
    /* broadcast from the last rank */
    cudaMemcpy(d, h, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice);
    CHECK_OK(comm->broadcast(comm, d, (int64_t)sizeof(float) * n, W - 1));
    cudaMemcpy(got, d, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost);
    fill(other, all, 11, W - 1);
    CHECK(!memcmp(got, other, sizeof(float) * (size_t)n));
    CHECK_OK(comm->barrier(comm));
    CHECK_FAILS_WITH(comm->broadcast(comm, d, 4, W), "broadcast from rank");
    cudaFree(d);
    free(h), free(other), free(got), free(want);
}

/* A power of two, and a count that leaves partial chunks and blocks in any staging scheme. */
static void test_collectives(void) {
    collectives(1 << 16);
    collectives(12345);
    collectives(1);
}

int main(void) {
    int gpus = 0;
    if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) TEST_SKIP("no CUDA device");
    ad_comm *boot = NULL;
    char id_file[256] = "";
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE")) {
        CHECK_OK(ad_comm_mpi(&boot));
        if (!boot) return test_report();
    } else {
        snprintf(id_file, sizeof id_file, "/tmp/audistill_nccl_id.%ld", (long)getpid());
    }
    CHECK_OK(ad_comm_nccl(boot, boot ? NULL : id_file, &comm));
    if (comm) {
        CHECK(!strcmp(comm->name, "nccl"));
        RUN(test_collectives);
        comm->destroy(comm);
    }
    if (*id_file) unlink(id_file);
    if (boot) boot->destroy(boot);
    return test_report();
}

#else

int main(void) {
    (void)test_current;
    TEST_SKIP("this build has no NCCL");
}

#endif
