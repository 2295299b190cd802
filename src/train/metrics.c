#include "train/metrics.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file.h"

static uint32_t masked_crc(const void *p, size_t n) {
    uint32_t c = ad_crc32c(0, p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

size_t ad_tfrecord_frame(const void *payload, size_t n, unsigned char *out) {
    uint64_t len = n;
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(len >> (8 * i));
    uint32_t c = masked_crc(out, 8);
    for (int i = 0; i < 4; i++)
        out[8 + i] = (unsigned char)(c >> (8 * i));
    memcpy(out + 12, payload, n);
    c = masked_crc(payload, n);
    for (int i = 0; i < 4; i++)
        out[12 + n + (size_t)i] = (unsigned char)(c >> (8 * i));
    return 16 + n;
}

/* ---- protobuf, by hand ------------------------------------------------------------------ */

typedef struct {
    unsigned char buf[4096];
    size_t n;
} pb;

static void varint(pb *b, uint64_t v) {
    while (v >= 0x80 && b->n < sizeof b->buf)
        b->buf[b->n++] = (unsigned char)(v | 0x80), v >>= 7;
    if (b->n < sizeof b->buf) b->buf[b->n++] = (unsigned char)v;
}

static void bytes_field(pb *b, int field, const void *p, size_t n) {
    varint(b, (uint64_t)field << 3 | 2);
    varint(b, n);
    if (b->n + n <= sizeof b->buf) memcpy(b->buf + b->n, p, n), b->n += n;
}

static void double_field(pb *b, int field, double v) {
    varint(b, (uint64_t)field << 3 | 1);
    if (b->n + 8 <= sizeof b->buf) memcpy(b->buf + b->n, &v, 8), b->n += 8; /* little-endian host */
}

static void float_field(pb *b, int field, float v) {
    varint(b, (uint64_t)field << 3 | 5);
    if (b->n + 4 <= sizeof b->buf) memcpy(b->buf + b->n, &v, 4), b->n += 4;
}

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

static int write_event(ad_metrics *m, const pb *event) {
    unsigned char frame[sizeof event->buf + 16];
    size_t n = ad_tfrecord_frame(event->buf, event->n, frame);
    if (fwrite(frame, 1, n, m->events) != n || fflush(m->events) != 0)
        return ad_fail("cannot write %s", m->events_path);
    return AD_OK;
}

int ad_metrics_open(ad_metrics *m, const char *run_dir) {
    memset(m, 0, sizeof *m);
    char path[4200], host[256] = "localhost";
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    m->jsonl = ad_fopen(path, "a");
    if (!m->jsonl) return AD_ERR;
    snprintf(path, sizeof path, "%s/tensorboard", run_dir);
    if (ad_mkdir_p(path) < 0) {
        ad_metrics_close(m);
        return AD_ERR;
    }
    gethostname(host, sizeof host - 1);
    char file[4400];
    snprintf(file, sizeof file, "%s/events.out.tfevents.%ld.%s.%ld", path, (long)now_s(), host,
             (long)getpid());
    m->events_path = ad_strdup(file, "path");
    m->events = m->events_path ? ad_fopen(file, "wb") : NULL;
    if (!m->events) {
        ad_metrics_close(m);
        return AD_ERR;
    }
    pb e = {.n = 0};
    double_field(&e, 1, now_s());
    bytes_field(&e, 3, "brain.Event:2", 13); /* file_version */
    return write_event(m, &e);
}

void ad_metrics_close(ad_metrics *m) {
    if (m->jsonl) fclose(m->jsonl);
    if (m->events) fclose(m->events);
    free(m->events_path);
    memset(m, 0, sizeof *m);
}

int ad_metrics_write(ad_metrics *m, int64_t step, int n, const char *const *tags,
                     const double *values) {
    fprintf(m->jsonl, "{\"step\": %lld, \"time\": %.3f", (long long)step, now_s());
    for (int i = 0; i < n; i++)
        fprintf(m->jsonl, ", \"%s\": %.9g", tags[i], values[i]);
    fprintf(m->jsonl, "}\n");
    if (fflush(m->jsonl) != 0) return ad_fail("cannot write metrics.jsonl");
    pb summary = {.n = 0};
    for (int i = 0; i < n; i++) {
        pb value = {.n = 0};
        bytes_field(&value, 1, tags[i], strlen(tags[i])); /* Summary.Value.tag */
        float_field(&value, 2, (float)values[i]);         /* Summary.Value.simple_value */
        bytes_field(&summary, 1, value.buf, value.n);
    }
    pb e = {.n = 0};
    double_field(&e, 1, now_s());
    varint(&e, 2 << 3 | 0); /* Event.step */
    varint(&e, (uint64_t)step);
    bytes_field(&e, 5, summary.buf, summary.n); /* Event.summary */
    return write_event(m, &e);
}
