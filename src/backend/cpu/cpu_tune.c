#include "backend/cpu/cpu_tune.h"

#include <cblas.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Debian 12's OpenBLAS (0.3.21) does not recognise recent AVX-512 Xeons and falls back to
 * its SSE3 "Prescott" kernels, several times slower; and idle libgomp and OpenBLAS workers
 * spin against each other. Both libraries read their settings from the environment when they
 * load, before main, so the only fix from inside is to run ourselves again with the settings
 * made. Nothing the user has set is overridden; AUDISTILL_NO_TUNE=1 disables this. */
void ad_cpu_tune_process(char **argv) {
    if (getenv("AUDISTILL_NO_TUNE")) return;
    bool again = false;
    if (!getenv("OPENBLAS_CORETYPE") && strcmp(openblas_get_corename(), "Prescott") == 0 &&
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        again = true;
    }
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        again = true;
    }
    /* OpenBLAS's idle workers spin on sched_yield for 2^28 cycles after every call, taking
     * cores from the OpenMP loops between GEMMs (a quarter of a training step's CPU time went
     * to the kernel); 2^4 puts them to sleep at once, and waking them costs microseconds
     * against GEMMs of milliseconds. */
    if (!getenv("OPENBLAS_THREAD_TIMEOUT") && !getenv("GOTO_THREAD_TIMEOUT")) {
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
        again = true;
    }
    if (!again) return;
    setenv("AUDISTILL_NO_TUNE", "1", 1);
    execv("/proc/self/exe", argv); /* on failure: carry on untuned */
}
