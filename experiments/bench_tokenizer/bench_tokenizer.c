/* Times audistill's tokenizer on one thread: load, then encode every line of a text file (the
 * fixture escapes \\ \n \r \0 undone), as transformers encodes a batch of lines. Prints the
 * times and an FNV-1a hash of all ids so that the caller can check the ids equal the reference.
 *   bench_tokenizer TOKENIZER_DIR TEXT_FILE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "io/file.h"
#include "text/bpe.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER_DIR TEXT_FILE\n");
        return 2;
    }
    char **lines;
    int n;
    if (ad_read_lines(argv[2], &lines, &n) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    size_t *lens = malloc(sizeof *lens * (size_t)n), bytes = 0;
    for (int i = 0; i < n; i++) {
        size_t w = 0;
        char *s = lines[i];
        for (const char *p = s; *p; p++) {
            if (p[0] == '\\' && p[1]) {
                p++;
                s[w++] = *p == 'n' ? '\n' : *p == 'r' ? '\r' : *p == '0' ? '\0' : *p;
            } else {
                s[w++] = *p;
            }
        }
        lens[i] = w;
        bytes += w;
    }
    double t0 = now();
    ad_tokenizer *t;
    if (ad_tokenizer_load(argv[1], 1, &t) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    double t1 = now();
    unsigned long long hash = 1469598103934665603ull, total = 0;
    for (int i = 0; i < n; i++) {
        int32_t *ids;
        int m;
        if (ad_tokenizer_encode(t, lines[i], lens[i], &ids, &m) < 0) {
            fprintf(stderr, "line %d: %s\n", i + 1, ad_error());
            return 1;
        }
        for (int k = 0; k < m; k++)
            hash = (hash ^ (unsigned long long)(ids[k] + 1)) * 1099511628211ull;
        hash = (hash ^ 0) * 1099511628211ull; /* line end */
        total += (unsigned long long)m;
        free(ids);
    }
    double t2 = now();
    printf("load_s %.4f encode_s %.4f bytes %zu lines %d ids %llu hash %016llx\n", t1 - t0, t2 - t1,
           bytes, n, total, hash);
    ad_tokenizer_free(t);
    ad_free_lines(lines, n);
    free(lens);
    return 0;
}
