#include "eval/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

const char *const ad_metric_names[AD_METRIC_COUNT] = {"bleu", "chrf", "chrf++", "comet"};
static const char *const metric_titles[AD_METRIC_COUNT] = {"BLEU", "chrF", "chrF++", "COMET"};

int ad_pareto_frontier(const ad_pareto_point *p, int n, bool *on_frontier) {
    if (n < 0 || (n > 0 && (!p || !on_frontier))) return ad_fail("pareto: bad arguments");
    for (int i = 0; i < n; i++) {
        bool ok = !isnan(p[i].size) && !isnan(p[i].score);
        for (int j = 0; ok && j < n; j++) {
            if (j == i || isnan(p[j].size) || isnan(p[j].score)) continue;
            if (p[j].size <= p[i].size && p[j].score >= p[i].score &&
                (p[j].size < p[i].size || p[j].score > p[i].score))
                ok = false;
        }
        on_frontier[i] = ok;
    }
    return AD_OK;
}

/* ---- run.json ----------------------------------------------------------------------------- */

void ad_run_free(ad_run_info *run) {
    free(run->name), free(run->parameters), free(run->dir);
    for (int d = 0; d < run->n_dirs; d++)
        free(run->direction[d]);
    for (int c = 0; c < run->n_comparisons; c++)
        free(run->comparisons[c].baseline), free(run->comparisons[c].direction);
    free(run->comparisons);
    memset(run, 0, sizeof *run);
}

/* Parameters as "k=v, k=v": numbers as %g, strings bare, anything else as compact JSON. */
static char *format_parameters(const cJSON *params) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        ad_fail("out of memory formatting parameters");
        return NULL;
    }
    int k = 0;
    for (const cJSON *it = params ? params->child : NULL; it; it = it->next, k++) {
        fprintf(f, "%s%s=", k ? ", " : "", it->string ? it->string : "?");
        if (cJSON_IsNumber(it)) {
            fprintf(f, "%g", it->valuedouble);
        } else if (cJSON_IsString(it)) {
            fputs(it->valuestring, f);
        } else {
            char *s = cJSON_PrintUnformatted(it);
            fputs(s ? s : "?", f);
            free(s);
        }
    }
    if (fclose(f) != 0) {
        free(buf);
        ad_fail("out of memory formatting parameters");
        return NULL;
    }
    return buf;
}

static int parse_paired(const cJSON *o, const char *source, int i, const char *metric,
                        ad_run_comparison *c, int k) {
    c->delta[k] = c->lo[k] = c->hi[k] = c->p[k] = NAN;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, metric);
    if (!m) return AD_OK;
    const char *keys[] = {"baseline", "system", "delta_lo", "delta_hi", "p"};
    double v[5];
    for (int j = 0; j < 5; j++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(m, keys[j]);
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
            return ad_fail("%s: comparisons[%d].%s.%s must be a number", source, i, metric,
                           keys[j]);
        v[j] = x->valuedouble;
    }
    if (!(v[4] > 0 && v[4] <= 1) || v[2] > v[3])
        return ad_fail("%s: comparisons[%d].%s: p must be in (0, 1] and delta_lo <= delta_hi",
                       source, i, metric);
    c->delta[k] = v[1] - v[0], c->lo[k] = v[2], c->hi[k] = v[3], c->p[k] = v[4];
    return AD_OK;
}

static int parse_comparisons(const cJSON *list, const char *source, ad_run_info *run) {
    if (!list) return AD_OK;
    if (!cJSON_IsArray(list))
        return ad_fail("%s: \"comparisons\" must be a list of paired tests", source);
    const int n = cJSON_GetArraySize(list);
    run->comparisons = ad_calloc((size_t)n + 1, sizeof *run->comparisons, "comparisons");
    if (!run->comparisons) return AD_ERR;
    int i = 0;
    for (const cJSON *o = list->child; o; o = o->next, i++) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "baseline"),
                    *d = cJSON_GetObjectItemCaseSensitive(o, "direction"),
                    *seg = cJSON_GetObjectItemCaseSensitive(o, "segments"),
                    *smp = cJSON_GetObjectItemCaseSensitive(o, "samples");
        if (!cJSON_IsString(b) || !cJSON_IsString(d))
            return ad_fail("%s: comparisons[%d] needs \"baseline\" and \"direction\" strings",
                           source, i);
        ad_run_comparison *c = &run->comparisons[run->n_comparisons++];
        c->baseline = ad_strdup(b->valuestring, "comparison");
        c->direction = ad_strdup(d->valuestring, "comparison");
        if (!c->baseline || !c->direction) return AD_ERR;
        c->segments = cJSON_IsNumber(seg) && seg->valuedouble >= 1 && seg->valuedouble < 1e9
                          ? (int)seg->valuedouble
                          : 0;
        c->samples = cJSON_IsNumber(smp) && smp->valuedouble >= 1 && smp->valuedouble < 1e9
                         ? (int)smp->valuedouble
                         : 0;
        AD_TRY(parse_paired(o, source, i, "bleu", c, AD_PAIRED_BLEU));
        AD_TRY(parse_paired(o, source, i, "chrf", c, AD_PAIRED_CHRF));
        if (isnan(c->delta[AD_PAIRED_BLEU]))
            return ad_fail("%s: comparisons[%d] has no \"bleu\" figures", source, i);
    }
    return AD_OK;
}

int ad_run_parse(const char *text, const char *source, const char *dir, ad_run_info *run) {
    memset(run, 0, sizeof *run);
    cJSON *root = cJSON_Parse(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ad_fail("%s: not a JSON object", source);
    }
    int rc = AD_ERR;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name"),
                *bytes = cJSON_GetObjectItemCaseSensitive(root, "bytes"),
                *params = cJSON_GetObjectItemCaseSensitive(root, "parameters"),
                *scores = cJSON_GetObjectItemCaseSensitive(root, "scores");
    if (name && !cJSON_IsString(name)) {
        ad_fail("%s: \"name\" must be a string", source);
        goto done;
    }
    if (!cJSON_IsNumber(bytes) || !(bytes->valuedouble > 0) || bytes->valuedouble > 9e18) {
        ad_fail("%s: \"bytes\" (size on disk) must be a positive number", source);
        goto done;
    }
    if (params && !cJSON_IsObject(params)) {
        ad_fail("%s: \"parameters\" must be an object", source);
        goto done;
    }
    if (!cJSON_IsObject(scores)) {
        ad_fail("%s: \"scores\" must be an object of directions, e.g. {\"en-de\": {\"bleu\": "
                "21.3}}",
                source);
        goto done;
    }
    run->bytes = (int64_t)bytes->valuedouble;
    run->name = ad_strdup(name ? name->valuestring : dir, "run name");
    run->dir = ad_strdup(dir, "run directory");
    run->parameters = format_parameters(params);
    if (!run->name || !run->dir || !run->parameters) goto done;
    for (const cJSON *d = scores->child; d; d = d->next) {
        if (!cJSON_IsObject(d)) {
            ad_fail("%s: scores for \"%s\" must be an object", source, d->string);
            goto done;
        }
        if (run->n_dirs == AD_REPORT_MAX_DIRECTIONS) {
            ad_fail("%s: more than %d directions", source, AD_REPORT_MAX_DIRECTIONS);
            goto done;
        }
        for (const char *c = d->string; *c; c++) {
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '_')) {
                ad_fail("%s: direction \"%s\" may only use letters, digits, '-' and '_'", source,
                        d->string);
                goto done;
            }
        }
        int k = run->n_dirs;
        run->direction[k] = ad_strdup(d->string, "direction");
        if (!run->direction[k]) goto done;
        run->n_dirs++;
        for (int m = 0; m < AD_METRIC_COUNT; m++)
            run->score[k][m] = NAN;
        for (const cJSON *s = d->child; s; s = s->next) {
            int m = 0;
            while (m < AD_METRIC_COUNT && strcmp(s->string, ad_metric_names[m]) != 0)
                m++;
            if (m == AD_METRIC_COUNT) {
                ad_fail("%s: unknown score \"%s\" for %s (expected bleu, chrf, chrf++, comet)",
                        source, s->string, d->string);
                goto done;
            }
            if (!cJSON_IsNumber(s) || !isfinite(s->valuedouble)) {
                ad_fail("%s: score %s for %s must be a number", source, s->string, d->string);
                goto done;
            }
            run->score[k][m] = s->valuedouble;
        }
    }
    if (parse_comparisons(cJSON_GetObjectItemCaseSensitive(root, "comparisons"), source, run) < 0)
        goto done;
    rc = AD_OK;
done:
    if (rc < 0) ad_run_free(run);
    cJSON_Delete(root);
    return rc;
}

/* ---- report --------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int ad_report_directions(const ad_run_info *runs, int n, const char **dirs, int *n_dirs) {
    *n_dirs = 0;
    for (int r = 0; r < n; r++) {
        for (int d = 0; d < runs[r].n_dirs; d++) {
            bool seen = false;
            for (int k = 0; k < *n_dirs && !seen; k++)
                seen = !strcmp(dirs[k], runs[r].direction[d]);
            if (seen) continue;
            if (*n_dirs == AD_REPORT_MAX_DIRECTIONS)
                return ad_fail("the runs have more than %d directions", AD_REPORT_MAX_DIRECTIONS);
            dirs[(*n_dirs)++] = runs[r].direction[d];
        }
    }
    qsort(dirs, (size_t)*n_dirs, sizeof *dirs, cmp_str);
    return AD_OK;
}

static double run_score(const ad_run_info *run, const char *dir, int metric) {
    for (int d = 0; d < run->n_dirs; d++)
        if (!strcmp(run->direction[d], dir)) return run->score[d][metric];
    return NAN;
}

static const ad_run_info *sort_base;
static int cmp_size(const void *a, const void *b) {
    const ad_run_info *x = &sort_base[*(const int *)a], *y = &sort_base[*(const int *)b];
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int *order_by_size(const ad_run_info *runs, int n) {
    int *order = ad_malloc(sizeof *order * (size_t)(n ? n : 1), "run order");
    if (!order) return NULL;
    for (int i = 0; i < n; i++)
        order[i] = i;
    sort_base = runs;
    qsort(order, (size_t)n, sizeof *order, cmp_size);
    return order;
}

/* BLEU frontier of one direction over all runs (runs without BLEU there are off it). */
static int bleu_frontier(const ad_run_info *runs, int n, const char *dir, bool *front) {
    ad_pareto_point *p = ad_malloc(sizeof *p * (size_t)(n ? n : 1), "pareto points");
    if (!p) return AD_ERR;
    for (int i = 0; i < n; i++)
        p[i] = (ad_pareto_point){(double)runs[i].bytes, run_score(&runs[i], dir, AD_METRIC_BLEU)};
    int rc = ad_pareto_frontier(p, n, front);
    free(p);
    return rc;
}

/* Markdown cells must not break the table. */
static void md_cell(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", f);
        else if (*s == '\n' || *s == '\r')
            fputc(' ', f);
        else
            fputc(*s, f);
    }
}

char *ad_report_markdown(const ad_run_info *runs, int n) {
    const char *dirs[AD_REPORT_MAX_DIRECTIONS];
    int n_dirs;
    if (ad_report_directions(runs, n, dirs, &n_dirs) < 0) return NULL;
    bool used[AD_REPORT_MAX_DIRECTIONS][AD_METRIC_COUNT] = {{false}};
    for (int d = 0; d < n_dirs; d++)
        for (int r = 0; r < n; r++)
            for (int m = 0; m < AD_METRIC_COUNT; m++)
                used[d][m] |= !isnan(run_score(&runs[r], dirs[d], m));
    bool *front = ad_calloc((size_t)(n ? n : 1) * AD_REPORT_MAX_DIRECTIONS, sizeof *front, "flags");
    int *order = order_by_size(runs, n);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = front && order ? open_memstream(&buf, &len) : NULL;
    if (!f) {
        free(front), free(order);
        if (front && order) ad_fail("out of memory building the report");
        return NULL;
    }
    for (int d = 0; d < n_dirs; d++)
        if (bleu_frontier(runs, n, dirs[d], front + (size_t)d * (size_t)n) < 0) goto fail;
    fprintf(f,
            "# audistill report: %d runs\n\n"
            "Sorted by size on disk (1 MB = 10^6 bytes). Pareto: on the size/BLEU frontier of "
            "that direction (no other run is as small or smaller and scores as high or higher, "
            "one of them strictly).\n\n| Run | Size (MB) | Parameters |",
            n);
    for (int d = 0; d < n_dirs; d++)
        for (int m = 0; m < AD_METRIC_COUNT; m++)
            if (used[d][m]) fprintf(f, " %s %s |", dirs[d], metric_titles[m]);
    fprintf(f, " Pareto |\n|---|---:|---|");
    for (int d = 0; d < n_dirs; d++)
        for (int m = 0; m < AD_METRIC_COUNT; m++)
            if (used[d][m]) fputs("---:|", f);
    fputs("---|\n", f);
    for (int k = 0; k < n; k++) {
        const ad_run_info *r = &runs[order[k]];
        fputs("| ", f);
        md_cell(f, r->name);
        fprintf(f, " | %.1f | ", (double)r->bytes / 1e6);
        md_cell(f, r->parameters[0] ? r->parameters : "-");
        fputs(" |", f);
        for (int d = 0; d < n_dirs; d++) {
            for (int m = 0; m < AD_METRIC_COUNT; m++) {
                if (!used[d][m]) continue;
                double v = run_score(r, dirs[d], m);
                if (isnan(v))
                    fputs(" - |", f);
                else
                    fprintf(f, m == AD_METRIC_COMET ? " %.4f |" : " %.2f |", v);
            }
        }
        int marks = 0;
        for (int d = 0; d < n_dirs; d++)
            if (front[(size_t)d * (size_t)n + (size_t)order[k]])
                fprintf(f, "%s%s", marks++ ? ", " : " ", dirs[d]);
        fputs(marks ? " |\n" : " - |\n", f);
    }
    if (fclose(f) != 0) {
        f = NULL;
        ad_fail("out of memory building the report");
        goto fail;
    }
    free(front), free(order);
    return buf;
fail:
    if (f) fclose(f);
    free(buf), free(front), free(order);
    return NULL;
}

char *ad_report_comparisons(const ad_run_info *runs, int n) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        ad_fail("out of memory building the report");
        return NULL;
    }
    bool any = false;
    for (int r = 0; r < n; r++)
        for (int c = 0; c < runs[r].n_comparisons; c++) {
            const ad_run_comparison *x = &runs[r].comparisons[c];
            if (!any)
                fputs("\n## Paired comparisons\n\nPaired bootstrap resampling as `sacrebleu "
                      "--paired-bs` computes it: the segments are drawn with replacement, both "
                      "systems scored on every draw. Difference: system - baseline on all "
                      "segments; interval: the middle 95% of the resampled differences; p: "
                      "sacreBLEU's p-value, the share of resampled differences, centred on zero, "
                      "larger than the real one (below 0.05: significant).\n\n| System | Baseline "
                      "| Direction | Segments | Resamples | "
                      "BLEU difference | 95% interval | p | chrF difference | 95% interval | p "
                      "|\n|---|---|---|---:|---:|---:|---|---:|---:|---|---:|\n",
                      f);
            any = true;
            fputs("| ", f);
            md_cell(f, runs[r].name);
            fputs(" | ", f);
            md_cell(f, x->baseline);
            fputs(" | ", f);
            md_cell(f, x->direction);
            fprintf(f, " | %d | %d |", x->segments, x->samples);
            for (int k = 0; k < AD_PAIRED_METRICS; k++) {
                if (isnan(x->delta[k]))
                    fputs(" - | - | - |", f);
                else
                    fprintf(f, " %+.2f | %+.2f .. %+.2f | %.3f |", x->delta[k], x->lo[k], x->hi[k],
                            x->p[k]);
            }
            fputc('\n', f);
        }
    if (fclose(f) != 0) {
        free(buf);
        ad_fail("out of memory building the report");
        return NULL;
    }
    return buf;
}

char *ad_report_relative(const ad_run_info *runs, int n, const char *baseline) {
    const ad_run_info *base = NULL;
    for (int r = 0; r < n && !base; r++)
        if (!strcmp(runs[r].name, baseline)) base = &runs[r];
    if (!base) {
        ad_fail("report: the baseline \"%s\" is not one of the runs", baseline);
        return NULL;
    }
    const char *dirs[AD_REPORT_MAX_DIRECTIONS];
    int n_dirs;
    if (ad_report_directions(runs, n, dirs, &n_dirs) < 0) return NULL;
    int *order = order_by_size(runs, n);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = order ? open_memstream(&buf, &len) : NULL;
    if (!f) {
        if (order) ad_fail("out of memory building the report");
        free(order);
        return NULL;
    }
    fprintf(f, "\n## Against %s\n\nSize and BLEU as a percentage of %s's (%.1f MB", base->name,
            base->name, (double)base->bytes / 1e6);
    for (int d = 0; d < n_dirs; d++) {
        double b = run_score(base, dirs[d], AD_METRIC_BLEU);
        if (isnan(b))
            fprintf(f, "; no %s BLEU", dirs[d]);
        else
            fprintf(f, "; %s BLEU %.2f", dirs[d], b);
    }
    fputs(").\n\n| Run | Size (% of baseline) |", f);
    for (int d = 0; d < n_dirs; d++)
        fprintf(f, " %s BLEU (%% of baseline) |", dirs[d]);
    fputs("\n|---|---:|", f);
    for (int d = 0; d < n_dirs; d++)
        fputs("---:|", f);
    fputc('\n', f);
    for (int k = 0; k < n; k++) {
        const ad_run_info *r = &runs[order[k]];
        fputs("| ", f);
        md_cell(f, r->name);
        fprintf(f, " | %.1f |", 100.0 * (double)r->bytes / (double)base->bytes);
        for (int d = 0; d < n_dirs; d++) {
            double v = run_score(r, dirs[d], AD_METRIC_BLEU),
                   b = run_score(base, dirs[d], AD_METRIC_BLEU);
            /* A zero baseline score has no meaningful percentage. */
            if (isnan(v) || isnan(b) || !(b > 0))
                fputs(" - |", f);
            else
                fprintf(f, " %.1f |", 100.0 * v / b);
        }
        fputc('\n', f);
    }
    free(order);
    if (fclose(f) != 0) {
        free(buf);
        ad_fail("out of memory building the report");
        return NULL;
    }
    return buf;
}

/* A string as a gnuplot single-quoted literal body ('' stands for '). */
static void gp_quote(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        if (*s != '\n' && *s != '\r') fputc(*s, f);
    }
    fputc('\'', f);
}

/* A datablock row: size, BLEU, then the label as a double-quoted field (no quotes inside). */
static void gp_row(FILE *f, const ad_run_info *r, double bleu) {
    fprintf(f, "%.6f %.4f \"", (double)r->bytes / 1e6, bleu);
    for (const char *s = r->name; *s; s++)
        fputc(*s == '"' || *s == '\n' || *s == '\\' ? '\'' : *s, f);
    fputs("\"\n", f);
}

char *ad_report_gnuplot(const ad_run_info *runs, int n, const char *direction,
                        const char *png_path) {
    bool *front = ad_calloc((size_t)(n ? n : 1), sizeof *front, "flags");
    int *order = order_by_size(runs, n);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = NULL;
    if (!front || !order || bleu_frontier(runs, n, direction, front) < 0) goto fail;
    int n_front = 0, n_dom = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(run_score(&runs[i], direction, AD_METRIC_BLEU))) continue;
        n_front += front[i], n_dom += !front[i];
    }
    if (n_front == 0) {
        free(front), free(order);
        return NULL;
    }
    f = open_memstream(&buf, &len);
    if (!f) {
        ad_fail("out of memory building the plot script");
        goto fail;
    }
    fputs("# written by audistill report: BLEU against size on disk\n"
          "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
          "  set terminal pngcairo size 1000,650 noenhanced font ',10'\n"
          "} else {\n"
          "  set terminal png size 1000,650 noenhanced\n"
          "}\n"
          "set output ",
          f);
    gp_quote(f, png_path);
    fprintf(f,
            "\nset title 'BLEU against size on disk, %s (Pareto frontier connected)'\n"
            "set logscale x\nset xlabel 'size on disk (MB, log scale)'\nset ylabel 'BLEU'\n"
            "set grid\nset key bottom right\nset offsets graph 0.05, graph 0.12, graph 0.08, "
            "graph 0.08\n",
            direction);
    /* Frontier in size order so the line runs left to right. */
    fputs("$frontier << EOD\n", f);
    for (int k = 0; k < n; k++) {
        double b = run_score(&runs[order[k]], direction, AD_METRIC_BLEU);
        if (!isnan(b) && front[order[k]]) gp_row(f, &runs[order[k]], b);
    }
    fputs("EOD\n", f);
    if (n_dom) {
        fputs("$dominated << EOD\n", f);
        for (int k = 0; k < n; k++) {
            double b = run_score(&runs[order[k]], direction, AD_METRIC_BLEU);
            if (!isnan(b) && !front[order[k]]) gp_row(f, &runs[order[k]], b);
        }
        fputs("EOD\n", f);
    }
    fputs("plot ", f);
    if (n_dom)
        fputs("$dominated using 1:2 with points pt 7 ps 1.2 lc rgb '#b0b0b0' title 'dominated', "
              "$dominated using 1:2:3 with labels offset char 1,-0.8 left tc rgb '#909090' "
              "notitle, ",
              f);
    fputs("$frontier using 1:2 with linespoints pt 7 ps 1.4 lw 2 lc rgb '#c0392b' "
          "title 'Pareto frontier', "
          "$frontier using 1:2:3 with labels offset char 1,0.8 left tc rgb '#000000' notitle\n",
          f);
    if (fclose(f) != 0) {
        f = NULL;
        ad_fail("out of memory building the plot script");
        goto fail;
    }
    free(front), free(order);
    return buf;
fail:
    if (f) fclose(f);
    free(buf), free(front), free(order);
    return NULL;
}
