/* HDF5 helpers shared by the file formats built on HDF5 (prepared sets, teacher caches):
 * chunked + deflated extendable datasets that grow by appended rows, scalar attributes, whole
 * 1-D arrays and row ranges. Every helper reports failure through ad_fail with the dataset or
 * attribute name; none prints (HDF5's own error stack is silenced by ad_h5_silence). */
#ifndef AUDISTILL_IO_H5UTIL_H
#define AUDISTILL_IO_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#define AD_H5_DEFLATE_LEVEL 4

/* HDF5 prints its own error stack by default; we report through ad_fail instead. */
void ad_h5_silence(void);
/* An empty dataset of rank 1 or 2 (columns chunk[1]) that grows along its first axis;
 * shuffle + deflate. Returns the dataset or a negative id. */
hid_t ad_h5_create_extendable(hid_t loc, const char *name, hid_t type, int rank,
                              const hsize_t *chunk);
/* Appends `rows` rows (cols = 0 for rank 1) at row `start` of an extendable dataset. */
int ad_h5_append_rows(hid_t ds, hid_t memtype, int64_t start, int64_t rows, hsize_t cols,
                      const void *data, const char *what);
int ad_h5_write_string_attr(hid_t loc, const char *name, const char *value);
int ad_h5_write_int_attr(hid_t loc, const char *name, int64_t value);
/* A whole contiguous 1-D dataset of n elements. */
int ad_h5_write_array(hid_t loc, const char *name, hid_t filetype, hid_t memtype, int64_t n,
                      const void *data);
/* A 1-D dataset of n variable-length UTF-8 strings. */
int ad_h5_write_strings(hid_t loc, const char *name, char **strings, int n);
hid_t ad_h5_make_group(hid_t loc, const char *name);
/* Creates the HDF5 file that will become `path`, under a temporary name beside it (publish it
 * with ad_commit_file(*temp_path, *final_path)); both names are new strings the caller frees,
 * also on failure (-1). */
hid_t ad_h5_create_temp(const char *path, char **final_path, char **temp_path);

/* Reads 1-D dataset `name` into a new array (caller frees) of elem-byte elements; expect >= 0
 * requires that many entries. `path` names the file in messages. *count (may be NULL)
 * receives the entry count. */
int ad_h5_read_1d(hid_t loc, const char *path, const char *name, hid_t memtype, size_t elem,
                  int64_t expect, void **out, int64_t *count);
/* Rows start..start+rows of a rank-1 (cols 0) or rank-2 dataset into out. */
int ad_h5_read_rows(hid_t ds, hid_t memtype, int64_t start, int64_t rows, hsize_t cols, void *out,
                    const char *path, const char *what);
int ad_h5_read_int_attr(hid_t loc, const char *path, const char *name, int64_t *out);
/* A string attribute into buf ("" and AD_ERR when absent; no message recorded). */
int ad_h5_read_string_attr(hid_t loc, const char *name, char *buf, size_t size);
/* The dimensions of dataset `name` (rank into *rank, at most 2 dims). */
int ad_h5_dims(hid_t loc, const char *path, const char *name, int *rank, int64_t dims[2]);

#endif
