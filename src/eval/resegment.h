/* Resegmentation of a hypothesis stream onto reference segments, as mwerSegmenter (the
 * `mweralign` package) does it: a Levenshtein alignment of the whole hypothesis token stream
 * against the references joined by segment markers, where a marker costs nothing and
 * records where the hypothesis was cut; the cuts of the cheapest path give exactly one
 * hypothesis line per reference line. Tokens, case folding, tie-breaking and the quirks of
 * the first DP column follow mweralign's C++ code so the output is the same line for line.
 * Known, deliberate differences (mweralign's input conventions, not the algorithm): one
 * reference per line (mweralign reads " ### " and, with -m cj, a tab as separators of
 * alternative references), a final empty reference line keeps its output line (mweralign
 * loses it), and a reference word "</s>" is a word (mweralign's segment marker).
 * This module owns the tokenization and the DP; it reads no files. */
#ifndef AUDISTILL_EVAL_RESEGMENT_H
#define AUDISTILL_EVAL_RESEGMENT_H

#include <stdint.h>

typedef enum {
    /* Whitespace-separated words (mweralign -m none), for en/de. */
    AD_RESEG_WORDS = 0,
    /* Every non-Latin-1 character is a token and every run of Latin-1 characters (spaces
     * included) is one token (mweralign -m cj -l zh), for zh. */
    AD_RESEG_CHARS,
} ad_reseg_mode;

typedef struct {
    char **lines; /* n_lines == number of reference segments; caller frees with ad_reseg_free */
    int n_lines;
    int64_t cost; /* edit operations on the best path */
    int64_t n_ref_tokens, n_hyp_tokens;
} ad_reseg_result;

/* Aligns the hypothesis (its lines are only a stream: they are stripped and joined with
 * spaces) to the reference segments. Memory is O(hyp tokens x segments) 4-byte cells for the
 * back-pointers plus O(reference tokens); a document whose table would exceed
 * AD_RESEG_MAX_TABLE_BYTES is refused with a message (split it into documents). */
int ad_resegment(const char *const *refs, int n_refs, const char *const *hyp, int n_hyp,
                 ad_reseg_mode mode, ad_reseg_result *out);
void ad_reseg_free(ad_reseg_result *r);

#define AD_RESEG_MAX_TABLE_BYTES ((size_t)4 << 30)

#endif
