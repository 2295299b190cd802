/* NumPy .npy files: the small subset audistill exchanges with Python tools (feature matrices,
 * test fixtures): little-endian float32 / int32 / int64 arrays in C order, written with a
 * version 1.0 header byte-for-byte as numpy.save writes it, read from version 1.0-3.0.
 * Writes are atomic (temporary name + rename). */
#ifndef AUDISTILL_IO_NPY_H
#define AUDISTILL_IO_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum { AD_NPY_F4 = 0, AD_NPY_I4, AD_NPY_I8 } ad_npy_dtype;

#define AD_NPY_MAX_DIMS 8

typedef struct {
    ad_npy_dtype dtype;
    int ndim;
    int64_t shape[AD_NPY_MAX_DIMS];
    int64_t count; /* product of shape (1 for a 0-d array) */
    void *data;    /* count elements, malloc'ed */
} ad_npy;

size_t ad_npy_dtype_size(ad_npy_dtype dtype);
const char *ad_npy_dtype_descr(ad_npy_dtype dtype); /* "<f4", "<i4", "<i8" */

int ad_npy_write(const char *path, ad_npy_dtype dtype, const int64_t *shape, int ndim,
                 const void *data);
/* Reads a whole array; anything else (other dtypes, Fortran order, a truncated file) fails
 * with a message naming the file. Free with ad_npy_free. */
int ad_npy_read(const char *path, ad_npy *out);
void ad_npy_free(ad_npy *a);

#endif
