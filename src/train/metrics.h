/* Training metrics on disk, in two forms written side by side:
 *   RUN/metrics.jsonl  one JSON object per record: {"step": N, "wall_time": unix seconds,
 *                      "<tag>": value, ...}, appended and flushed line by line, so a killed run
 *                      loses at most the line being written; a resumed run appends again (a
 *                      reader keeps the last record of a step). Non-finite values are null.
 *   RUN/tensorboard/events.out.tfevents.<time>.<host>.<pid>  a TensorBoard event file:
 *                      TFRecord framing (length, masked CRC-32C of the length, payload, masked
 *                      CRC-32C of the payload), payloads are Event protobufs encoded here by
 *                      hand; the first is the file_version "brain.Event:2" event, then one
 *                      Event{wall_time, step, Summary{Value{tag, simple_value}...}} per record.
 * The reader half (ad_tfrecord_next, ad_tb_event_decode) exists to check files in tests and
 * tools; it verifies both CRCs of every record. Only rank 0 should write metrics. */
#ifndef AUDISTILL_TRAIN_METRICS_H
#define AUDISTILL_TRAIN_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define AD_TB_MAX_TAG 256

typedef struct {
    FILE *jsonl;
    FILE *events;
    char *jsonl_path, *events_path;
    unsigned char *buf; /* protobuf scratch, grown as needed */
    size_t cap;
} ad_metrics;

/* Opens (appending) RUN/metrics.jsonl and a new event file in RUN/tensorboard/ (RUN and
 * RUN/tensorboard made if needed), and writes the file_version event. */
int ad_metrics_open(ad_metrics *m, const char *run_dir);
void ad_metrics_close(ad_metrics *m);
/* One record: n (tag, value) pairs at `step`, e.g. "train/loss", "train/kl", "train/ce",
 * "train/lr", "train/grad_norm", "train/tokens_per_s". Tags are at most AD_TB_MAX_TAG bytes.
 * The event file stores values as float (TensorBoard's simple_value), the JSONL as %.9g. */
int ad_metrics_write(ad_metrics *m, int64_t step, int n, const char *const *tags,
                     const double *values);

/* masked CRC-32C as TFRecord stores it: ((c >> 15) | (c << 17)) + 0xa282ead8. */
uint32_t ad_tfrecord_masked_crc(const void *data, size_t n);
/* The TFRecord framing of one payload into out (16 + n bytes); returns 16 + n. */
size_t ad_tfrecord_frame(const void *payload, size_t n, unsigned char *out);
/* The record at *pos of buf[0..len): checks both CRCs, sets *payload and *n, advances *pos.
 * Returns 1 for a record, 0 at the clean end, AD_ERR (with the offset) for a torn or corrupt
 * record. */
int ad_tfrecord_next(const unsigned char *buf, size_t len, size_t *pos,
                     const unsigned char **payload, size_t *n);

typedef struct {
    double wall_time;
    int64_t step;
    char file_version[32]; /* "" unless this is the file_version event */
    int n_values;
    char tags[16][AD_TB_MAX_TAG + 1];
    float values[16];
} ad_tb_event;

/* Decodes an Event payload (fields this writer uses; others are skipped, more than 16 summary
 * values are an error). */
int ad_tb_event_decode(const unsigned char *p, size_t n, ad_tb_event *e);

#endif
