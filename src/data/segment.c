/* Energy-based segmentation (see segment.h). Frames of 10 ms; the noise floor is the running
 * minimum of the 100 ms-smoothed frame energy over +-5 s (minimum statistics), so a floor that
 * drifts along a talk is followed; a frame is speech when it rises well above that floor. */
#include "data/segment.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/compare.h"
#include "core/error.h"

#define FRAMES_PER_SECOND 100
#define FLOOR_WINDOW_S    5.0   /* half-width of the running-minimum window */
#define FLOOR_SMOOTH      10    /* frames averaged before taking the minimum */
#define MIN_RISE_DB       6.0   /* speech is at least this far above the floor */
#define RISE_FRACTION     0.3   /* ... or this fraction of the way from floor to the loud frames */
#define SILENT_DB         -70.0 /* a file whose loud frames are below this holds no speech */

void ad_vad_defaults(ad_vad_options *o) {
    o->max_seconds = 20.0;
    o->min_silence = 0.3;
    o->pad = 0.1;
    o->min_speech = 0.15;
}

void ad_format_sample_seconds(int64_t samples, int rate, char *buf, int size) {
    snprintf(buf, (size_t)size, "%.7f", (double)samples / rate);
    char *dot = strchr(buf, '.');
    if (!dot) return;
    char *end = buf + strlen(buf) - 1;
    while (end > dot + 1 && *end == '0')
        *end-- = '\0';
}

int ad_segmentation_entry(char *buf, size_t size, int64_t start, int64_t length, int rate,
                          const char *speaker, const char *wav) {
    char off[48], dur[48];
    ad_format_sample_seconds(start, rate, off, sizeof off);
    ad_format_sample_seconds(length, rate, dur, sizeof dur);
    return snprintf(buf, size, "- {duration: %s, offset: %s, speaker_id: %s, wav: %s}\n", dur, off,
                    speaker, wav);
}

/* Running minimum of v over [i - w, i + w] with a monotonic deque: O(n). */
static void running_min(const double *v, int64_t n, int64_t w, double *out, int64_t *dq) {
    int64_t head = 0, tail = 0, next = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t hi = i + w < n - 1 ? i + w : n - 1;
        for (; next <= hi; next++) {
            while (tail > head && v[dq[tail - 1]] >= v[next])
                tail--;
            dq[tail++] = next;
        }
        while (dq[head] < i - w)
            head++;
        out[i] = v[dq[head]];
    }
}

typedef struct {
    int64_t start, end; /* frames */
} region;

int ad_vad_segment_audio(const float *x, int64_t n, int rate, const ad_vad_options *o,
                         ad_vad_segment **segs, int *n_segs) {
    *segs = NULL;
    *n_segs = 0;
    if (rate < FRAMES_PER_SECOND) return ad_fail("segment: sample rate %d Hz is too low", rate);
    if (!(o->max_seconds >= 0.1) || !(o->min_silence >= 0.0) || !(o->pad >= 0.0) ||
        !(o->min_speech >= 0.0))
        return ad_fail("segment: max %.3g s must be >= 0.1 and min silence, pad and min speech "
                       "non-negative",
                       o->max_seconds);
    int64_t hop = rate / FRAMES_PER_SECOND;
    int64_t nf = n / hop;
    if (nf == 0) return AD_OK;

    double *e = ad_malloc((size_t)nf * sizeof *e, "frame energies");
    double *smooth = ad_malloc((size_t)nf * sizeof *smooth, "frame energies");
    double *floor_db = ad_malloc((size_t)nf * sizeof *floor_db, "noise floor");
    double *sorted = ad_malloc((size_t)nf * sizeof *sorted, "frame energies");
    int64_t *dq = ad_malloc((size_t)nf * sizeof *dq, "frame queue");
    region *r = ad_malloc((size_t)nf * sizeof *r, "speech regions");
    ad_vad_segment *out = NULL;
    int rc = AD_OK;
    if (!e || !smooth || !floor_db || !sorted || !dq || !r) {
        rc = AD_ERR;
        goto done;
    }
    for (int64_t f = 0; f < nf; f++) {
        double s = 0.0;
        for (int64_t i = 0; i < hop; i++)
            s += (double)x[f * hop + i] * x[f * hop + i];
        e[f] = 10.0 * log10(s / (double)hop + 1e-12);
    }
    /* Smoothing in the power domain, so one loud frame is not averaged away in dB. */
    for (int64_t f = 0; f < nf; f++) {
        int64_t lo = f - FLOOR_SMOOTH / 2 < 0 ? 0 : f - FLOOR_SMOOTH / 2;
        int64_t hi = f + FLOOR_SMOOTH / 2 >= nf ? nf - 1 : f + FLOOR_SMOOTH / 2;
        double p = 0.0;
        for (int64_t k = lo; k <= hi; k++)
            p += pow(10.0, e[k] / 10.0);
        smooth[f] = 10.0 * log10(p / (double)(hi - lo + 1));
    }
    running_min(smooth, nf, (int64_t)(FLOOR_WINDOW_S * FRAMES_PER_SECOND), floor_db, dq);
    memcpy(sorted, e, (size_t)nf * sizeof *sorted);
    qsort(sorted, (size_t)nf, sizeof *sorted, ad_compare_doubles);
    double loud = sorted[(size_t)((double)(nf - 1) * 0.95)];
    if (loud < SILENT_DB) goto done;

    /* Speech frames, as regions. */
    int64_t nr = 0;
    for (int64_t f = 0; f < nf; f++) {
        double rise = RISE_FRACTION * (loud - floor_db[f]);
        bool speech = e[f] > floor_db[f] + (rise > MIN_RISE_DB ? rise : MIN_RISE_DB);
        if (!speech) continue;
        if (nr > 0 && r[nr - 1].end == f)
            r[nr - 1].end = f + 1;
        else
            r[nr++] = (region){f, f + 1};
    }
    /* Bridge short pauses, then drop short bursts. */
    int64_t min_gap = (int64_t)llround(o->min_silence * FRAMES_PER_SECOND);
    int64_t min_len = (int64_t)llround(o->min_speech * FRAMES_PER_SECOND);
    int64_t m = 0;
    for (int64_t i = 0; i < nr; i++) {
        if (m > 0 && r[i].start - r[m - 1].end < min_gap)
            r[m - 1].end = r[i].end;
        else
            r[m++] = r[i];
    }
    nr = 0;
    for (int64_t i = 0; i < m; i++)
        if (r[i].end - r[i].start >= min_len) r[nr++] = r[i];

    /* Pad in samples, never into the neighbour's padding: meet halfway instead. */
    int64_t pad = (int64_t)llround(o->pad * rate);
    int64_t max_len = (int64_t)floor(o->max_seconds * rate);
    size_t cap = (size_t)nr + 16;
    out = ad_malloc(cap * sizeof *out, "segments");
    if (!out) {
        rc = AD_ERR;
        goto done;
    }
    int count = 0;
    for (int64_t i = 0; i < nr; i++) {
        int64_t start = r[i].start * hop - pad, end = r[i].end * hop + pad;
        if (start < 0) start = 0;
        if (end > n) end = n;
        if (i > 0) {
            int64_t mid = (r[i - 1].end * hop + r[i].start * hop) / 2;
            if (start < mid) start = mid;
        }
        if (i + 1 < nr) {
            int64_t mid = (r[i].end * hop + r[i + 1].start * hop) / 2;
            if (end > mid) end = mid;
        }
        /* Over-long: cut at the quietest smoothed frame in the second half of the allowed
         * span, so every piece before the cut is at least half the maximum long. */
        while (end - start > max_len) {
            int64_t lo = (start + max_len / 2) / hop + 1, hi = (start + max_len) / hop - 1;
            int64_t best = hi;
            for (int64_t f = lo; f <= hi && f < nf; f++)
                if (smooth[f] < smooth[best]) best = f;
            int64_t cut = best * hop + hop / 2;
            if (cut <= start || cut - start > max_len) cut = start + max_len;
            if ((size_t)count + 1 >= cap) {
                cap *= 2;
                ad_vad_segment *grown = ad_realloc(out, cap * sizeof *out, "segments");
                if (!grown) {
                    rc = AD_ERR;
                    goto done;
                }
                out = grown;
            }
            out[count++] = (ad_vad_segment){start, cut};
            start = cut;
        }
        if ((size_t)count + 1 >= cap) {
            cap *= 2;
            ad_vad_segment *grown = ad_realloc(out, cap * sizeof *out, "segments");
            if (!grown) {
                rc = AD_ERR;
                goto done;
            }
            out = grown;
        }
        if (end > start) out[count++] = (ad_vad_segment){start, end};
    }
    *segs = out;
    *n_segs = count;
    out = NULL;
done:
    free(e);
    free(smooth);
    free(floor_db);
    free(sorted);
    free(dq);
    free(r);
    free(out);
    return rc;
}
