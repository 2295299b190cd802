#include "io/h5util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"

void ad_h5_silence(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

hid_t ad_h5_create_extendable(hid_t loc, const char *name, hid_t type, int rank,
                              const hsize_t *chunk) {
    hsize_t dims[2] = {0, rank > 1 ? chunk[1] : 0};
    hsize_t maxdims[2] = {H5S_UNLIMITED, rank > 1 ? chunk[1] : 0};
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t ds = -1;
    if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
        H5Pset_shuffle(dcpl) >= 0 && H5Pset_deflate(dcpl, AD_H5_DEFLATE_LEVEL) >= 0)
        ds = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return ds;
}

int ad_h5_append_rows(hid_t ds, hid_t memtype, int64_t start, int64_t rows, hsize_t cols,
                      const void *data, const char *what) {
    if (rows == 0) return AD_OK;
    int rank = cols ? 2 : 1;
    hsize_t size[2] = {(hsize_t)(start + rows), cols};
    hsize_t offset[2] = {(hsize_t)start, 0}, count[2] = {(hsize_t)rows, cols};
    int rc = AD_ERR;
    hid_t fspace = -1, mspace = -1;
    if (H5Dset_extent(ds, size) < 0) goto done;
    fspace = H5Dget_space(ds);
    mspace = H5Screate_simple(rank, count, NULL);
    if (fspace < 0 || mspace < 0 ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, offset, NULL, count, NULL) < 0 ||
        H5Dwrite(ds, memtype, mspace, fspace, H5P_DEFAULT, data) < 0)
        goto done;
    rc = AD_OK;
done:
    if (fspace >= 0) H5Sclose(fspace);
    if (mspace >= 0) H5Sclose(mspace);
    if (rc < 0) ad_fail("HDF5: cannot append %lld rows to %s", (long long)rows, what);
    return rc;
}

int ad_h5_write_string_attr(hid_t loc, const char *name, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = attr >= 0 && H5Awrite(attr, type, &value) >= 0 ? AD_OK : AD_ERR;
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    return rc < 0 ? ad_fail("HDF5: cannot write attribute %s", name) : AD_OK;
}

int ad_h5_write_int_attr(hid_t loc, const char *name, int64_t value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = attr >= 0 && H5Awrite(attr, H5T_NATIVE_INT64, &value) >= 0 ? AD_OK : AD_ERR;
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    return rc < 0 ? ad_fail("HDF5: cannot write attribute %s", name) : AD_OK;
}

int ad_h5_write_array(hid_t loc, const char *name, hid_t filetype, hid_t memtype, int64_t n,
                      const void *data) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = H5Screate_simple(1, dims, NULL);
    hid_t ds = H5Dcreate2(loc, name, filetype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds >= 0 && (n == 0 || H5Dwrite(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0)
                 ? AD_OK
                 : AD_ERR;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
    return rc < 0 ? ad_fail("HDF5: cannot write dataset %s", name) : AD_OK;
}

int ad_h5_write_strings(hid_t loc, const char *name, char **strings, int n) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    int rc = ad_h5_write_array(loc, name, type, type, n, strings);
    H5Tclose(type);
    return rc;
}

hid_t ad_h5_make_group(hid_t loc, const char *name) {
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) ad_fail("HDF5: cannot create group %s", name);
    return g;
}

hid_t ad_h5_create_temp(const char *path, char **final_path, char **temp_path) {
    const size_t n = strlen(path) + 32;
    *final_path = ad_strdup(path, "path");
    *temp_path = ad_malloc(n, "path");
    if (!*final_path || !*temp_path) return -1;
    snprintf(*temp_path, n, "%s.tmp.%ld", path, (long)getpid());
    hid_t file = H5Fcreate(*temp_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) ad_fail("cannot create HDF5 file %s", *temp_path);
    return file;
}

int ad_h5_read_1d(hid_t loc, const char *path, const char *name, hid_t memtype, size_t elem,
                  int64_t expect, void **out, int64_t *count) {
    *out = NULL;
    int rank;
    int64_t dims[2];
    AD_TRY(ad_h5_dims(loc, path, name, &rank, dims));
    if (rank != 1) return ad_fail("%s: /%s is not a 1-D dataset", path, name);
    if (expect >= 0 && dims[0] != expect)
        return ad_fail("%s: /%s has %lld entries, expected %lld", path, name, (long long)dims[0],
                       (long long)expect);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return ad_fail("%s: cannot open dataset /%s (file damaged?)", path, name);
    *out = ad_malloc(elem * (size_t)(dims[0] ? dims[0] : 1), name);
    int rc = *out ? AD_OK : AD_ERR;
    if (rc == AD_OK && dims[0] && H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0) {
        free(*out);
        *out = NULL;
        rc = ad_fail("%s: cannot read /%s (file damaged?)", path, name);
    }
    H5Dclose(ds);
    if (rc == AD_OK && count) *count = dims[0];
    return rc;
}

int ad_h5_read_rows(hid_t ds, hid_t memtype, int64_t start, int64_t rows, hsize_t cols, void *out,
                    const char *path, const char *what) {
    if (rows == 0) return AD_OK;
    int rank = cols ? 2 : 1;
    hsize_t offset[2] = {(hsize_t)start, 0}, count[2] = {(hsize_t)rows, cols};
    hid_t fspace = H5Dget_space(ds);
    hid_t mspace = H5Screate_simple(rank, count, NULL);
    int rc = fspace >= 0 && mspace >= 0 &&
                     H5Sselect_hyperslab(fspace, H5S_SELECT_SET, offset, NULL, count, NULL) >= 0 &&
                     H5Dread(ds, memtype, mspace, fspace, H5P_DEFAULT, out) >= 0
                 ? AD_OK
                 : AD_ERR;
    if (fspace >= 0) H5Sclose(fspace);
    if (mspace >= 0) H5Sclose(mspace);
    return rc < 0 ? ad_fail("%s: cannot read %s (file damaged?)", path, what) : AD_OK;
}

int ad_h5_read_int_attr(hid_t loc, const char *path, const char *name, int64_t *out) {
    if (H5Aexists(loc, name) <= 0) return ad_fail("%s: attribute '%s' is missing", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    int rc = a >= 0 && H5Aread(a, H5T_NATIVE_INT64, out) >= 0 ? AD_OK : AD_ERR;
    if (a >= 0) H5Aclose(a);
    return rc < 0 ? ad_fail("%s: cannot read attribute '%s'", path, name) : AD_OK;
}

int ad_h5_read_string_attr(hid_t loc, const char *name, char *buf, size_t size) {
    buf[0] = '\0';
    if (H5Aexists(loc, name) <= 0) return AD_ERR;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    char *value = NULL;
    int rc = a >= 0 && H5Aread(a, type, &value) >= 0 ? AD_OK : AD_ERR;
    if (rc == AD_OK && value) {
        snprintf(buf, size, "%s", value);
        H5free_memory(value);
    }
    H5Tclose(type);
    if (a >= 0) H5Aclose(a);
    return rc;
}

int ad_h5_dims(hid_t loc, const char *path, const char *name, int *rank, int64_t dims[2]) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return ad_fail("%s: dataset /%s is missing", path, name);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return ad_fail("%s: cannot open dataset /%s (file damaged?)", path, name);
    hid_t space = H5Dget_space(ds);
    hsize_t d[2] = {0, 0};
    int r = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (r >= 1 && r <= 2) H5Sget_simple_extent_dims(space, d, NULL);
    if (space >= 0) H5Sclose(space);
    H5Dclose(ds);
    if (r < 1 || r > 2) return ad_fail("%s: /%s has an unexpected rank %d", path, name, r);
    *rank = r;
    dims[0] = (int64_t)d[0], dims[1] = (int64_t)d[1];
    return AD_OK;
}
