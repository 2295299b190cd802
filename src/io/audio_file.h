/* Audio files: decoding (WAV, FLAC, OGG, anything libsndfile reads) to mono float samples at
 * a requested rate (channels averaged, libsoxr high-quality resampling), reading only the
 * requested time range, and writing 16-bit PCM mono WAV atomically. It owns nothing about
 * features: the log-mel front end (src/audio/mel.h) takes the samples from here. */
#ifndef AUDISTILL_IO_AUDIO_FILE_H
#define AUDISTILL_IO_AUDIO_FILE_H

#include <stdint.h>

#include "core/error.h"

typedef struct {
    int sample_rate;
    int channels;
    int64_t frames;  /* samples per channel */
    char format[64]; /* e.g. "FLAC (Free Lossless Audio Codec)" */
} ad_audio_info;

/* Header facts of an audio file; fails with a message naming the file when it is missing,
 * unreadable, not audio, or holds no samples. */
int ad_audio_probe(const char *path, ad_audio_info *info);

/* Reads [offset_s, offset_s + duration_s) of `path` (duration_s <= 0: to the end; a range
 * running past the end is cut there) as mono float samples at target_rate Hz. Only the
 * requested range (plus a short margin the resampler needs at its edges) is decoded, and a
 * range read equals the same slice of a whole-file read up to float rounding.
 * Output sample j stands for the time offset_s + j / target_rate; the whole file gives
 * round(frames * target_rate / sample_rate) samples. An offset at or past the end is an
 * error. *samples is malloc'ed (caller frees). */
int ad_audio_read(const char *path, double offset_s, double duration_s, int target_rate,
                  float **samples, int64_t *n);

/* Writes mono samples as 16-bit PCM WAV: x * 32768 rounded, clipped to [-32768, 32767], so
 * samples read back from a 16-bit file are written back unchanged. Written to a temporary
 * name and renamed, so `path` never holds a partial file. */
int ad_audio_write_wav16(const char *path, const float *samples, int64_t n, int sample_rate);

#endif
