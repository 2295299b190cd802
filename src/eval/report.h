/* Comparison of compressed models: reads each run's run.json, finds the size/quality Pareto
 * frontier per translation direction, and renders a Markdown table and gnuplot scripts for
 * the plots. It builds text only; the command writes files and runs gnuplot.
 *
 * run.json (one per run directory):
 *   {"name": "int4-24l",                      a label (default: the directory name)
 *    "bytes": 4123456789,                     size on disk of the exported model, > 0
 *    "parameters": {"layers": 24, "bits": 4}, optional, any values; shown compactly
 *    "scores": {"en-de": {"bleu": 21.3, "chrf": 51.2, "chrf++": 49.0, "comet": 0.81},
 *               "en-zh": {"bleu": 30.1}}}     per direction; each metric optional
 * Unknown top-level keys are ignored; an unknown metric is an error (a typo would otherwise
 * drop a score silently). */
#ifndef AUDISTILL_EVAL_REPORT_H
#define AUDISTILL_EVAL_REPORT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    double size, score;
} ad_pareto_point;

/* on_frontier[i] = no other point is as small or smaller AND as good or better with at least
 * one of the two strictly so. Equal points are all kept. Points with NaN are never on it. */
int ad_pareto_frontier(const ad_pareto_point *p, int n, bool *on_frontier);

enum { AD_METRIC_BLEU = 0, AD_METRIC_CHRF, AD_METRIC_CHRFPP, AD_METRIC_COMET, AD_METRIC_COUNT };
extern const char *const ad_metric_names[AD_METRIC_COUNT]; /* "bleu", "chrf", "chrf++", "comet" */

#define AD_REPORT_MAX_DIRECTIONS 8

/* One paired bootstrap test in run.json's optional "comparisons" list (`audistill run` writes
 * them for evaluate.compare):
 *   {"baseline": "ce", "direction": "en-de", "segments": 500, "samples": 1000,
 *    "bleu": {"baseline": 61.8, "system": 62.1, "delta_lo": -1.2, "delta_hi": 1.8, "p": 0.25},
 *    "chrf": {...}}                         chrf optional */
enum { AD_PAIRED_BLEU = 0, AD_PAIRED_CHRF, AD_PAIRED_METRICS };

typedef struct {
    char *baseline, *direction;
    int segments, samples; /* 0 when not given */
    /* per metric: system - baseline, its 95% interval, p; NaN when the metric is absent */
    double delta[AD_PAIRED_METRICS], lo[AD_PAIRED_METRICS], hi[AD_PAIRED_METRICS],
        p[AD_PAIRED_METRICS];
} ad_run_comparison;

typedef struct {
    char *name, *parameters; /* parameters: "k=v, k=v" ("" when none) */
    char *dir;
    int64_t bytes;
    int n_dirs;
    char *direction[AD_REPORT_MAX_DIRECTIONS];
    double score[AD_REPORT_MAX_DIRECTIONS][AD_METRIC_COUNT]; /* NaN when absent */
    int n_comparisons;
    ad_run_comparison *comparisons;
} ad_run_info;

/* Parses one run.json (`text`); `source` names it in errors, `dir` is the default name. */
int ad_run_parse(const char *text, const char *source, const char *dir, ad_run_info *run);
void ad_run_free(ad_run_info *run);

/* All directions of the runs, sorted, deduplicated (pointers into the runs). */
int ad_report_directions(const ad_run_info *runs, int n, const char **dirs, int *n_dirs);

/* The Markdown report: runs sorted by size (then name), a table per direction's scores and a
 * Pareto mark per direction. Caller frees. */
char *ad_report_markdown(const ad_run_info *runs, int n);

/* A second Markdown table against one run (the baseline, named `baseline`): every run's size
 * and BLEU per direction as a percentage of the baseline's, so a target such as "at most 25%
 * of the teacher's bytes, at least 90% of its BLEU" is read off directly. Fails when no run
 * has that name. Caller frees. */
char *ad_report_relative(const ad_run_info *runs, int n, const char *baseline);

/* The runs' paired comparisons as a Markdown section; "" when no run has any. Caller frees. */
char *ad_report_comparisons(const ad_run_info *runs, int n);

/* A gnuplot script plotting BLEU against size (MB, log x) for one direction: frontier points
 * connected and labelled, dominated points grey. Returns NULL (no error) if no run has BLEU
 * for that direction. */
char *ad_report_gnuplot(const ad_run_info *runs, int n, const char *direction,
                        const char *png_path);

#endif
