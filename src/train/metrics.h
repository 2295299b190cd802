/* Training metrics on disk: one JSON object per line (metrics.jsonl, flushed per record) and a
 * TensorBoard event file (events.out.tfevents.<time>.<host>: TFRecord framing with masked
 * CRC-32C, Event/Summary protobufs encoded by hand) that TensorBoard and tbparse read. */
#ifndef AUDISTILL_TRAIN_METRICS_H
#define AUDISTILL_TRAIN_METRICS_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *jsonl;
    FILE *events;
    char *events_path;
} ad_metrics;

/* Opens (appending) RUN/metrics.jsonl and a new event file in RUN/tensorboard/. */
int ad_metrics_open(ad_metrics *m, const char *run_dir);
void ad_metrics_close(ad_metrics *m);
/* One record: n (tag, value) pairs at `step`; tags like "train/loss". */
int ad_metrics_write(ad_metrics *m, int64_t step, int n, const char *const *tags,
                     const double *values);

/* The TFRecord framing of one payload into out (12 + n + 4 bytes), for tests. */
size_t ad_tfrecord_frame(const void *payload, size_t n, unsigned char *out);

#endif
