/* JSONL and TensorBoard metric files; see metrics.h for both formats. */
#include "train/metrics.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file.h"

static void put_le(unsigned char *out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        out[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

uint32_t ad_tfrecord_masked_crc(const void *data, size_t n) {
    const uint32_t c = ad_crc32c(0, data, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

size_t ad_tfrecord_frame(const void *payload, size_t n, unsigned char *out) {
    put_le(out, n, 8);
    put_le(out + 8, ad_tfrecord_masked_crc(out, 8), 4);
    memcpy(out + 12, payload, n);
    put_le(out + 12 + n, ad_tfrecord_masked_crc(payload, n), 4);
    return 16 + n;
}

int ad_tfrecord_next(const unsigned char *buf, size_t len, size_t *pos,
                     const unsigned char **payload, size_t *n) {
    const size_t at = *pos;
    if (at == len) return 0;
    if (len - at < 12) return ad_fail("TFRecord at byte %zu: torn header", at);
    const uint64_t size = get_le(buf + at, 8);
    if (get_le(buf + at + 8, 4) != ad_tfrecord_masked_crc(buf + at, 8))
        return ad_fail("TFRecord at byte %zu: length fails its CRC-32C", at);
    if (size > len - at - 12 || len - at - 12 - size < 4)
        return ad_fail("TFRecord at byte %zu: %llu-byte payload runs past the end", at,
                       (unsigned long long)size);
    if (get_le(buf + at + 12 + size, 4) != ad_tfrecord_masked_crc(buf + at + 12, (size_t)size))
        return ad_fail("TFRecord at byte %zu: payload fails its CRC-32C", at);
    *payload = buf + at + 12, *n = (size_t)size, *pos = at + 16 + (size_t)size;
    return 1;
}

/* ---- protobuf, by hand ------------------------------------------------------------------ */

/* Appends to a growing buffer; `failed` latches the first allocation failure. */
typedef struct {
    unsigned char *p;
    size_t n, cap;
    bool failed;
} pb;

static void pb_put(pb *b, const void *data, size_t n) {
    if (b->failed) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        unsigned char *grown = ad_realloc(b->p, cap, "TensorBoard event");
        if (!grown) {
            b->failed = true;
            return;
        }
        b->p = grown, b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void varint(pb *b, uint64_t v) {
    unsigned char tmp[10];
    int k = 0;
    while (v >= 0x80)
        tmp[k++] = (unsigned char)(v | 0x80), v >>= 7;
    tmp[k++] = (unsigned char)v;
    pb_put(b, tmp, (size_t)k);
}

static void bytes_field(pb *b, int field, const void *p, size_t n) {
    varint(b, (uint64_t)field << 3 | 2);
    varint(b, n);
    pb_put(b, p, n);
}

static void double_field(pb *b, int field, double v) {
    uint64_t bits;
    unsigned char le[8];
    memcpy(&bits, &v, 8);
    put_le(le, bits, 8);
    varint(b, (uint64_t)field << 3 | 1);
    pb_put(b, le, 8);
}

static void float_field(pb *b, int field, float v) {
    uint32_t bits;
    unsigned char le[4];
    memcpy(&bits, &v, 4);
    put_le(le, bits, 4);
    varint(b, (uint64_t)field << 3 | 5);
    pb_put(b, le, 4);
}

static double wall_seconds(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

static int write_event(ad_metrics *m, pb *event) {
    pb frame = {.p = m->buf, .cap = m->cap};
    unsigned char zero[16] = {0};
    pb_put(&frame, zero, 12); /* room for the header */
    pb_put(&frame, event->p, event->n);
    pb_put(&frame, zero, 4);
    m->buf = frame.p, m->cap = frame.cap;
    if (event->failed || frame.failed) return AD_ERR;
    const size_t n = ad_tfrecord_frame(event->p, event->n, frame.p);
    if (fwrite(frame.p, 1, n, m->events) != n || fflush(m->events) != 0)
        return ad_fail("cannot write %s", m->events_path);
    return AD_OK;
}

int ad_metrics_open(ad_metrics *m, const char *run_dir) {
    memset(m, 0, sizeof *m);
    char dir[4200], host[256] = "localhost", file[4600];
    snprintf(dir, sizeof dir, "%s/tensorboard", run_dir);
    if (ad_mkdir_p(dir) < 0) goto fail; /* and the run directory */
    m->jsonl_path = ad_path_join(run_dir, "metrics.jsonl");
    if (!m->jsonl_path || !(m->jsonl = ad_fopen(m->jsonl_path, "a"))) goto fail;
    if (gethostname(host, sizeof host - 1) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *c = host; *c; c++) /* a file name, whatever the host is called */
        if (*c == '/') *c = '_';
    const double now = wall_seconds();
    snprintf(file, sizeof file, "%s/events.out.tfevents.%ld.%s.%ld", dir, (long)now, host,
             (long)getpid());
    if (!(m->events_path = ad_strdup(file, "path")) || !(m->events = ad_fopen(file, "wb")))
        goto fail;
    pb e = {0};
    double_field(&e, 1, now);
    bytes_field(&e, 3, "brain.Event:2", 13); /* Event.file_version */
    const int rc = write_event(m, &e);
    free(e.p);
    if (rc < 0) goto fail;
    return AD_OK;
fail:
    ad_metrics_close(m);
    return AD_ERR;
}

void ad_metrics_close(ad_metrics *m) {
    if (m->jsonl) fclose(m->jsonl);
    if (m->events) fclose(m->events);
    free(m->jsonl_path), free(m->events_path), free(m->buf);
    memset(m, 0, sizeof *m);
}

/* A JSON string with the escapes JSON requires. */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

int ad_metrics_write(ad_metrics *m, int64_t step, int n, const char *const *tags,
                     const double *values) {
    if (!m->jsonl || !m->events) return ad_fail("metrics: not open");
    for (int i = 0; i < n; i++)
        if (!tags[i][0] || strlen(tags[i]) > AD_TB_MAX_TAG)
            return ad_fail("metrics: tag '%.40s' is empty or longer than %d bytes", tags[i],
                           AD_TB_MAX_TAG);
    const double now = wall_seconds();
    fprintf(m->jsonl, "{\"step\": %lld, \"wall_time\": %.3f", (long long)step, now);
    for (int i = 0; i < n; i++) {
        fputs(", ", m->jsonl);
        json_string(m->jsonl, tags[i]);
        if (isfinite(values[i]))
            fprintf(m->jsonl, ": %.9g", values[i]);
        else
            fputs(": null", m->jsonl);
    }
    fputs("}\n", m->jsonl);
    if (ferror(m->jsonl) || fflush(m->jsonl) != 0) return ad_fail("cannot write %s", m->jsonl_path);
    pb summary = {0}, value = {0}, e = {0};
    for (int i = 0; i < n; i++) {
        value.n = 0;
        bytes_field(&value, 1, tags[i], strlen(tags[i])); /* Summary.Value.tag */
        float_field(&value, 2, (float)values[i]);         /* Summary.Value.simple_value */
        if (value.failed) break;
        bytes_field(&summary, 1, value.p, value.n); /* Summary.value */
    }
    double_field(&e, 1, now);
    varint(&e, 2 << 3 | 0); /* Event.step */
    varint(&e, (uint64_t)step);
    if (!summary.failed && !value.failed) bytes_field(&e, 5, summary.p, summary.n);
    e.failed |= summary.failed || value.failed;
    const int rc = write_event(m, &e);
    free(summary.p), free(value.p), free(e.p);
    return rc;
}

/* ---- decoding (tests, tools) ---------------------------------------------------------------- */

static int read_varint(const unsigned char *p, size_t n, size_t *at, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*at >= n) return ad_fail("protobuf: varint runs past the end");
        const unsigned char c = p[(*at)++];
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return AD_OK;
    }
    return ad_fail("protobuf: varint longer than 10 bytes");
}

/* Calls back for each field; skips wire types it is not asked about. */
typedef int (*field_fn)(void *ctx, int field, int wire, uint64_t num, const unsigned char *data,
                        size_t len);

static int walk(const unsigned char *p, size_t n, field_fn fn, void *ctx) {
    size_t at = 0;
    while (at < n) {
        uint64_t key, num = 0, len = 0;
        AD_TRY(read_varint(p, n, &at, &key));
        const int wire = (int)(key & 7), field = (int)(key >> 3);
        const unsigned char *data = p + at;
        if (wire == 0) {
            AD_TRY(read_varint(p, n, &at, &num));
        } else if (wire == 1 || wire == 5) {
            len = wire == 1 ? 8 : 4;
            if (n - at < len) return ad_fail("protobuf: fixed field runs past the end");
            num = get_le(p + at, (int)len);
            at += len;
        } else if (wire == 2) {
            AD_TRY(read_varint(p, n, &at, &len));
            if (len > n - at)
                return ad_fail("protobuf: %llu-byte field runs past the end",
                               (unsigned long long)len);
            data = p + at;
            at += len;
        } else {
            return ad_fail("protobuf: wire type %d not supported", wire);
        }
        AD_TRY(fn(ctx, field, wire, num, data, (size_t)len));
    }
    return AD_OK;
}

static int on_value(void *ctx, int field, int wire, uint64_t num, const unsigned char *d,
                    size_t len) {
    ad_tb_event *e = ctx;
    const int i = e->n_values;
    if (field == 1 && wire == 2) {
        if (len > AD_TB_MAX_TAG) return ad_fail("event: tag longer than %d bytes", AD_TB_MAX_TAG);
        memcpy(e->tags[i], d, len);
        e->tags[i][len] = '\0';
    } else if (field == 2 && wire == 5) {
        const uint32_t bits = (uint32_t)num;
        memcpy(&e->values[i], &bits, 4);
    }
    return AD_OK;
}

static int on_summary(void *ctx, int field, int wire, uint64_t num, const unsigned char *d,
                      size_t len) {
    ad_tb_event *e = ctx;
    (void)num;
    if (field != 1 || wire != 2) return AD_OK;
    if (e->n_values == 16) return ad_fail("event: more than 16 summary values");
    e->tags[e->n_values][0] = '\0';
    e->values[e->n_values] = NAN;
    AD_TRY(walk(d, len, on_value, e));
    e->n_values++;
    return AD_OK;
}

static int on_event(void *ctx, int field, int wire, uint64_t num, const unsigned char *d,
                    size_t len) {
    ad_tb_event *e = ctx;
    if (field == 1 && wire == 1) {
        memcpy(&e->wall_time, &num, 8);
    } else if (field == 2 && wire == 0) {
        e->step = (int64_t)num;
    } else if (field == 3 && wire == 2) {
        if (len >= sizeof e->file_version) return ad_fail("event: file_version too long");
        memcpy(e->file_version, d, len);
        e->file_version[len] = '\0';
    } else if (field == 5 && wire == 2) {
        return walk(d, len, on_summary, e);
    }
    return AD_OK;
}

int ad_tb_event_decode(const unsigned char *p, size_t n, ad_tb_event *e) {
    memset(e, 0, sizeof *e);
    return walk(p, n, on_event, e);
}
