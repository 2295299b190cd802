/* Rank discovery from each launcher's environment (set with setenv here), its errors, the
 * log rank it sets, and the single-process communicator's identity operations. */
#include "core/log.h"
#include "dist/comm.h"
#include "test.h"

static const char *ALL_VARS[] = {"OMPI_COMM_WORLD_RANK",
                                 "OMPI_COMM_WORLD_SIZE",
                                 "OMPI_COMM_WORLD_LOCAL_RANK",
                                 "PMI_RANK",
                                 "PMI_SIZE",
                                 "MPI_LOCALRANKID",
                                 "SLURM_PROCID",
                                 "SLURM_NTASKS",
                                 "SLURM_LOCALID"};

static void clear_env(void) {
    for (size_t i = 0; i < sizeof ALL_VARS / sizeof ALL_VARS[0]; i++)
        unsetenv(ALL_VARS[i]);
}

static void test_none(void) {
    clear_env();
    ad_rank_info r;
    CHECK_OK(ad_discover_ranks(&r));
    CHECK(r.rank == 0 && r.world == 1 && r.local_rank == 0 && !strcmp(r.source, "single process"));
    CHECK(ad_log_rank() == 0);
}

static void test_each_launcher(void) {
    ad_rank_info r;
    clear_env();
    setenv("SLURM_PROCID", "5", 1), setenv("SLURM_NTASKS", "8", 1), setenv("SLURM_LOCALID", "1", 1);
    CHECK_OK(ad_discover_ranks(&r));
    CHECK(r.rank == 5 && r.world == 8 && r.local_rank == 1 && !strcmp(r.source, "Slurm"));
    CHECK(ad_log_rank() == 5);
    /* Open MPI inside a Slurm allocation: mpirun's numbering wins */
    setenv("OMPI_COMM_WORLD_RANK", "2", 1), setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0", 1);
    CHECK_OK(ad_discover_ranks(&r));
    CHECK(r.rank == 2 && r.world == 4 && r.local_rank == 0 && !strcmp(r.source, "Open MPI"));
    CHECK(ad_log_rank() == 2);
    clear_env();
    setenv("PMI_RANK", "3", 1), setenv("PMI_SIZE", "6", 1); /* no local rank: one node */
    CHECK_OK(ad_discover_ranks(&r));
    CHECK(r.rank == 3 && r.world == 6 && r.local_rank == 3 && !strcmp(r.source, "PMI"));
    setenv("MPI_LOCALRANKID", "1", 1);
    CHECK_OK(ad_discover_ranks(&r));
    CHECK(r.local_rank == 1);
    clear_env();
}

static void test_malformed(void) {
    ad_rank_info r;
    clear_env();
    setenv("SLURM_PROCID", "1", 1);
    CHECK_FAILS_WITH(ad_discover_ranks(&r), "SLURM_PROCID is set but SLURM_NTASKS is not");
    setenv("SLURM_NTASKS", "x3", 1);
    CHECK_FAILS_WITH(ad_discover_ranks(&r), "SLURM_NTASKS='x3' is not a rank number");
    setenv("SLURM_NTASKS", "1", 1);
    CHECK_FAILS_WITH(ad_discover_ranks(&r), "SLURM_PROCID=1 is not below SLURM_NTASKS=1");
    clear_env();
    setenv("OMPI_COMM_WORLD_RANK", "-1", 1), setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    CHECK_FAILS_WITH(ad_discover_ranks(&r), "OMPI_COMM_WORLD_RANK='-1'");
    clear_env();
    setenv("PMI_RANK", "0", 1), setenv("PMI_SIZE", "2", 1), setenv("MPI_LOCALRANKID", "", 1);
    CHECK_OK(ad_discover_ranks(&r)); /* empty = unset */
    CHECK(r.local_rank == 0 && r.world == 2);
    clear_env();
}

static void test_single(void) {
    clear_env();
    setenv("SLURM_PROCID", "1", 1), setenv("SLURM_NTASKS", "2", 1); /* warns, still works */
    ad_log_set_level(AD_LOG_ERROR);
    ad_comm *c;
    CHECK_OK(ad_comm_single(&c));
    ad_log_set_level(AD_LOG_INFO);
    clear_env();
    if (!c) return;
    CHECK(c->rank == 0 && c->world == 1 && c->local_rank == 0 && ad_log_rank() == 0);
    float a[5] = {1, -2, 3.5f, 1e30f, 0}, b[5];
    memcpy(b, a, sizeof a);
    double d[2] = {1e300, -3};
    CHECK_OK(c->allreduce_sum(c, a, 5));
    CHECK_OK(c->allreduce_mean(c, a, 5));
    CHECK_OK(c->allreduce_sum_f64(c, d, 2));
    CHECK(!memcmp(a, b, sizeof a) && d[0] == 1e300 && d[1] == -3);
    float r[5] = {0};
    CHECK_OK(c->reduce_scatter_sum(c, a, r, 5));
    CHECK(!memcmp(r, a, sizeof a));
    memset(r, 0, sizeof r);
    CHECK_OK(c->all_gather(c, a, r, 5));
    CHECK(!memcmp(r, a, sizeof a));
    CHECK_OK(c->all_gather(c, r, r, 5)); /* in place */
    CHECK(!memcmp(r, a, sizeof a));
    CHECK_OK(c->broadcast(c, a, sizeof a, 0));
    CHECK_FAILS_WITH(c->broadcast(c, a, sizeof a, 1), "rank 1");
    CHECK_OK(c->barrier(c));
    c->destroy(c);
}

int main(void) {
    RUN(test_none);
    RUN(test_each_launcher);
    RUN(test_malformed);
    RUN(test_single);
    return test_report();
}
