#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define AD_ERROR_CAPACITY 2048

static _Thread_local char error_message[AD_ERROR_CAPACITY];

int ad_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return AD_ERR;
}

int ad_fail_context(const char *fmt, ...) {
    char prefix[AD_ERROR_CAPACITY];
    char old[AD_ERROR_CAPACITY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    snprintf(error_message, sizeof error_message, "%s: %s", prefix, old);
    return AD_ERR;
}

const char *ad_error(void) {
    return error_message;
}

void ad_error_clear(void) {
    error_message[0] = '\0';
}

void *ad_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) ad_fail("out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *ad_calloc(size_t count, size_t size, const char *what) {
    size_t total;
    if (ad_mul_overflows(count, size, &total)) {
        ad_fail("allocation size overflow (%zu x %zu) for %s", count, size, what);
        return NULL;
    }
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) ad_fail("out of memory allocating %zu bytes for %s", total, what);
    return p;
}

void *ad_realloc(void *ptr, size_t bytes, const char *what) {
    void *p = realloc(ptr, bytes ? bytes : 1);
    if (!p) ad_fail("out of memory reallocating %zu bytes for %s", bytes, what);
    return p;
}

char *ad_strdup(const char *s, const char *what) {
    size_t n = strlen(s) + 1;
    char *p = ad_malloc(n, what);
    if (p) memcpy(p, s, n);
    return p;
}

FILE *ad_fopen(const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    if (!f)
        ad_fail("cannot open %s for %s: %s", path, mode[0] == 'r' ? "reading" : "writing",
                strerror(errno));
    return f;
}

int ad_mul_overflows(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > (size_t)-1 / a) return 1;
    *out = a * b;
    return 0;
}
