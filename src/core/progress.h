/* A one-line progress display for long work: done/total, rate, ETA and a caller's note,
 * redrawn at most a few times a second. It draws only when stderr is a terminal and the
 * process is rank 0, so logs and pipes stay clean (set AUDISTILL_PROGRESS=1 to force it). */
#ifndef AUDISTILL_CORE_PROGRESS_H
#define AUDISTILL_CORE_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *label;
    const char *unit;
    int64_t total;
    int64_t done;
    double start_s;
    double last_draw_s;
    bool enabled;
    bool drawn;
} ad_progress;

double ad_now_seconds(void); /* monotonic */
void ad_progress_start(ad_progress *p, const char *label, int64_t total, const char *unit);
/* Set the count done; `note` (may be NULL) is appended, e.g. "loss 2.31 lr 3e-4". */
void ad_progress_update(ad_progress *p, int64_t done, const char *note);
void ad_progress_finish(ad_progress *p);
/* "1h02m", "3m20s", "12s" */
void ad_format_duration(double seconds, char *buf, int size);

#endif
