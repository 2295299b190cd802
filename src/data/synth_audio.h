/* Speech for the synthetic set: picks a speaker (espeak-ng voice, variant, rate, pitch, noise),
 * runs espeak-ng as a child process (argument vector, no shell), brings its output to 16 kHz
 * through the audio file API, and adds white or pink noise at a chosen SNR. It owns no layout:
 * synth_corpus.c decides where the audio goes. */
#ifndef AUDISTILL_DATA_SYNTH_AUDIO_H
#define AUDISTILL_DATA_SYNTH_AUDIO_H

#include <stdbool.h>
#include <stdint.h>

#include "core/rng.h"

#define AD_SYNTH_SAMPLE_RATE 16000

typedef struct {
    char voice[48]; /* espeak-ng -v argument, e.g. "en-gb-x-rp+f2" */
    int rate;       /* words per minute */
    int pitch;      /* 0..99 */
    float snr_db;   /* speech power over noise power */
    bool pink;      /* pink (1/f) instead of white noise */
} ad_synth_voice;

/* A random speaker: voice among en, en-us, en-gb-x-rp, en-029, en-gb-scotland, plain or with a
 * variant +m1..+m7, +f1..+f4; rate 140..190 wpm; pitch 30..70; SNR 25..35 dB. */
void ad_synth_pick_voice(ad_rng *rng, ad_synth_voice *v);

/* Speaks `text` with `espeak` (a program name looked up in PATH, or a path) into the scratch
 * file `tmp_wav` and returns its samples at 16 kHz (malloc'ed). Fails naming the program, voice
 * and exit status when espeak-ng cannot be started or does not exit with 0. */
int ad_synth_speak(const char *espeak, const char *text, const ad_synth_voice *v,
                   const char *tmp_wav, float **samples, int64_t *n);

/* Adds noise so that active-speech power / noise power = snr_db, then scales the sum down if it
 * would clip. *noise_rms: the RMS of the added noise (after any scaling). */
int ad_synth_add_noise(ad_rng *rng, float *x, int64_t n, float snr_db, bool pink, float *noise_rms);

/* Adds noise of a given RMS (for pauses between sentences). */
int ad_synth_noise(ad_rng *rng, float *x, int64_t n, float rms, bool pink);

#endif
