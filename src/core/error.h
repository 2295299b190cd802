/* Errors as values. A fallible function returns a negative int (or NULL) and records one
 * message in a thread-local buffer with ad_fail(); callers either add context with
 * ad_fail_context() and pass the failure up, or report it (the CLI does, once).
 * This module never prints and never exits: deciding that is the caller's business. */
#ifndef AUDISTILL_CORE_ERROR_H
#define AUDISTILL_CORE_ERROR_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define AD_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#define AD_NODISCARD                __attribute__((warn_unused_result))
#else
#define AD_PRINTF(fmt_idx, arg_idx)
#define AD_NODISCARD
#endif

enum { AD_OK = 0, AD_ERR = -1 };

/* Record a message (replacing any earlier one) and return AD_ERR. */
int ad_fail(const char *fmt, ...) AD_PRINTF(1, 2);
/* Prefix the recorded message with context ("loading x.safetensors: <old message>"). */
int ad_fail_context(const char *fmt, ...) AD_PRINTF(1, 2);
/* The last recorded message ("" when none). */
const char *ad_error(void);
void ad_error_clear(void);

/* Propagate a failure: AD_TRY(f(x)); returns AD_ERR from the enclosing function. */
#define AD_TRY(expr)                                                                               \
    do {                                                                                           \
        if ((expr) < 0) return AD_ERR;                                                             \
    } while (0)

/* Checked allocation: on failure records "out of memory allocating N bytes for WHAT". */
void *ad_malloc(size_t bytes, const char *what) AD_NODISCARD;
void *ad_calloc(size_t count, size_t size, const char *what) AD_NODISCARD;
void *ad_realloc(void *ptr, size_t bytes, const char *what) AD_NODISCARD;
char *ad_strdup(const char *s, const char *what) AD_NODISCARD;
/* Checked fopen: on failure records "cannot open PATH for MODE: strerror". */
FILE *ad_fopen(const char *path, const char *mode) AD_NODISCARD;

/* Multiplication of sizes that fails instead of wrapping. Returns 0 on success. */
int ad_mul_overflows(size_t a, size_t b, size_t *out);

#ifdef __cplusplus
}
#endif

#endif
