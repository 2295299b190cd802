/* Speech-translation data sets as lists of segments: where the audio is (file, offset,
 * duration), which talk it belongs to, and its texts per language. Reads the ACL 60/60 layout
 * as distributed (and as `audistill synth` writes it), segmentation YAML lists of full talks,
 * and a generic manifest (TSV or YAML) for unconstrained data. Never reads audio itself: every
 * referenced file is checked to exist so problems surface before hours of work. */
#ifndef AUDISTILL_DATA_DATASET_H
#define AUDISTILL_DATA_DATASET_H

#include <stdbool.h>

#define AD_MAX_LANGS 4

typedef struct {
    char *audio;              /* path */
    double offset;            /* seconds */
    double duration;          /* seconds; <= 0 means to the end of the file */
    char *talk;               /* talk / speaker id ("" when unknown) */
    char *text[AD_MAX_LANGS]; /* per language of the dataset; NULL when absent */
} ad_segment;

typedef struct {
    int n_langs;
    char langs[AD_MAX_LANGS][8]; /* e.g. "en", "de", "zh"; index matches ad_segment.text */
    int n_segments;
    ad_segment *segments;
    char *source; /* what was loaded, for messages and provenance */
} ad_dataset;

/* ROOT/SPLIT/segmented_wavs/gold/sent_N.wav with ROOT/SPLIT/text/txt/ACL.6060.SPLIT.en-xx.LANG.txt
 * (line N <-> sent_N) for every language in `langs` (e.g. {"en","de","zh"}). Talk ids come from
 * the segmentation YAML (ROOT/SPLIT/text/txt/ACL.6060.SPLIT.en-xx.yaml or `segments_yaml`) when
 * present: its entries must correspond line by line. */
int ad_dataset_load_acl(const char *root, const char *split, int n_langs, const char *const *langs,
                        const char *segments_yaml, ad_dataset *ds);
/* A manifest: .tsv (header row naming columns audio, offset, duration, talk and language codes)
 * or .yaml (a list of mappings with the same keys). Relative audio paths are relative to the
 * manifest's directory. */
int ad_dataset_load_manifest(const char *path, ad_dataset *ds);
/* A segmentation YAML list of `{duration, offset, speaker_id, wav}` entries; wav paths are
 * resolved against wav_dir. Texts stay NULL. */
int ad_dataset_load_segmentation(const char *yaml_path, const char *wav_dir, ad_dataset *ds);
void ad_dataset_free(ad_dataset *ds);
/* Index of a language in the data set, or -1. */
int ad_dataset_lang(const ad_dataset *ds, const char *lang);

#endif
