/* Energy-based segmentation of long recordings (talks) into pieces no longer than a maximum:
 * frame energies against an adaptive noise floor, short pauses bridged, padding around speech,
 * over-long speech cut at its quietest point. Also the one formatter of segmentation YAML
 * entries (`- {duration: D, offset: O, speaker_id: S, wav: W}`), which `audistill synth` uses
 * for its talks too. It reads and writes nothing itself. */
#ifndef AUDISTILL_DATA_SEGMENT_H
#define AUDISTILL_DATA_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double max_seconds; /* no segment is longer */
    double min_silence; /* pauses shorter than this stay inside a segment */
    double pad;         /* seconds of context kept before and after speech */
    double min_speech;  /* energy bursts shorter than this are dropped as noise */
} ad_vad_options;

/* Defaults: max 20 s, min silence 0.3 s, pad 0.1 s, min speech 0.15 s. */
void ad_vad_defaults(ad_vad_options *o);

typedef struct {
    int64_t start, end; /* samples, [start, end) */
} ad_vad_segment;

/* Segments mono samples at `rate` Hz. Segments are in order, do not overlap, and each spans at
 * most max_seconds. No speech found gives zero segments. *segs is malloc'ed (caller frees). */
int ad_vad_segment_audio(const float *x, int64_t n, int rate, const ad_vad_options *o,
                         ad_vad_segment **segs, int *n_segs);

/* Seconds `samples / rate` as the shortest decimal that is exact for 16 kHz ("2.8125", "0.59"). */
void ad_format_sample_seconds(int64_t samples, int rate, char *buf, int size);

/* One segmentation YAML entry, with newline, into buf; returns its length (as snprintf). */
int ad_segmentation_entry(char *buf, size_t size, int64_t start, int64_t length, int rate,
                          const char *speaker, const char *wav);

#endif
