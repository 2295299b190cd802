/* audistill run: one job file, the whole compression path as resumable stages (each stage one
 * audistill command in a child process), then translate + score + size of every listed model
 * and one report. What is skipped, rerun or resumed is decided here from the stamps that
 * src/eval/pipeline.c reads and writes. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/error.h"
#include "eval/pipeline.h"
#include "eval/sacrebleu.h"
#include "eval/significance.h"
#include "io/file.h"

static const char *usage =
    "audistill run JOB.yaml [--work DIR] [--from STAGE | --only STAGE] [--dry-run] [--force]";

static void print_help(void) {
    printf(
        "usage: %s\n\n"
        "Runs the stages of a job file in order, each one audistill command in a child process\n"
        "(its progress lines pass through), then evaluates the listed models. Paths are relative\n"
        "to the current directory; {work} stands for work_dir (--work replaces it).\n\n"
        "  work_dir: out/demo-run\n"
        "  stages:\n"
        "    - name: prune                       # unique: letters, digits . _ + -\n"
        "      command: [prune, --config, \"{config}\"]\n"
        "      config: {teacher: ..., output: \"{work}/pruned\", ...}  # optional: the command's\n"
        "                                        # job file inline, written to\n"
        "                                        # {work}/.stages/<name>.yaml = {config}\n"
        "      outputs: [\"{work}/pruned\"]        # must exist after the stage\n"
        "      resume: \"{work}/kd\"               # optional: kept when interrupted (training)\n"
        "  evaluate:\n"
        "    synth_split: \"{work}/synth/eval\"    # or list: FILE + references: {de: F, zh: F}\n"
        "    langs: [de, zh]                     # default both\n"
        "    limit: 200                          # first N segments (0 = all)\n"
        "    beam: 1\n"
        "    max_new_tokens: 128\n"
        "    models:\n"
        "      - {name: teacher, path: tests/fixtures/tiny_b, parameters: {bits: 16}}\n"
        "    report: \"{work}/report\"              # the default\n"
        "    baseline: teacher                   # optional: sizes and BLEU as %% of this "
        "model's\n"
        "    compare:                            # optional: paired bootstrap tests, as\n"
        "      - {system: kd, baseline: ce}      # `score --paired-bs` (BLEU, chrF; 1000\n"
        "                                        # resamples), in run.json and the report\n\n"
        "A stage is skipped when its stamp {work}/.stages/<name>.done records the same command\n"
        "(arguments, inline config, the contents of YAML files it names), the stages it reads\n"
        "from (any earlier stage whose output path occurs in its arguments or configs) have not\n"
        "changed since, and every output exists. Otherwise its outputs are removed and it runs;\n"
        "the stamp is written only after it exits 0 and wrote every output, so an interrupted\n"
        "run continues at the stage it stopped in. A stage with resume: keeps that directory\n"
        "when it was interrupted (train --resume auto continues from its checkpoint) and\n"
        "removes it when its command or an input changed, also while it was interrupted\n"
        "({work}/.stages/<name>.started records the command and inputs it began with). Every\n"
        "model x language translation\n"
        "(eval:<model>:<lang>, hypotheses in {work}/eval/<model>/hyp.<lang>) is stamped the\n"
        "same way; scores, sizes, {work}/eval/<model>/run.json and the report are recomputed\n"
        "every time.\n\n"
        "  --dry-run      print what would run and what would be skipped; run nothing\n"
        "  --force        run every stage, whatever the stamps say\n"
        "  --from STAGE   run STAGE and every later one (stamps ignored); earlier ones are not\n"
        "                 looked at. STAGE may be `evaluate`.\n"
        "  --only STAGE   run just STAGE (`evaluate`: every translation, scores and report)\n"
        "  --work DIR     use DIR as work_dir\n",
        usage);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef enum { RUN_SKIP, RUN_NEW, RUN_OUTPUT_MISSING, RUN_CHANGED } run_kind;

/* Whether stage i's inputs differ from those recorded in `st` (a .done or .started stamp):
 * an input stage ran earlier in this invocation, or completed again since. */
static int inputs_changed(const ad_pipeline *p, int i, const ad_stamp *st, const bool *ran,
                          bool *changed, char *why, size_t why_size) {
    const ad_stage *s = &p->stages[i];
    *changed = true;
    for (int k = 0; k < s->n_deps; k++) {
        const ad_stage *d = &p->stages[s->deps[k]];
        if (ran[s->deps[k]]) {
            snprintf(why, why_size, "its input stage %s runs before it", d->name);
            return AD_OK;
        }
        ad_stamp ds;
        AD_TRY(ad_stamp_read(d->stamp_path, &ds));
        int r = 0;
        while (r < st->n_inputs && strcmp(st->input_name[r], d->name))
            r++;
        if (!ds.found || r == st->n_inputs || strcmp(st->input_id[r], ds.id)) {
            snprintf(why, why_size, "its input stage %s changed since", d->name);
            return AD_OK;
        }
    }
    *changed = false;
    return AD_OK;
}

/* Why stage i must run (or RUN_SKIP); `why` gets the words. `ran` marks stages that ran (or
 * would run, in a dry run) earlier in this invocation. */
static int decide(const ad_pipeline *p, int i, const bool *ran, const char *forced, run_kind *kind,
                  char *why, size_t why_size) {
    const ad_stage *s = &p->stages[i];
    if (forced) {
        snprintf(why, why_size, "%s", forced);
        return *kind = RUN_CHANGED, AD_OK;
    }
    ad_stamp st;
    if (ad_stamp_read(s->stamp_path, &st) < 0) {
        snprintf(why, why_size, "unreadable stamp: %s", ad_error());
        return *kind = RUN_CHANGED, AD_OK;
    }
    bool changed;
    if (!st.found) {
        if (!s->resume_dir || !ad_path_exists(s->resume_dir)) {
            snprintf(why, why_size, "not run yet");
            return *kind = RUN_NEW, AD_OK;
        }
        /* An interrupted stage resumes only from the work of the same command on the same
         * inputs: checkpoints of another student or schedule would be trained on silently. */
        ad_stamp started;
        if (ad_stamp_read(s->started_path, &started) < 0 || !started.found) {
            snprintf(why, why_size, "%s was left by an unknown run", s->resume_dir);
            return *kind = RUN_CHANGED, AD_OK;
        }
        if (started.command != ad_stage_command_hash(s)) {
            snprintf(why, why_size, "command changed since it was interrupted");
            return *kind = RUN_CHANGED, AD_OK;
        }
        AD_TRY(inputs_changed(p, i, &started, ran, &changed, why, why_size));
        if (changed) return *kind = RUN_CHANGED, AD_OK;
        snprintf(why, why_size, "not completed; resuming in %s", s->resume_dir);
        return *kind = RUN_NEW, AD_OK;
    }
    if (st.command != ad_stage_command_hash(s)) {
        snprintf(why, why_size, "command changed");
        return *kind = RUN_CHANGED, AD_OK;
    }
    AD_TRY(inputs_changed(p, i, &st, ran, &changed, why, why_size));
    if (changed) return *kind = RUN_CHANGED, AD_OK;
    for (int o = 0; o < s->n_outputs; o++)
        if (!ad_path_exists(s->outputs[o])) {
            snprintf(why, why_size, "output %s is missing", s->outputs[o]);
            return *kind = RUN_OUTPUT_MISSING, AD_OK;
        }
    return *kind = RUN_SKIP, AD_OK;
}

static void print_command(const ad_stage *s) {
    printf("      audistill");
    for (int a = 0; a < s->argc; a++)
        printf(strpbrk(s->argv[a], " \"'$") ? " '%s'" : " %s", s->argv[a]);
    if (s->stdout_path) printf(" > %s", s->stdout_path);
    printf("\n");
}

static int make_parent(const char *path) {
    char *dir = ad_path_dirname(path);
    if (!dir) return AD_ERR;
    int rc = ad_mkdir_p(dir);
    free(dir);
    return rc;
}

static int run_stage(const ad_pipeline *p, int i, run_kind kind) {
    const ad_stage *s = &p->stages[i];
    /* decide() let it resume only with the command and inputs it began with (or completed). */
    const bool resuming = s->resume_dir && kind != RUN_CHANGED && ad_path_exists(s->resume_dir);
    /* The old stamp goes first: if this run is interrupted, the next one must not skip. */
    AD_TRY(ad_remove_tree(s->stamp_path));
    for (int o = 0; o < s->n_outputs; o++) {
        AD_TRY(ad_remove_tree(s->outputs[o]));
        AD_TRY(make_parent(s->outputs[o]));
    }
    if (s->resume_dir && kind == RUN_CHANGED && ad_path_exists(s->resume_dir)) {
        printf("      removing %s (left by a different command or input)\n", s->resume_dir);
        AD_TRY(ad_remove_tree(s->resume_dir));
    }
    if (s->config_text)
        AD_TRY(ad_write_file_atomic(s->config_path, s->config_text, strlen(s->config_text)));
    ad_stamp st;
    /* Written when the stage starts afresh (after its config: the command hash reads it); a
     * resumed stage keeps the record it began with. */
    if (s->started_path && (!resuming || !ad_path_exists(s->started_path)))
        AD_TRY(ad_stamp_write(p, i, s->started_path, &st));
    ad_atomic_file hyp = {0};
    int fd = -1;
    if (s->stdout_path) {
        AD_TRY(ad_atomic_open(&hyp, s->stdout_path));
        fd = fileno(hyp.file);
    }
    int status = 0, sig = 0;
    int rc = ad_run_self(s->argv, fd, &status, &sig);
    if (rc == AD_OK && sig)
        rc = ad_fail("stage %s was killed by signal %d (%s)", s->name, sig, strsignal(sig));
    else if (rc == AD_OK && status)
        rc = ad_fail("stage %s failed (exit status %d)", s->name, status);
    if (s->stdout_path) {
        if (rc == AD_OK)
            rc = ad_atomic_commit(&hyp);
        else
            ad_atomic_abort(&hyp);
    }
    AD_TRY(rc);
    for (int o = 0; o < s->n_outputs; o++)
        if (!ad_path_exists(s->outputs[o]))
            return ad_fail("%s:%d: stage %s exited 0 but did not write %s", p->path, s->line,
                           s->name, s->outputs[o]);
    return ad_stamp_write(p, i, s->stamp_path, &st);
}

/* ---- evaluation inputs: the audio list and one reference file per language ---------------- */

/* The reference file of `lang` in a synth split: text/txt/<anything>.en-xx.<lang>.txt. */
static char *synth_reference(const char *split, const char *lang) {
    char *txt = ad_path_join(split, "text/txt");
    if (!txt) return NULL;
    DIR *d = opendir(txt);
    if (!d) {
        ad_fail("%s: cannot open %s (is %s a synth split?)", split, txt, split);
        free(txt);
        return NULL;
    }
    char suffix[32], *found = NULL;
    snprintf(suffix, sizeof suffix, ".en-xx.%s.txt", lang);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        size_t a = strlen(e->d_name), b = strlen(suffix);
        if (a > b && !strcmp(e->d_name + a - b, suffix) && n++ == 0)
            found = ad_path_join(txt, e->d_name);
    }
    closedir(d);
    if (n != 1) {
        ad_fail("%s: expected one *%s reference file, found %d", txt, suffix, n);
        free(found), found = NULL;
    }
    free(txt);
    return found;
}

static int write_lines(const char *path, char **lines, int n) {
    ad_atomic_file a;
    AD_TRY(ad_atomic_open(&a, path));
    for (int i = 0; i < n; i++)
        if (ad_atomic_write(&a, lines[i], strlen(lines[i])) < 0 ||
            ad_atomic_write(&a, "\n", 1) < 0) {
            ad_atomic_abort(&a);
            return AD_ERR;
        }
    return ad_atomic_commit(&a);
}

static int prepare_eval_inputs(const ad_pipeline *p) {
    const ad_eval_spec *e = &p->eval;
    char **list = NULL, **refs[AD_PIPELINE_LANGS] = {NULL};
    int n_list = 0, n_refs[AD_PIPELINE_LANGS] = {0}, rc = AD_ERR;
    if (ad_mkdir_p(e->dir) < 0) return AD_ERR;
    for (int j = 0; j < e->n_langs; j++) {
        int l = e->langs[j];
        char *ref = e->synth_split ? synth_reference(e->synth_split, ad_pipeline_lang_names[l])
                                   : ad_strdup(e->references[l], "path");
        int r = ref ? ad_read_lines(ref, &refs[l], &n_refs[l]) : AD_ERR;
        free(ref);
        if (r < 0) goto done;
    }
    int n = n_refs[e->langs[0]];
    if (e->list) {
        if (ad_read_lines(e->list, &list, &n_list) < 0) goto done;
        n = n_list;
    } else {
        list = ad_calloc((size_t)n + 1, sizeof *list, "eval list");
        if (!list) goto done;
        for (n_list = 0; n_list < n; n_list++) {
            char name[64];
            snprintf(name, sizeof name, "segmented_wavs/gold/sent_%d.wav", n_list + 1);
            if (!(list[n_list] = ad_path_join(e->synth_split, name))) goto done;
            if (!ad_path_exists(list[n_list])) {
                ad_fail("%s does not exist (the split's references have %d lines)", list[n_list],
                        n);
                goto done;
            }
        }
    }
    for (int j = 0; j < e->n_langs; j++)
        if (n_refs[e->langs[j]] != n) {
            ad_fail("evaluate: %d audio segments but %d %s reference lines", n, n_refs[e->langs[j]],
                    ad_pipeline_lang_names[e->langs[j]]);
            goto done;
        }
    if (n == 0) {
        ad_fail("evaluate: the evaluation set is empty");
        goto done;
    }
    int keep = e->limit > 0 && e->limit < n ? (int)e->limit : n;
    if (write_lines(e->list_path, list, keep) < 0) goto done;
    for (int j = 0; j < e->n_langs; j++)
        if (write_lines(e->ref_path[e->langs[j]], refs[e->langs[j]], keep) < 0) goto done;
    printf("evaluate: %d segments (%s)\n", keep, e->synth_split ? e->synth_split : e->list);
    rc = AD_OK;
done:
    ad_free_lines(list, n_list);
    for (int l = 0; l < AD_PIPELINE_LANGS; l++)
        ad_free_lines(refs[l], n_refs[l]);
    if (rc < 0) ad_fail_context("%s:%d: evaluate", p->path, e->line);
    return rc;
}

/* ---- scores, sizes, run.json, report ----------------------------------------------------- */

static ad_bleu_tokenizer tokenizer_for(const char *lang) {
    return !strcmp(lang, "zh") ? AD_BLEU_TOK_ZH : AD_BLEU_TOK_13A;
}

/* Corpus BLEU, chrF and chrF++ exactly as `audistill score` computes them. */
static int score_file(const char *hyp, const char *ref, const char *lang, double *bleu,
                      double *chrf, double *chrfpp) {
    char **h = NULL, **r = NULL;
    int nh = 0, nr = 0, rc = AD_ERR;
    ad_bleu_tokenizer tok = tokenizer_for(lang);
    if (ad_read_lines(hyp, &h, &nh) < 0 || ad_read_lines(ref, &r, &nr) < 0) goto done;
    if (nh != nr) {
        ad_fail("%s has %d lines but %s has %d", hyp, nh, ref, nr);
        goto done;
    }
    ad_bleu_stats b = {0};
    ad_chrf_stats c, cpp;
    ad_chrf_init(&c, 6, 0, 2.0);
    ad_chrf_init(&cpp, 6, 2, 2.0);
    for (int i = 0; i < nh; i++)
        if (ad_bleu_add(&b, h[i], r[i], tok) < 0 || ad_chrf_add(&c, h[i], r[i]) < 0 ||
            ad_chrf_add(&cpp, h[i], r[i]) < 0) {
            ad_fail_context("%s line %d", hyp, i + 1);
            goto done;
        }
    *bleu = ad_bleu_score(&b, false).score, *chrf = ad_chrf_score(&c),
    *chrfpp = ad_chrf_score(&cpp);
    rc = AD_OK;
done:
    ad_free_lines(h, nh), ad_free_lines(r, nr);
    return rc;
}

/* Size as `audistill size --json` measures it (the command itself runs). */
static int model_size(const char *model, double *disk, double *params, double *tensor_bytes) {
    char *argv[] = {"size", "--json", (char *)model, NULL}, *out = NULL;
    int status = 0;
    AD_TRY(ad_run_self_capture(argv, 1 << 20, &out, &status));
    cJSON *j = status == 0 ? cJSON_Parse(out) : NULL;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "disk_bytes"),
                *n = cJSON_GetObjectItemCaseSensitive(j, "params"),
                *t = cJSON_GetObjectItemCaseSensitive(j, "tensor_bytes");
    int rc = AD_OK;
    if (status != 0)
        rc = ad_fail("audistill size %s failed (exit status %d)", model, status);
    else if (!cJSON_IsNumber(d) || !cJSON_IsNumber(n) || !cJSON_IsNumber(t))
        rc = ad_fail("audistill size --json %s: unexpected output", model);
    else
        *disk = d->valuedouble, *params = n->valuedouble, *tensor_bytes = t->valuedouble;
    cJSON_Delete(j);
    free(out);
    return rc;
}

/* A plain YAML scalar that reads as a number or boolean keeps that type in run.json. */
static cJSON *json_scalar(const ad_yaml_node *v) {
    char *end;
    double d = strtod(v->value, &end);
    if (!v->quoted && v->value[0] && !*end && isfinite(d)) return cJSON_CreateNumber(d);
    if (!v->quoted && (!strcmp(v->value, "true") || !strcmp(v->value, "false")))
        return cJSON_CreateBool(!strcmp(v->value, "true"));
    return cJSON_CreateString(v->value);
}

/* evaluate.compare entries whose system is model m: paired bootstrap (BLEU, chrF) against the
 * baseline model's hypotheses of the same segments, per language, into run.json. */
static int compare_model(const ad_pipeline *p, int m, cJSON *root) {
    const ad_eval_spec *e = &p->eval;
    cJSON *list = NULL;
    for (int c = 0; c < e->n_compare; c++) {
        if (e->compare[c].system != m) continue;
        const int b = e->compare[c].baseline;
        if (!list) list = cJSON_AddArrayToObject(root, "comparisons");
        for (int j = 0; j < e->n_langs; j++) {
            const int l = e->langs[j];
            const char *lang = ad_pipeline_lang_names[l];
            const ad_stage *ss = &p->stages[p->n_job_stages + m * e->n_langs + j],
                           *sb = &p->stages[p->n_job_stages + b * e->n_langs + j];
            char **hs = NULL, **hb = NULL, **r = NULL;
            int ns = 0, nb = 0, nr = 0;
            ad_paired_result bleu, chrf;
            int rc = ad_read_lines(ss->stdout_path, &hs, &ns) < 0 ||
                             ad_read_lines(sb->stdout_path, &hb, &nb) < 0 ||
                             ad_read_lines(e->ref_path[l], &r, &nr) < 0
                         ? AD_ERR
                         : AD_OK;
            if (rc == AD_OK && (ns != nr || nb != nr))
                rc = ad_fail("%s, %s and %s must have as many lines (%d, %d, %d)", ss->stdout_path,
                             sb->stdout_path, e->ref_path[l], ns, nb, nr);
            if (rc == AD_OK)
                rc = ad_paired_bootstrap_lines(hb, hs, r, nr, tokenizer_for(lang),
                                               AD_BOOTSTRAP_SAMPLES, AD_BOOTSTRAP_SEED, &bleu,
                                               &chrf);
            ad_free_lines(hs, ns), ad_free_lines(hb, nb), ad_free_lines(r, nr);
            if (rc < 0)
                return ad_fail_context("comparing %s with %s (%s)", e->models[m].name,
                                       e->models[b].name, lang);
            char dir[16];
            snprintf(dir, sizeof dir, "en-%s", lang);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToArray(list, o);
            cJSON_AddStringToObject(o, "baseline", e->models[b].name);
            cJSON_AddStringToObject(o, "direction", dir);
            cJSON_AddNumberToObject(o, "segments", bleu.n_segments);
            cJSON_AddNumberToObject(o, "samples", bleu.n_samples);
            cJSON_AddNumberToObject(o, "seed", AD_BOOTSTRAP_SEED);
            cJSON_AddItemToObject(o, "bleu", ad_paired_result_json(&bleu));
            cJSON_AddItemToObject(o, "chrf", ad_paired_result_json(&chrf));
            printf("  %-20s against %s, %s: BLEU %+.2f (95%% interval %+.2f .. %+.2f, p = %.4f), "
                   "chrF %+.2f (p = %.4f)\n",
                   e->models[m].name, e->models[b].name, dir, bleu.system - bleu.baseline,
                   bleu.delta_lo, bleu.delta_hi, bleu.p, chrf.system - chrf.baseline, chrf.p);
        }
    }
    return AD_OK;
}

static int evaluate_model(const ad_pipeline *p, int m) {
    const ad_eval_spec *e = &p->eval;
    const ad_eval_model *model = &e->models[m];
    double disk = 0, params = 0, tensor_bytes = 0;
    AD_TRY(model_size(model->path, &disk, &params, &tensor_bytes));
    cJSON *root = cJSON_CreateObject(), *scores = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "name", model->name);
    cJSON_AddNumberToObject(root, "bytes", disk);
    cJSON_AddStringToObject(root, "model", model->path);
    cJSON_AddNumberToObject(root, "params", params);
    cJSON_AddNumberToObject(root, "tensor_bytes", tensor_bytes);
    if (model->parameters) {
        cJSON *par = cJSON_AddObjectToObject(root, "parameters");
        for (int i = 0; par && i < model->parameters->count; i++)
            cJSON_AddItemToObject(par, model->parameters->keys[i],
                                  json_scalar(model->parameters->children[i]));
    }
    cJSON_AddItemToObject(root, "scores", scores);
    printf("  %-20s %12.0f bytes", model->name, disk);
    int rc = AD_OK;
    for (int j = 0; j < e->n_langs && rc == AD_OK; j++) {
        int l = e->langs[j];
        const ad_stage *s = &p->stages[p->n_job_stages + m * e->n_langs + j];
        double bleu, chrf, chrfpp;
        rc = score_file(s->stdout_path, e->ref_path[l], ad_pipeline_lang_names[l], &bleu, &chrf,
                        &chrfpp);
        if (rc < 0) break;
        char dir[16];
        snprintf(dir, sizeof dir, "en-%s", ad_pipeline_lang_names[l]);
        cJSON *d = cJSON_AddObjectToObject(scores, dir);
        cJSON_AddNumberToObject(d, "bleu", bleu);
        cJSON_AddNumberToObject(d, "chrf", chrf);
        cJSON_AddNumberToObject(d, "chrf++", chrfpp);
        printf("   %s BLEU %6.2f chrF %6.2f", dir, bleu, chrf);
    }
    printf("\n");
    if (rc == AD_OK) rc = compare_model(p, m, root);
    char *text = rc == AD_OK ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (rc < 0) return AD_ERR;
    if (!text) return ad_fail("out of memory writing run.json of %s", model->name);
    char *dir = ad_path_join(e->dir, model->name),
         *path = dir ? ad_path_join(dir, "run.json") : NULL;
    rc = path && ad_mkdir_p(dir) == 0 ? ad_write_file_atomic(path, text, strlen(text)) : AD_ERR;
    free(text), free(dir), free(path);
    return rc;
}

static int evaluate(const ad_pipeline *p) {
    const ad_eval_spec *e = &p->eval;
    printf("evaluate: scores and sizes of %d model%s\n", e->n_models, e->n_models == 1 ? "" : "s");
    for (int m = 0; m < e->n_models; m++)
        if (evaluate_model(p, m) < 0) return ad_fail_context("evaluating %s", e->models[m].name);
    char **argv = ad_calloc((size_t)e->n_models + 6, sizeof *argv, "report arguments");
    if (!argv) return AD_ERR;
    int n = 0, rc = AD_OK;
    argv[n++] = "report";
    for (int m = 0; m < e->n_models && rc == AD_OK; m++)
        if (!(argv[n++] = ad_path_join(e->dir, e->models[m].name))) rc = AD_ERR;
    argv[n++] = "-o";
    argv[n++] = e->report;
    if (e->baseline) {
        argv[n++] = "--baseline";
        argv[n++] = e->baseline;
    }
    int status = 0, sig = 0;
    if (rc == AD_OK) rc = ad_run_self(argv, -1, &status, &sig);
    if (rc == AD_OK && status) rc = ad_fail("audistill report failed (exit status %d)", status);
    for (int m = 0; m < e->n_models; m++)
        free(argv[1 + m]);
    free(argv);
    if (rc == AD_OK) printf("evaluate: report in %s/report.md\n", e->report);
    return rc;
}

/* ---- the command ------------------------------------------------------------------------- */

int cmd_run(int argc, char **argv) {
    const char *job = NULL, *work = NULL, *from = NULL, *only = NULL;
    bool dry = false, force = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool v = i + 1 < argc;
        if (cli_is_help(a)) {
            print_help();
            return 0;
        } else if (!strcmp(a, "--work") && v)
            work = argv[++i];
        else if (!strcmp(a, "--from") && v)
            from = argv[++i];
        else if (!strcmp(a, "--only") && v)
            only = argv[++i];
        else if (!strcmp(a, "--dry-run"))
            dry = true;
        else if (!strcmp(a, "--force"))
            force = true;
        else if (a[0] == '-' || job)
            return cli_usage_error("run", usage, "unexpected argument '%s'", a);
        else
            job = a;
    }
    if (!job) return cli_usage_error("run", usage, "JOB.yaml is required");
    if (from && only) return cli_usage_error("run", usage, "--from and --only exclude each other");
    ad_pipeline p;
    if (ad_pipeline_load(job, work, &p) < 0) {
        ad_pipeline_free(&p);
        return cli_fail("run");
    }
    /* The selected range [first, last]; `evaluate` names the whole evaluation. */
    int first = 0, last = p.n_stages - 1, rc = 1;
    bool reported = false;
    bool eval_selected = p.eval.present;
    const char *pick = from ? from : only;
    if (pick) {
        int k = ad_pipeline_find(&p, pick);
        bool all_eval = !strcmp(pick, "evaluate") && p.eval.present;
        if (k < 0 && !all_eval) {
            cli_usage_error("run", usage, "%s has no stage '%s'%s", job, pick,
                            p.eval.present ? " (nor is it `evaluate`)" : "");
            ad_pipeline_free(&p);
            return 2;
        }
        first = all_eval ? p.n_job_stages : k;
        if (only && !all_eval) last = k;
        eval_selected = p.eval.present && (from || all_eval || k >= p.n_job_stages);
    }
    bool *ran = ad_calloc((size_t)p.n_stages + 1, sizeof *ran, "stage flags");
    char forced[128] = "";
    if (force) snprintf(forced, sizeof forced, "--force");
    if (pick) snprintf(forced, sizeof forced, "--%s %s", from ? "from" : "only", pick);
    if (!ran || (!dry && (ad_mkdir_p(p.work_dir) < 0 || ad_mkdir_p(p.stamp_dir) < 0))) goto done;
    printf("audistill run %s: %d stage%s%s in %s%s\n", job, p.n_stages, p.n_stages == 1 ? "" : "s",
           p.eval.present ? " (translations included)" : "", p.work_dir,
           dry ? " (dry run: nothing runs)" : "");
    double t_all = now_s();
    int n_ran = 0, n_skipped = 0;
    bool eval_ready = false;
    for (int i = first; i <= last; i++) {
        const ad_stage *s = &p.stages[i];
        run_kind kind;
        char why[1024];
        if (decide(&p, i, ran, forced[0] ? forced : NULL, &kind, why, sizeof why) < 0) goto done;
        if (kind != RUN_SKIP && !dry && s->eval_model >= 0 && !eval_ready) {
            if (prepare_eval_inputs(&p) < 0) goto done;
            eval_ready = true;
        }
        printf("[%d/%d] %s ", i + 1, p.n_stages, s->name);
        if (kind == RUN_SKIP) {
            printf("... %sskipped (outputs complete)\n", dry ? "would be " : "");
            n_skipped++;
            continue;
        }
        ran[i] = true, n_ran++;
        if (dry) {
            printf("... would run (%s)\n", why);
            print_command(s);
            continue;
        }
        printf("... running (%s)\n", why);
        print_command(s);
        double t0 = now_s();
        if (run_stage(&p, i, kind) < 0) {
            fflush(stdout);
            cli_fail("run");
            fprintf(stderr,
                    "audistill run: stopped at stage %s (%s:%d); the stages before it "
                    "are kept: fix it and rerun to continue from there\n",
                    s->name, job, s->line);
            reported = true;
            goto done;
        }
        printf("[%d/%d] %s ... done in %.1f s\n", i + 1, p.n_stages, s->name, now_s() - t0);
    }
    if (eval_selected && dry) {
        printf("evaluate: would score %d model%s in %d language%s, measure their sizes and "
               "write the report to %s\n",
               p.eval.n_models, p.eval.n_models == 1 ? "" : "s", p.eval.n_langs,
               p.eval.n_langs == 1 ? "" : "s", p.eval.report);
    } else if (eval_selected) {
        if ((!eval_ready && prepare_eval_inputs(&p) < 0) || evaluate(&p) < 0) goto done;
    }
    printf("run %s: %d stage%s %s, %d skipped, %.1f s\n", dry ? "(dry)" : "complete", n_ran,
           n_ran == 1 ? "" : "s", dry ? "would run" : "ran", n_skipped, now_s() - t_all);
    rc = 0;
done:
    if (rc && !reported) cli_fail("run");
    free(ran);
    ad_pipeline_free(&p);
    return rc;
}
