/* Files: whole-file reads with a size limit, read-only mappings, and atomic writes (write to
 * a temporary name in the same directory, fsync, rename, fsync the directory) so that a
 * reader never sees a half-written output, whatever happens to the writer. */
#ifndef AUDISTILL_IO_FILE_H
#define AUDISTILL_IO_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

/* Reads all of `path` into a NUL-terminated buffer (caller frees). Refuses files larger than
 * max_bytes so a wrong path cannot exhaust memory. */
int ad_read_file(const char *path, size_t max_bytes, char **data, size_t *size);

/* Reads a text file into lines: newlines removed, a final line without newline kept, "\r\n"
 * tolerated, a UTF-8 byte-order mark dropped. Caller frees with ad_free_lines. */
int ad_read_lines(const char *path, char ***lines, int *n);
void ad_free_lines(char **lines, int n);

typedef struct {
    const uint8_t *data;
    size_t size;
    char *path;
} ad_mapped_file;

int ad_map_file(const char *path, ad_mapped_file *m);
void ad_unmap_file(ad_mapped_file *m);

typedef struct {
    FILE *file;
    char *final_path;
    char *temp_path;
    int failed;
} ad_atomic_file;

int ad_atomic_open(ad_atomic_file *a, const char *path);
int ad_atomic_write(ad_atomic_file *a, const void *data, size_t size);
/* fsync + rename onto the final path + fsync the directory. Removes the temp file on error. */
int ad_atomic_commit(ad_atomic_file *a);
/* Drop the temp file (after an error elsewhere). Safe to call twice. */
void ad_atomic_abort(ad_atomic_file *a);
/* Publishes a finished file written (and closed) under a temporary name by another library
 * (HDF5): fsync it, rename it onto final_path, fsync the directory. */
int ad_commit_file(const char *temp_path, const char *final_path);
/* Write a whole buffer atomically. */
int ad_write_file_atomic(const char *path, const void *data, size_t size);

/* CRC-32 (IEEE, as zlib) and CRC-32C (Castagnoli, as TFRecord uses), continuing from `crc`
 * (0 to start). */
uint32_t ad_crc32(uint32_t crc, const void *data, size_t n);
uint32_t ad_crc32c(uint32_t crc, const void *data, size_t n);
/* CRC-32 of a whole file. */
int ad_file_crc32(const char *path, uint32_t *crc, uint64_t *size);
/* FNV-1a 64 continuing from `h` (AD_FNV1A64_INIT to start): identities of files and data
 * (not a cryptographic hash: it tells versions apart, it does not resist forgery). */
#define AD_FNV1A64_INIT 1469598103934665603ull
uint64_t ad_fnv1a64(uint64_t h, const void *data, size_t n);
/* FNV-1a 64 of a whole file, streamed (any size), continuing from *h; *size may be NULL. */
int ad_file_fnv1a64(const char *path, uint64_t *h, uint64_t *size);

bool ad_path_exists(const char *path);
bool ad_is_directory(const char *path);
/* dir + "/" + name into a new string (caller frees). */
char *ad_path_join(const char *dir, const char *name);
/* The directory part of a path ("." when none), into a new string. */
char *ad_path_dirname(const char *path);
int ad_fsync_directory(const char *dir);
int ad_mkdir_p(const char *path);
/* Removes a file or a directory tree (no error when absent; links are not followed). */
int ad_remove_tree(const char *path);
/* Copies from_dir/name to to_dir/name atomically when the source exists (a model directory's
 * optional side files: tokenizer, preprocessor, generation config). */
int ad_copy_optional_file(const char *from_dir, const char *to_dir, const char *name);

#endif
