#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int ad_read_file(const char *path, size_t max_bytes, char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *f = ad_fopen(path, "rb");
    if (!f) return AD_ERR;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return ad_fail("cannot stat %s: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        fclose(f);
        return ad_fail("%s is a directory, expected a file", path);
    }
    if (!S_ISREG(st.st_mode)) { /* a pipe or /dev/stdin: no size up front, read to the end */
        size_t cap = 1 << 16, n = 0;
        char *buf = ad_malloc(cap + 1, path);
        while (buf) {
            n += fread(buf + n, 1, cap - n, f);
            if (n < cap || ferror(f)) break;
            if (cap > max_bytes) {
                free(buf);
                fclose(f);
                return ad_fail("%s is more than the %zu bytes allowed for this kind of file", path,
                               max_bytes);
            }
            char *g = ad_realloc(buf, 2 * cap + 1, path);
            if (!g) free(buf);
            buf = g, cap *= 2;
        }
        const int read_error = !buf || ferror(f);
        fclose(f);
        if (read_error) {
            free(buf);
            return buf ? ad_fail("cannot read %s: %s", path, strerror(errno)) : AD_ERR;
        }
        buf[n] = '\0';
        *data = buf;
        *size = n;
        return AD_OK;
    }
    if ((size_t)st.st_size > max_bytes) {
        fclose(f);
        return ad_fail("%s is %lld bytes, more than the %zu allowed for this kind of file", path,
                       (long long)st.st_size, max_bytes);
    }
    char *buf = ad_malloc((size_t)st.st_size + 1, path);
    if (!buf) {
        fclose(f);
        return AD_ERR;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    int read_error = ferror(f);
    fclose(f);
    if (read_error || n != (size_t)st.st_size) {
        free(buf);
        return ad_fail("short read on %s: got %zu of %lld bytes", path, n, (long long)st.st_size);
    }
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return AD_OK;
}

#define MAX_TEXT_FILE_BYTES (1u << 30)

int ad_read_lines(const char *path, char ***lines, int *n) {
    *lines = NULL;
    *n = 0;
    char *text;
    size_t size;
    AD_TRY(ad_read_file(path, MAX_TEXT_FILE_BYTES, &text, &size));
    char *p = text;
    if (size >= 3 && (unsigned char)p[0] == 0xef && (unsigned char)p[1] == 0xbb &&
        (unsigned char)p[2] == 0xbf)
        p += 3;
    int count = 0, cap = 0;
    char **out = NULL;
    char *end = text + size;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        size_t len = (size_t)(line_end - p);
        if (len && p[len - 1] == '\r') len--;
        if (count == cap) {
            cap = cap ? cap * 2 : 256;
            char **g = ad_realloc(out, sizeof *g * (size_t)cap, "lines");
            if (!g) goto fail;
            out = g;
        }
        out[count] = ad_malloc(len + 1, "line");
        if (!out[count]) goto fail;
        memcpy(out[count], p, len);
        out[count][len] = '\0';
        count++;
        p = nl ? nl + 1 : end;
    }
    free(text);
    *lines = out;
    *n = count;
    return AD_OK;
fail:
    ad_free_lines(out, count);
    free(text);
    return AD_ERR;
}

void ad_free_lines(char **lines, int n) {
    for (int i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

int ad_map_file(const char *path, ad_mapped_file *m) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ad_fail("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return ad_fail("cannot stat %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ad_fail("%s is not a regular file", path);
    }
    m->path = ad_strdup(path, "path");
    if (!m->path) {
        close(fd);
        return AD_ERR;
    }
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            free(m->path);
            m->path = NULL;
            return ad_fail("cannot map %s: %s", path, strerror(errno));
        }
        m->data = p;
    }
    close(fd);
    return AD_OK;
}

void ad_unmap_file(ad_mapped_file *m) {
    if (m->data && m->size) munmap((void *)m->data, m->size);
    free(m->path);
    memset(m, 0, sizeof *m);
}

int ad_atomic_open(ad_atomic_file *a, const char *path) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path) + 64;
    a->final_path = ad_strdup(path, "path");
    a->temp_path = ad_malloc(n, "path");
    if (!a->final_path || !a->temp_path) {
        ad_atomic_abort(a);
        return AD_ERR;
    }
    snprintf(a->temp_path, n, "%s.tmp.%ld", path, (long)getpid());
    a->file = fopen(a->temp_path, "wb");
    if (!a->file) {
        int e = errno;
        ad_fail("cannot create %s: %s", a->temp_path, strerror(e));
        free(a->temp_path);
        a->temp_path = NULL;
        ad_atomic_abort(a);
        return AD_ERR;
    }
    return AD_OK;
}

int ad_atomic_write(ad_atomic_file *a, const void *data, size_t size) {
    if (a->failed) return AD_ERR;
    if (size && fwrite(data, 1, size, a->file) != size) {
        a->failed = 1;
        return ad_fail("write to %s failed: %s", a->temp_path, strerror(errno));
    }
    return AD_OK;
}

int ad_commit_file(const char *temp_path, const char *final_path) {
    int fd = open(temp_path, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return ad_fail("cannot fsync %s: %s", temp_path, strerror(e));
    }
    close(fd);
    if (rename(temp_path, final_path) != 0)
        return ad_fail("cannot rename %s to %s: %s", temp_path, final_path, strerror(errno));
    char *dir = ad_path_dirname(final_path);
    int rc = dir ? ad_fsync_directory(dir) : AD_ERR;
    free(dir);
    return rc;
}

int ad_atomic_commit(ad_atomic_file *a) {
    if (a->failed) {
        ad_atomic_abort(a);
        return AD_ERR;
    }
    if (fflush(a->file) != 0 || fsync(fileno(a->file)) != 0) {
        ad_fail("cannot flush %s: %s", a->temp_path, strerror(errno));
        ad_atomic_abort(a);
        return AD_ERR;
    }
    int close_failed = fclose(a->file) != 0;
    a->file = NULL;
    if (close_failed) {
        ad_fail("cannot close %s: %s", a->temp_path, strerror(errno));
        ad_atomic_abort(a);
        return AD_ERR;
    }
    if (rename(a->temp_path, a->final_path) != 0) {
        ad_fail("cannot rename %s to %s: %s", a->temp_path, a->final_path, strerror(errno));
        ad_atomic_abort(a);
        return AD_ERR;
    }
    char *dir = ad_path_dirname(a->final_path);
    int rc = dir ? ad_fsync_directory(dir) : AD_ERR;
    free(dir);
    free(a->temp_path);
    free(a->final_path);
    memset(a, 0, sizeof *a);
    return rc;
}

void ad_atomic_abort(ad_atomic_file *a) {
    if (a->file) fclose(a->file);
    if (a->temp_path) unlink(a->temp_path);
    free(a->temp_path);
    free(a->final_path);
    memset(a, 0, sizeof *a);
}

int ad_write_file_atomic(const char *path, const void *data, size_t size) {
    ad_atomic_file a;
    AD_TRY(ad_atomic_open(&a, path));
    if (ad_atomic_write(&a, data, size) < 0) {
        ad_atomic_abort(&a);
        return AD_ERR;
    }
    return ad_atomic_commit(&a);
}

bool ad_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

bool ad_is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *ad_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = ad_malloc(n, "path");
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *ad_path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return ad_strdup(".", "path");
    if (slash == path) return ad_strdup("/", "path");
    size_t n = (size_t)(slash - path);
    char *p = ad_malloc(n + 1, "path");
    if (p) {
        memcpy(p, path, n);
        p[n] = '\0';
    }
    return p;
}

int ad_fsync_directory(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ad_fail("cannot open directory %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* Some filesystems do not support fsync on directories; that is not a data-loss error. */
    if (rc != 0 && e != EINVAL && e != ENOTSUP)
        return ad_fail("cannot fsync directory %s: %s", dir, strerror(e));
    return AD_OK;
}

int ad_mkdir_p(const char *path) {
    char *copy = ad_strdup(path, "path");
    if (!copy) return AD_ERR;
    for (char *p = copy + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                ad_fail("cannot create directory %s: %s", copy, strerror(e));
                free(copy);
                return AD_ERR;
            }
            *p = saved;
            if (saved == '\0') break;
        }
    }
    free(copy);
    if (!ad_is_directory(path)) return ad_fail("%s exists and is not a directory", path);
    return AD_OK;
}

static uint32_t crc_update(const uint32_t *table, uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
    return ~crc;
}

static void crc_table(uint32_t *table, uint32_t poly) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? poly ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
}

uint32_t ad_crc32(uint32_t crc, const void *data, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready)
        crc_table(table, 0xEDB88320u), ready = 1; /* idempotent: a race writes equal values */
    return crc_update(table, crc, data, n);
}

uint32_t ad_crc32c(uint32_t crc, const void *data, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) crc_table(table, 0x82F63B78u), ready = 1;
    return crc_update(table, crc, data, n);
}

int ad_file_crc32(const char *path, uint32_t *crc, uint64_t *size) {
    FILE *f = ad_fopen(path, "rb");
    if (!f) return AD_ERR;
    unsigned char buf[1 << 16];
    size_t n;
    *crc = 0;
    *size = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        *crc = ad_crc32(*crc, buf, n);
        *size += n;
    }
    int bad = ferror(f);
    fclose(f);
    return bad ? ad_fail("read error on %s", path) : AD_OK;
}

uint64_t ad_fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

int ad_file_fnv1a64(const char *path, uint64_t *h, uint64_t *size) {
    FILE *f = ad_fopen(path, "rb");
    if (!f) return AD_ERR;
    unsigned char buf[1 << 16];
    size_t n;
    uint64_t total = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        *h = ad_fnv1a64(*h, buf, n);
        total += n;
    }
    int bad = ferror(f);
    fclose(f);
    if (size) *size = total;
    return bad ? ad_fail("read error on %s", path) : AD_OK;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int ad_remove_tree(const char *path) {
    if (!ad_path_exists(path)) return AD_OK;
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return ad_fail("cannot remove %s: %s", path, strerror(errno));
    return AD_OK;
}

int ad_copy_optional_file(const char *from_dir, const char *to_dir, const char *name) {
    char *src = ad_path_join(from_dir, name), *dst = ad_path_join(to_dir, name), *data = NULL;
    size_t len;
    int rc = src && dst ? AD_OK : AD_ERR;
    if (rc == AD_OK && ad_path_exists(src))
        rc = ad_read_file(src, 64u << 20, &data, &len) < 0 ? AD_ERR
                                                           : ad_write_file_atomic(dst, data, len);
    free(src), free(dst), free(data);
    return rc;
}
