/* The NCCL communicator's failure paths, on the emulator's NCCL (two forked processes, each
 * emulating its own card, ranks from Slurm's variables, the unique id through a file):
 * 1. a peer that exits after joining: the survivor's allreduce fails with NCCL's asynchronous
 *    error and a message asking whether another rank died, instead of waiting forever;
 * 2. a host pointer passed as a device buffer: refused on every rank with a message naming the
 *    operation and the rank, as real NCCL would fault;
 * 3. a communicator whose peer aborted (ncclCommAbort after its own failure): the survivor
 *    fails too.
 * Emulator builds only: forked processes share nothing with a real CUDA context. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda_runtime.h>

#include "core/error.h"
#include "dist/comm.h"

enum { DIE_AFTER_INIT, HOST_POINTER, ABORT_AFTER_INIT };

static void become_rank(int rank) {
    char r[8];
    snprintf(r, sizeof r, "%d", rank);
    setenv("SLURM_PROCID", r, 1);
    setenv("SLURM_LOCALID", r, 1);
    setenv("SLURM_NTASKS", "2", 1);
    setenv("AUDISTILL_CUDA_EMU_DEVICES", "2", 1);
    setenv("AUDISTILL_COMM_TIMEOUT", "60", 1);
}

/* One rank of a scenario; returns the process's exit code (0: as expected). */
static int run_rank(int rank, int scenario, const char *id_file) {
    become_rank(rank);
    ad_comm *c = NULL;
    if (ad_comm_nccl(NULL, id_file, &c) < 0) {
        fprintf(stderr, "rank %d: init failed: %s\n", rank, ad_error());
        return 1;
    }
    float *d = NULL;
    if (cudaMalloc((void **)&d, sizeof(float) * 1000) != cudaSuccess ||
        cudaMemset(d, 0, sizeof(float) * 1000) != cudaSuccess)
        return 1;
    const char *want = NULL;
    int rc = 0;
    switch (scenario) {
    case DIE_AFTER_INIT:
        if (rank == 1) _exit(0); /* no destroy: as a crash */
        rc = c->allreduce_sum(c, d, 1000);
        want = "did another rank die?";
        break;
    case HOST_POINTER: {
        float host[16] = {0};
        rc = c->allreduce_sum(c, host, 16);
        want = rank ? "NCCL allreduce failed on rank 1 of 2: invalid argument"
                    : "NCCL allreduce failed on rank 0 of 2: invalid argument";
        break;
    }
    case ABORT_AFTER_INIT:
        if (rank == 1) {
            c->abort(c, 3); /* ncclCommAbort, then _exit(3) */
            return 1;
        }
        rc = c->allreduce_sum(c, d, 1000);
        want = "did another rank die?";
        break;
    }
    if (rc == AD_OK || !strstr(ad_error(), want)) {
        fprintf(stderr, "rank %d: expected a failure with \"%s\", got rc %d: %s\n", rank, want, rc,
                rc == AD_OK ? "(success)" : ad_error());
        return 1;
    }
    fprintf(stderr, "rank %d, as expected: %s\n", rank, ad_error());
    return 0;
}

static int scenario(int which, const char *name) {
    char id_file[256];
    snprintf(id_file, sizeof id_file, "%s/audistill_nccl_faults.%ld.%d",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid(), which);
    pid_t pid[2];
    for (int r = 0; r < 2; r++) {
        pid[r] = fork();
        if (pid[r] < 0) return 1;
        if (pid[r] == 0) {
            alarm(120); /* a hang fails the test instead of blocking ctest */
            _exit(run_rank(r, which, id_file));
        }
    }
    /* Rank 1 first: a peer that exited must be reaped, or it still exists (as a zombie). */
    int status[2], failed = 0;
    for (int r = 1; r >= 0; r--) {
        waitpid(pid[r], &status[r], 0);
        const int code = WIFEXITED(status[r]) ? WEXITSTATUS(status[r]) : 128 + WTERMSIG(status[r]);
        const int expected = which == ABORT_AFTER_INIT && r == 1 ? 3 : 0;
        if (code != expected) {
            fprintf(stderr, "FAIL: %s: rank %d ended with %d, expected %d\n", name, r, code,
                    expected);
            failed = 1;
        }
    }
    unlink(id_file);
    if (!failed) fprintf(stderr, "ok: %s\n", name);
    return failed;
}

int main(void) {
    int failed = 0;
    failed += scenario(DIE_AFTER_INIT, "a peer exits after joining");
    failed += scenario(HOST_POINTER, "a host pointer as a device buffer");
    failed += scenario(ABORT_AFTER_INIT, "a peer aborts its communicator");
    fprintf(stderr, "%d passed, %d failed\n", 3 - failed, failed);
    return failed ? 1 : 0;
}
