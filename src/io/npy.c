/* .npy reading and writing (see npy.h). The header is built exactly as numpy.lib.format does
 * (sorted keys, 21 spare spaces for growing the first axis, padding to 64 bytes), so files
 * compare byte-for-byte with numpy.save output. */
#include "io/npy.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/file.h"

#define NPY_MAGIC_LEN     6
#define NPY_ALIGN         64
#define NPY_GROWTH_DIGITS 21

static const char npy_magic[NPY_MAGIC_LEN] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

size_t ad_npy_dtype_size(ad_npy_dtype dtype) {
    return dtype == AD_NPY_I8 ? 8 : 4;
}

const char *ad_npy_dtype_descr(ad_npy_dtype dtype) {
    switch (dtype) {
    case AD_NPY_F4: return "<f4";
    case AD_NPY_I4: return "<i4";
    case AD_NPY_I8: return "<i8";
    }
    return "?";
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

int ad_npy_write(const char *path, ad_npy_dtype dtype, const int64_t *shape, int ndim,
                 const void *data) {
    if (!host_is_little_endian())
        return ad_fail("writing %s: big-endian hosts are not supported", path);
    if (ndim < 0 || ndim > AD_NPY_MAX_DIMS)
        return ad_fail("writing %s: %d dimensions (at most %d)", path, ndim, AD_NPY_MAX_DIMS);
    if ((unsigned)dtype > AD_NPY_I8) return ad_fail("writing %s: unknown dtype %d", path, dtype);
    size_t count = 1;
    char shape_text[AD_NPY_MAX_DIMS * 24 + 4];
    size_t sl = 0;
    shape_text[sl++] = '(';
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return ad_fail("writing %s: negative dimension %d", path, i);
        if (ad_mul_overflows(count, (size_t)shape[i], &count))
            return ad_fail("writing %s: shape too large", path);
        sl += (size_t)snprintf(shape_text + sl, sizeof shape_text - sl, "%s%" PRId64, i ? ", " : "",
                               shape[i]);
    }
    if (ndim == 1) shape_text[sl++] = ',';
    shape_text[sl++] = ')';
    shape_text[sl] = '\0';

    char header[512];
    int hl =
        snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                 ad_npy_dtype_descr(dtype), shape_text);
    if (ndim > 0) {
        char first[24];
        int digits = snprintf(first, sizeof first, "%" PRId64, shape[0]);
        for (int i = digits; i < NPY_GROWTH_DIGITS; i++)
            header[hl++] = ' ';
    }
    size_t hlen = (size_t)hl + 1; /* the closing newline */
    size_t pad = NPY_ALIGN - ((NPY_MAGIC_LEN + 4 + hlen) % NPY_ALIGN);
    memset(header + hl, ' ', pad);
    header[hl + (int)pad] = '\n';
    size_t header_total = (size_t)hl + pad + 1;

    unsigned char prefix[10];
    memcpy(prefix, npy_magic, NPY_MAGIC_LEN);
    prefix[6] = 1;
    prefix[7] = 0;
    prefix[8] = (unsigned char)(header_total & 0xff);
    prefix[9] = (unsigned char)(header_total >> 8);

    size_t bytes;
    if (ad_mul_overflows(count, ad_npy_dtype_size(dtype), &bytes))
        return ad_fail("writing %s: array too large", path);
    ad_atomic_file a;
    AD_TRY(ad_atomic_open(&a, path));
    if (ad_atomic_write(&a, prefix, sizeof prefix) < 0 ||
        ad_atomic_write(&a, header, header_total) < 0 || ad_atomic_write(&a, data, bytes) < 0) {
        ad_atomic_abort(&a);
        return AD_ERR;
    }
    return ad_atomic_commit(&a);
}

/* Finds `'key':` in the header dict and returns the text after it (spaces skipped). */
static const char *dict_value(const char *dict, const char *key) {
    char pattern[32];
    snprintf(pattern, sizeof pattern, "'%s':", key);
    const char *p = strstr(dict, pattern);
    if (!p) return NULL;
    p += strlen(pattern);
    while (*p == ' ')
        p++;
    return p;
}

static int parse_header(const char *path, const char *dict, ad_npy *out) {
    const char *d = dict_value(dict, "descr");
    if (!d) return ad_fail("%s: .npy header has no 'descr'", path);
    if (strncmp(d, "'<f4'", 5) == 0)
        out->dtype = AD_NPY_F4;
    else if (strncmp(d, "'<i4'", 5) == 0)
        out->dtype = AD_NPY_I4;
    else if (strncmp(d, "'<i8'", 5) == 0)
        out->dtype = AD_NPY_I8;
    else
        return ad_fail("%s: unsupported .npy dtype %.8s (expected '<f4', '<i4' or '<i8')", path, d);
    const char *f = dict_value(dict, "fortran_order");
    if (!f || strncmp(f, "False", 5) != 0)
        return ad_fail("%s: only C-order .npy arrays are supported (fortran_order False)", path);
    const char *s = dict_value(dict, "shape");
    if (!s || *s != '(') return ad_fail("%s: .npy header has no shape tuple", path);
    s++;
    out->ndim = 0;
    out->count = 1;
    for (;;) {
        while (*s == ' ' || *s == ',')
            s++;
        if (*s == ')') break;
        if (*s < '0' || *s > '9') return ad_fail("%s: malformed .npy shape", path);
        if (out->ndim == AD_NPY_MAX_DIMS)
            return ad_fail("%s: more than %d dimensions", path, AD_NPY_MAX_DIMS);
        char *end;
        long long v = strtoll(s, &end, 10);
        size_t c;
        if (v < 0 || ad_mul_overflows((size_t)out->count, (size_t)v, &c) || c > (size_t)INT64_MAX)
            return ad_fail("%s: .npy shape too large", path);
        out->shape[out->ndim++] = v;
        out->count = (int64_t)c;
        s = end;
    }
    return AD_OK;
}

int ad_npy_read(const char *path, ad_npy *out) {
    memset(out, 0, sizeof *out);
    if (!host_is_little_endian())
        return ad_fail("reading %s: big-endian hosts are not supported", path);
    ad_mapped_file m;
    AD_TRY(ad_map_file(path, &m));
    const char *buf = (const char *)m.data;
    size_t size = m.size;
    int rc = AD_ERR;
    if (size < 10 || memcmp(buf, npy_magic, NPY_MAGIC_LEN) != 0) {
        ad_fail("%s is not a .npy file (no \\x93NUMPY magic)", path);
        goto done;
    }
    unsigned major = (unsigned char)buf[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)(unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) {
            ad_fail("%s: truncated .npy header", path);
            goto done;
        }
        hlen = 0;
        for (int i = 3; i >= 0; i--)
            hlen = hlen << 8 | (unsigned char)buf[8 + i];
        hstart = 12;
    } else {
        ad_fail("%s: unsupported .npy format version %u", path, major);
        goto done;
    }
    if (hlen > size - hstart) {
        ad_fail("%s: truncated .npy header (%zu bytes announced)", path, hlen);
        goto done;
    }
    char *dict = ad_malloc(hlen + 1, path);
    if (!dict) goto done;
    memcpy(dict, buf + hstart, hlen);
    dict[hlen] = '\0';
    int prc = parse_header(path, dict, out);
    free(dict);
    if (prc < 0) goto done;
    size_t bytes = (size_t)out->count * ad_npy_dtype_size(out->dtype);
    size_t data_start = hstart + hlen;
    if (size - data_start != bytes) {
        ad_fail("%s: .npy data is %zu bytes, the header's shape needs %zu", path, size - data_start,
                bytes);
        goto done;
    }
    out->data = ad_malloc(bytes ? bytes : 1, path);
    if (!out->data) goto done;
    memcpy(out->data, buf + data_start, bytes);
    rc = AD_OK;
done:
    ad_unmap_file(&m);
    if (rc < 0) ad_npy_free(out);
    return rc;
}

void ad_npy_free(ad_npy *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}
