/* The synthetic speech-translation corpus on disk, in the ACL 60/60 layout:
 *
 *   DIR/<split>/segmented_wavs/gold/sent_N.wav            16 kHz mono, N from 1
 *   DIR/<split>/text/txt/ACL.6060.<split>.en-xx.<lang>.txt line N <-> sent_N (en, de, zh)
 *   DIR/eval/full_wavs/<talk>.wav                          sentences joined by 0.3-1.0 s pauses
 *   DIR/eval/FILE_ORDER                                    the talk ids, one a line
 *   DIR/eval/text/txt/ACL.6060.eval.en-xx.yaml             one {duration, offset, speaker_id, wav}
 *                                                          per sentence, exact to the sample
 *   DIR/synth_info.txt                                     seed and sizes
 *
 * Everything is written into DIR.tmp-<pid> and renamed to DIR at the end, so DIR is either
 * complete or absent. Text and audio depend only on the seed and the sizes (each sentence's
 * speaker and noise come from its own random stream), not on the number of worker processes. */
#ifndef AUDISTILL_DATA_SYNTH_CORPUS_H
#define AUDISTILL_DATA_SYNTH_CORPUS_H

#include <stdbool.h>
#include <stdint.h>

#include "data/synth_grammar.h"

typedef struct {
    const char *out_dir;
    uint64_t seed;
    int counts[AD_SYNTH_SPLITS];
    int talks;          /* full talks built from the eval split (0: none) */
    int jobs;           /* espeak-ng processes at a time */
    const char *espeak; /* program name or path */
    bool force;         /* replace an existing out_dir */
} ad_synth_corpus_options;

typedef struct {
    int sentences;
    double audio_seconds;
    double talk_seconds;
    double wall_seconds;
} ad_synth_corpus_stats;

int ad_synth_write_corpus(const ad_synth_corpus_options *opt, ad_synth_corpus_stats *stats);

/* "ACL.6060.<split>.en-xx.<lang>.txt" (or ".yaml" for lang NULL) into buf. */
void ad_synth_text_name(const char *split, const char *lang, char *buf, int size);

#endif
