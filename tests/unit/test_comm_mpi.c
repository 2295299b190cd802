/* The MPI communicator's collectives against results formed here from every rank's inputs
 * (each rank regenerates the others' seeded data): sums must equal the rank-order double sum
 * rounded once, bit for bit, including across staging rounds (AUDISTILL_MPI_ROUND=5 makes
 * rounds of 5 elements per rank) and with the aliased buffers the interface allows. Run
 * alone, the program starts itself under `mpirun -np 3`; it skips (77) when this build has no
 * MPI or mpirun is missing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "dist/comm.h"
#include "test.h"

#ifdef AUDISTILL_HAVE_MPI

static ad_comm *comm;

static void fill(float *x, int64_t n, uint64_t seed, int rank) {
    ad_rng rng;
    ad_rng_init(&rng, seed, (uint64_t)rank);
    for (int64_t i = 0; i < n; i++)
        x[i] = ad_rng_normal(&rng) * (float)(1 + rank);
}

static void test_allreduce(void) {
    const int W = comm->world, R = comm->rank;
    const int64_t sizes[] = {0, 1, 5, 16, 1001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int64_t n = sizes[s];
        float *x = malloc(sizeof(float) * (size_t)(n + 1)),
              *mean = malloc(sizeof(float) * (size_t)(n + 1)),
              *other = malloc(sizeof(float) * (size_t)(n + 1)),
              *want = calloc((size_t)n + 1, sizeof(float));
        double *acc = calloc((size_t)n + 1, sizeof(double)),
               *x64 = malloc(sizeof(double) * (size_t)(n + 1));
        fill(x, n, 100 + (uint64_t)n, R);
        memcpy(mean, x, sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            x64[i] = (double)x[i] / 3.0;
        for (int q = 0; q < W; q++) {
            fill(other, n, 100 + (uint64_t)n, q);
            for (int64_t i = 0; i < n; i++)
                acc[i] += other[i];
        }
        for (int64_t i = 0; i < n; i++)
            want[i] = (float)acc[i];
        CHECK_OK(comm->allreduce_sum(comm, x, n));
        CHECK_MSG(!memcmp(x, want, sizeof(float) * (size_t)n), "allreduce of %lld floats",
                  (long long)n);
        CHECK_OK(comm->allreduce_mean(comm, mean, n));
        int bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += mean[i] != want[i] * (float)(1.0 / W);
        CHECK_MSG(!bad, "mean of %lld floats: %d differ", (long long)n, bad);
        /* doubles: the rank-order sum of x/3 */
        for (int64_t i = 0; i < n; i++)
            acc[i] = 0;
        for (int q = 0; q < W; q++) {
            fill(other, n, 100 + (uint64_t)n, q);
            for (int64_t i = 0; i < n; i++)
                acc[i] += (double)other[i] / 3.0;
        }
        CHECK_OK(comm->allreduce_sum_f64(comm, x64, n));
        CHECK_MSG(!memcmp(x64, acc, sizeof(double) * (size_t)n), "allreduce of %lld doubles",
                  (long long)n);
        free(x), free(mean), free(other), free(want), free(acc), free(x64);
    }
}

static void test_reduce_scatter_all_gather(void) {
    const int W = comm->world, R = comm->rank;
    const int64_t sizes[] = {1, 7, 12};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int64_t n = sizes[s], all = W * n;
        float *send = malloc(sizeof(float) * (size_t)all),
              *other = malloc(sizeof(float) * (size_t)all);
        float *recv = malloc(sizeof(float) * (size_t)n);
        fill(send, all, 7 + (uint64_t)n, R);
        double *acc = calloc((size_t)n, sizeof(double));
        for (int q = 0; q < W; q++) {
            fill(other, all, 7 + (uint64_t)n, q);
            for (int64_t i = 0; i < n; i++)
                acc[i] += other[R * n + i];
        }
        CHECK_OK(comm->reduce_scatter_sum(comm, send, recv, n));
        int bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += recv[i] != (float)acc[i];
        CHECK_MSG(!bad, "reduce-scatter of %lld per rank: %d differ", (long long)n, bad);
        /* in place: the result lands in this rank's block of send */
        CHECK_OK(comm->reduce_scatter_sum(comm, send, send + R * n, n));
        CHECK_MSG(!memcmp(send + R * n, recv, sizeof(float) * (size_t)n),
                  "aliased reduce-scatter of %lld", (long long)n);

        /* all-gather, separate and in place */
        float *mine = malloc(sizeof(float) * (size_t)n), *out = malloc(sizeof(float) * (size_t)all);
        fill(mine, n, 55 + (uint64_t)n, R);
        CHECK_OK(comm->all_gather(comm, mine, out, n));
        bad = 0;
        for (int q = 0; q < W; q++) {
            fill(other, n, 55 + (uint64_t)n, q);
            bad += memcmp(out + q * n, other, sizeof(float) * (size_t)n) != 0;
        }
        CHECK_MSG(!bad, "all-gather of %lld: %d blocks differ", (long long)n, bad);
        memset(out, 0, sizeof(float) * (size_t)all);
        memcpy(out + R * n, mine, sizeof(float) * (size_t)n);
        CHECK_OK(comm->all_gather(comm, out + R * n, out, n));
        bad = 0;
        for (int q = 0; q < W; q++) {
            fill(other, n, 55 + (uint64_t)n, q);
            bad += memcmp(out + q * n, other, sizeof(float) * (size_t)n) != 0;
        }
        CHECK_MSG(!bad, "aliased all-gather of %lld: %d blocks differ", (long long)n, bad);
        free(send), free(other), free(recv), free(acc), free(mine), free(out);
    }
}

static void test_broadcast_barrier(void) {
    const int W = comm->world, R = comm->rank;
    char msg[37];
    memset(msg, R == W - 1 ? 'x' : 'o', sizeof msg);
    CHECK_OK(comm->broadcast(comm, msg, sizeof msg, W - 1));
    int bad = 0;
    for (size_t i = 0; i < sizeof msg; i++)
        bad += msg[i] != 'x';
    CHECK(!bad);
    CHECK_OK(comm->barrier(comm));
    /* misuse is refused before any communication (every rank refuses alike) */
    CHECK_FAILS_WITH(comm->broadcast(comm, msg, 1, W), "broadcast from rank");
    CHECK_FAILS_WITH(comm->allreduce_sum(comm, (float *)msg, -1), "negative count");
}

int main(int argc, char **argv) {
    (void)argc;
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE")) {
        setenv("AUDISTILL_MPI_ROUND", "5", 1);
        /* sanitizer builds: Open MPI's plugins keep allocations for the life of the process */
        setenv("LSAN_OPTIONS", "detect_leaks=0", 0);
        char *args[] = {"mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "3", argv[0],
                        NULL};
        execvp("mpirun", args);
        TEST_SKIP("mpirun is not installed (%s)", strerror(errno));
    }
    CHECK_OK(ad_comm_create(&comm));
    if (!comm) return 1;
    CHECK(!strcmp(comm->name, "mpi") && comm->world == 3);
    RUN(test_allreduce);
    RUN(test_reduce_scatter_all_gather);
    RUN(test_broadcast_barrier);
    comm->destroy(comm);
    return test_report();
}

#else

int main(void) {
    (void)test_current;
    TEST_SKIP("this build has no MPI");
}

#endif
