#include "backend/cpu/cpu_tune.h"

#include <cblas.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Debian 12's OpenBLAS (0.3.21) does not recognise recent AVX-512 Xeons and falls back to
 * its SSE3 "Prescott" kernels, several times slower; and idle libgomp workers spin against
 * OpenBLAS's own threads. Both libraries read their settings from the environment when they
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
    if (!again) return;
    setenv("AUDISTILL_NO_TUNE", "1", 1);
    execv("/proc/self/exe", argv); /* on failure: carry on untuned */
}
