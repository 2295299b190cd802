/* A minimal test harness: CHECK macros that record failures without stopping, a skip with a
 * one-line reason, and the closing line "N passed, N failed" that ctest's log shows. */
#ifndef AUDISTILL_TESTS_TEST_H
#define AUDISTILL_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static int test_passed, test_failed;
static const char *test_current = "";

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            fprintf(stderr, "%s:%d: [%s] check failed: %s\n", __FILE__, __LINE__, test_current,    \
                    #cond);                                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            fprintf(stderr, "%s:%d: [%s] check failed: %s: ", __FILE__, __LINE__, test_current,    \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* The call must succeed; prints ad_error() otherwise. */
#define CHECK_OK(expr) CHECK_MSG((expr) >= 0, "%s", ad_error())

/* The call must fail and its message must contain `needle`. */
#define CHECK_FAILS_WITH(expr, needle)                                                             \
    do {                                                                                           \
        ad_error_clear();                                                                          \
        int rc_ = (expr);                                                                          \
        CHECK_MSG(rc_ < 0 && strstr(ad_error(), needle) != NULL,                                   \
                  "rc %d, message '%s', expected it to mention '%s'", rc_, ad_error(), needle);    \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %g)", (double)(a),      \
              (double)(b), (double)(tol))

#define RUN(test_fn)                                                                               \
    do {                                                                                           \
        test_current = #test_fn;                                                                   \
        test_fn();                                                                                 \
    } while (0)

/* Skip the whole program with a reason; ctest sees exit code 77 (SKIP_RETURN_CODE). */
#define TEST_SKIP(...)                                                                             \
    do {                                                                                           \
        printf("SKIP: ");                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        exit(77);                                                                                  \
    } while (0)

static inline int test_report(void) {
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}

/* Where the shared reference files live: $AUDISTILL_REF or ../shared/ref beside the repo. */
static inline const char *test_ref_dir(void) {
    const char *env = getenv("AUDISTILL_REF");
    return env ? env : AUDISTILL_REF_DIR;
}

#endif
