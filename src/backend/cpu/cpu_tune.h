/* Process-level settings the CPU backend's libraries read at load time (see cpu_tune.c). */
#ifndef AUDISTILL_BACKEND_CPU_TUNE_H
#define AUDISTILL_BACKEND_CPU_TUNE_H

/* Call first thing in main(): may re-execute the program once with tuned library settings. */
void ad_cpu_tune_process(char **argv);

#endif
