/* qsort comparators shared across modules. */
#ifndef AUDISTILL_CORE_COMPARE_H
#define AUDISTILL_CORE_COMPARE_H

/* Ascending doubles (NaN-free input). */
static inline int ad_compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
