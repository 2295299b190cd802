/* What the CUDA emulator's host check pays per kernel launch: one mprotect of the device heap
 * to PROT_NONE and one back to PROT_READ | PROT_WRITE, over MB megabytes of populated memory
 * in 4 KiB pages and in transparent huge pages.
 *
 *   cc -O2 experiments/emulator/mprotect_cost.c -o /tmp/mprotect_cost && /tmp/mprotect_cost 100 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double pair_us(size_t bytes, int advice) {
    const size_t huge = (size_t)2 << 20;
    char *m = mmap(NULL, bytes + huge, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    char *p = (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
    if (madvise(p, bytes, advice) != 0) perror("madvise (continuing)");
    memset(p, 1, bytes);
    struct timespec a, b;
    const int pairs = 100;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < pairs; i++)
        if (mprotect(p, bytes, PROT_NONE) != 0 || mprotect(p, bytes, PROT_READ | PROT_WRITE) != 0) {
            perror("mprotect");
            exit(1);
        }
    clock_gettime(CLOCK_MONOTONIC, &b);
    munmap(m, bytes + huge);
    return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / pairs / 1e3;
}

int main(int argc, char **argv) {
    const long mb = argc > 1 ? atol(argv[1]) : 100;
    if (mb < 1) {
        fprintf(stderr, "usage: mprotect_cost [MB]\n");
        return 2;
    }
    const size_t bytes = (size_t)mb << 20;
    printf("%ld MB, 4 KiB pages:  %.1f us per PROT_NONE / PROT_READ|WRITE pair\n", mb,
           pair_us(bytes, MADV_NOHUGEPAGE));
    printf("%ld MB, huge pages:   %.1f us per pair\n", mb, pair_us(bytes, MADV_HUGEPAGE));
    return 0;
}
