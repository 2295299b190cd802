#include "core/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define REDRAW_INTERVAL_S 0.2

double ad_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void ad_format_duration(double seconds, char *buf, int size) {
    if (seconds < 0 || seconds > 1e8) {
        snprintf(buf, (size_t)size, "?");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, (size_t)size, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, (size_t)size, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, (size_t)size, "%lds", s);
}

void ad_progress_start(ad_progress *p, const char *label, int64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit ? unit : "it";
    p->total = total;
    p->start_s = ad_now_seconds();
    const char *force = getenv("AUDISTILL_PROGRESS");
    bool tty = isatty(fileno(stderr)) != 0;
    if (force && *force) tty = strcmp(force, "0") != 0;
    p->enabled = tty && ad_log_rank() == 0;
}

static void draw(ad_progress *p, const char *note, double now) {
    double elapsed = now - p->start_s;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0.0;
    char eta[32] = "?", spent[32];
    if (rate > 0 && p->total > 0) ad_format_duration((double)(p->total - p->done) / rate, eta, 32);
    ad_format_duration(elapsed, spent, 32);
    if (p->total > 0)
        fprintf(stderr, "\r\033[K%s %lld/%lld (%.0f%%) %.2f %s/s %s ETA %s%s%s", p->label,
                (long long)p->done, (long long)p->total, 100.0 * (double)p->done / (double)p->total,
                rate, p->unit, spent, eta, note ? "  " : "", note ? note : "");
    else
        fprintf(stderr, "\r\033[K%s %lld %.2f %s/s %s%s%s", p->label, (long long)p->done, rate,
                p->unit, spent, note ? "  " : "", note ? note : "");
    fflush(stderr);
    p->drawn = true;
    p->last_draw_s = now;
}

void ad_progress_update(ad_progress *p, int64_t done, const char *note) {
    p->done = done;
    if (!p->enabled) return;
    double now = ad_now_seconds();
    if (now - p->last_draw_s < REDRAW_INTERVAL_S && done != p->total) return;
    draw(p, note, now);
}

void ad_progress_finish(ad_progress *p) {
    if (!p->enabled) return;
    draw(p, NULL, ad_now_seconds());
    fputc('\n', stderr);
    p->enabled = false;
}
