/* safetensors: read (mmap; a single file or a sharded checkpoint with
 * model.safetensors.index.json) and write (atomically). The reader validates the whole header
 * before anything is used: header length within the file, header is a JSON object, dtypes
 * known, shape x dtype size == byte range, every range inside the data section, no overlaps,
 * unique names. It never trusts a number from the file without checking it first. */
#ifndef AUDISTILL_IO_SAFETENSORS_H
#define AUDISTILL_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "io/file.h"

/* Headers above this are refused outright (the real 7B checkpoint's are ~100 KB). */
#define AD_SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)

typedef struct {
    char *name;
    ad_dtype dtype;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
    uint64_t begin, end; /* byte range relative to the shard's data section */
    int shard;
} ad_st_entry;

typedef struct {
    char *key;
    char *value;
} ad_st_metadata;

typedef struct {
    char *source; /* the path the user gave */
    int n_shards;
    ad_mapped_file *shards;
    uint64_t *data_offset; /* per shard: 8 + header length */
    int n_entries;
    ad_st_entry *entries; /* sorted by name */
    int n_metadata;
    ad_st_metadata *metadata; /* of the first shard */
} ad_safetensors;

/* `path` is a .safetensors file, a model.safetensors.index.json, or a directory holding one
 * of those (index preferred). */
int ad_safetensors_open(ad_safetensors *st, const char *path);
void ad_safetensors_close(ad_safetensors *st);
const ad_st_entry *ad_safetensors_find(const ad_safetensors *st, const char *name);
/* A CPU tensor viewing the mapped bytes (valid until close). */
int ad_safetensors_view(const ad_safetensors *st, const ad_st_entry *e, ad_tensor *out);
/* Convert a float tensor to f32 into dst; the shape must equal expected_shape exactly. */
int ad_safetensors_read_f32(const ad_safetensors *st, const char *name, int ndim,
                            const int64_t *expected_shape, float *dst);
const char *ad_safetensors_metadata(const ad_safetensors *st, const char *key);
uint64_t ad_safetensors_file_bytes(const ad_safetensors *st);

/* Parse and validate one file's header (exposed for tests and the fuzzer). `header` need not be
 * NUL-terminated. Entries are appended to *entries (realloc'd) with the given shard index. */
int ad_safetensors_parse_header(const char *header, size_t header_len, uint64_t data_size,
                                const char *file_name, int shard, ad_st_entry **entries,
                                int *n_entries, ad_st_metadata **metadata, int *n_metadata);
void ad_safetensors_free_entries(ad_st_entry *entries, int n);
void ad_safetensors_free_metadata(ad_st_metadata *metadata, int n);

typedef struct {
    const char *name;
    ad_dtype dtype;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
    const void *data; /* contiguous bytes, ad_dtype_bytes_for(dtype, numel) of them */
} ad_st_write_item;

/* Writes items in the given order; metadata is n_metadata key/value pairs (may be 0). The
 * header is padded with spaces to a multiple of 8 bytes, as the reference writer does. */
int ad_safetensors_write(const char *path, const ad_st_write_item *items, int n_items,
                         const ad_st_metadata *metadata, int n_metadata);

/* ad_safetensors_write with the F32 items stored as `store`: AD_F32 (as they are) or AD_BF16
 * (rounded to nearest even, e.g. a model's final weights at half the bytes). */
int ad_safetensors_write_as(const char *path, const ad_st_write_item *items, int n_items,
                            const ad_st_metadata *metadata, int n_metadata, ad_dtype store);

#endif
