/* BLEU and chrF/chrF++ exactly as sacreBLEU 2.x computes them: the 13a and zh tokenizers
 * (including the zh tokenizer's character ranges as its source states them), exp smoothing,
 * the brevity penalty, corpus statistics summed over sentences, effective order for sentence
 * BLEU, and chrF's whitespace removal and punctuation splitting for word n-grams. Python's
 * notion of whitespace (str.split / str.strip) is reproduced for Unicode input. */
#ifndef AUDISTILL_EVAL_SACREBLEU_H
#define AUDISTILL_EVAL_SACREBLEU_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { AD_BLEU_TOK_13A = 0, AD_BLEU_TOK_ZH, AD_BLEU_TOK_NONE } ad_bleu_tokenizer;

/* Python's str.isspace() for one code point: what str.split() and str.strip() treat as
 * whitespace, which sacreBLEU (and mweralign's line handling) rely on. */
bool ad_py_isspace(int32_t c);

#define AD_BLEU_MAX_ORDER 4

typedef struct {
    int64_t correct[AD_BLEU_MAX_ORDER], total[AD_BLEU_MAX_ORDER];
    int64_t sys_len, ref_len;
} ad_bleu_stats;

typedef struct {
    double score, bp;
    double precisions[AD_BLEU_MAX_ORDER];
    int64_t sys_len, ref_len;
} ad_bleu_result;

/* Tokenized form of a line (caller frees): what sacreBLEU's tokenizer returns. */
char *ad_bleu_tokenize(const char *line, ad_bleu_tokenizer tok);
/* Adds one hypothesis/reference pair's statistics. */
int ad_bleu_add(ad_bleu_stats *st, const char *hyp, const char *ref, ad_bleu_tokenizer tok);
/* BLEU from statistics; effective_order as sacreBLEU's sentence_bleu uses it. */
ad_bleu_result ad_bleu_score(const ad_bleu_stats *st, bool effective_order);

#define AD_CHRF_MAX_ORDER 8

typedef struct {
    int char_order, word_order;          /* 6, 0 = chrF; 6, 2 = chrF++ */
    double beta;                         /* 2 */
    int64_t stats[AD_CHRF_MAX_ORDER][3]; /* hyp, ref, match counts per order */
} ad_chrf_stats;

void ad_chrf_init(ad_chrf_stats *st, int char_order, int word_order, double beta);
int ad_chrf_add(ad_chrf_stats *st, const char *hyp, const char *ref);
double ad_chrf_score(const ad_chrf_stats *st);

#endif
