/* The .npy files the features command writes: headers byte-identical to numpy.save's
 * (fixtures saved by numpy), round trips for each dtype, and clear refusals of files that
 * are not what they claim. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "io/file.h"
#include "io/npy.h"
#include "test.h"

static char a_path[1024], b_path[1024];

static void fixture(const char *name) {
    snprintf(a_path, sizeof a_path, "%s/audio/%s", AUDISTILL_FIXTURES, name);
}

static void out(const char *name) {
    snprintf(b_path, sizeof b_path, "%s/npy_%ld_%s", AUDISTILL_TEST_TMP, (long)getpid(), name);
}

/* Our writer reproduces numpy's file exactly; our reader returns numpy's values. */
static void same_as_numpy(const char *name, ad_npy_dtype dtype, const int64_t *shape, int ndim,
                          const void *values, size_t bytes) {
    fixture(name);
    ad_npy a;
    CHECK_OK(ad_npy_read(a_path, &a));
    CHECK(a.dtype == dtype && a.ndim == ndim);
    for (int i = 0; i < ndim && i < a.ndim; i++)
        CHECK(a.shape[i] == shape[i]);
    CHECK(a.data && memcmp(a.data, values, bytes) == 0);
    ad_npy_free(&a);
    out(name);
    CHECK_OK(ad_npy_write(b_path, dtype, shape, ndim, values));
    char *x, *y;
    size_t nx, ny;
    CHECK_OK(ad_read_file(a_path, 1 << 20, &x, &nx));
    CHECK_OK(ad_read_file(b_path, 1 << 20, &y, &ny));
    CHECK_MSG(nx == ny && memcmp(x, y, nx) == 0, "%s differs from numpy's file", name);
    free(x);
    free(y);
    unlink(b_path);
}

static void test_numpy_files(void) {
    float f[6];
    for (int i = 0; i < 6; i++)
        f[i] = (float)i / 7.0f;
    same_as_numpy("npy_numpy_f4.npy", AD_NPY_F4, (int64_t[]){2, 3}, 2, f, sizeof f);
    int32_t i4 = -123456;
    same_as_numpy("npy_numpy_i4.npy", AD_NPY_I4, NULL, 0, &i4, sizeof i4);
    int64_t i8[5] = {1, -2, (int64_t)3 << 40, -((int64_t)5 << 33), 0};
    same_as_numpy("npy_numpy_i8.npy", AD_NPY_I8, (int64_t[]){5}, 1, i8, sizeof i8);
}

static void test_round_trip_and_errors(void) {
    /* A large first axis and a 3-d shape; empty arrays too. */
    static int32_t v[3 * 1000 * 2];
    for (int i = 0; i < 6000; i++)
        v[i] = i * 7 - 3000;
    out("rt.npy");
    int64_t shape[3] = {3, 1000, 2};
    CHECK_OK(ad_npy_write(b_path, AD_NPY_I4, shape, 3, v));
    ad_npy a;
    CHECK_OK(ad_npy_read(b_path, &a));
    CHECK(a.ndim == 3 && a.count == 6000 && memcmp(a.data, v, sizeof v) == 0);
    ad_npy_free(&a);
    int64_t empty_shape[2] = {128, 0};
    CHECK_OK(ad_npy_write(b_path, AD_NPY_F4, empty_shape, 2, v));
    CHECK_OK(ad_npy_read(b_path, &a));
    CHECK(a.ndim == 2 && a.count == 0 && a.shape[0] == 128);
    ad_npy_free(&a);

    /* Truncated data, wrong magic, unsupported dtype and Fortran order are refused. */
    CHECK_OK(ad_npy_write(b_path, AD_NPY_I4, shape, 3, v));
    char *bytes;
    size_t n;
    CHECK_OK(ad_read_file(b_path, 1 << 20, &bytes, &n));
    CHECK_OK(ad_write_file_atomic(b_path, bytes, n - 4));
    CHECK_FAILS_WITH(ad_npy_read(b_path, &a), "rt.npy");
    CHECK_FAILS_WITH(ad_npy_read(b_path, &a), "needs 24000");
    bytes[0] = 'X';
    CHECK_OK(ad_write_file_atomic(b_path, bytes, n));
    CHECK_FAILS_WITH(ad_npy_read(b_path, &a), "not a .npy file");
    bytes[0] = '\x93';
    memcpy(strstr(bytes + 10, "<i4"), "<f8", 3);
    CHECK_OK(ad_write_file_atomic(b_path, bytes, n));
    CHECK_FAILS_WITH(ad_npy_read(b_path, &a), "unsupported .npy dtype");
    memcpy(strstr(bytes + 10, "<f8"), "<i4", 3);
    memcpy(strstr(bytes + 10, "False"), "True ", 5);
    CHECK_OK(ad_write_file_atomic(b_path, bytes, n));
    CHECK_FAILS_WITH(ad_npy_read(b_path, &a), "C-order");
    free(bytes);
    CHECK_FAILS_WITH(ad_npy_read(AUDISTILL_TEST_TMP "/no_such.npy", &a), "no_such.npy");
    unlink(b_path);
}

int main(void) {
    RUN(test_numpy_files);
    RUN(test_round_trip_and_errors);
    return test_report();
}
