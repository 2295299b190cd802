/* Teacher caches: top-k equals an independent full sort of log_softmax; the dense
 * reconstruction is a normalised distribution whose rest bucket equals the mass the top-k
 * leaves out of the dense logits (and is exactly log_softmax with k = V); the file round-trips
 * and refuses out-of-order or incomplete writes, truncated, damaged (a byte of compressed chunk
 * data) and inconsistent files (k vs attribute, offsets vs rows) by name. End to end with the
 * tiny teacher: greedy translations equal the top-1 of the cached positions along them (the
 * training graph and the generator line up), and a student trained with data.targets: teacher
 * has the cross-entropy of those translations. */
#include <hdf5.h>
#include <unistd.h>

#include "core/rng.h"
#include "data/prepared.h"
#include "io/file.h"
#include "io/yaml.h"
#include "test.h"
#include "train/teacher_cache.h"
#include "train/trainer.h"

static char dir[512];

static int cmp_desc(const void *a, const void *b) {
    const double *x = a, *y = b;
    return x[0] < y[0] ? 1 : x[0] > y[0] ? -1 : (x[1] > y[1]) - (x[1] < y[1]);
}

static void log_softmax(const float *z, int V, double *out) {
    double m = -INFINITY, s = 0;
    for (int j = 0; j < V; j++)
        m = z[j] > m ? z[j] : m;
    for (int j = 0; j < V; j++)
        s += exp(z[j] - m);
    for (int j = 0; j < V; j++)
        out[j] = z[j] - m - log(s);
}

static void test_topk_and_dense(void) {
    enum { V = 300 };
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 3);
    float z[V], row[V];
    double ls[V], pairs[V][2];
    int32_t ids[V];
    float lp[V];
    const int ks[] = {1, 8, 32, V - 1, V};
    for (int trial = 0; trial < 20; trial++) {
        for (int j = 0; j < V; j++)
            z[j] = ad_rng_normal(&rng) * (trial % 2 ? 6.0f : 1.0f);
        if (trial == 3) z[7] = z[11]; /* a tie: the smaller id ranks first */
        log_softmax(z, V, ls);
        for (int j = 0; j < V; j++)
            pairs[j][0] = ls[j], pairs[j][1] = j;
        qsort(pairs, V, sizeof pairs[0], cmp_desc);
        for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
            const int k = ks[t];
            ad_teacher_topk(z, V, k, ids, lp);
            int bad = 0;
            double kept = 0;
            for (int j = 0; j < k; j++) {
                bad += ids[j] != (int32_t)pairs[j][1] || fabs(lp[j] - pairs[j][0]) > 1e-5;
                kept += exp(pairs[j][0]);
            }
            CHECK_MSG(bad == 0, "k=%d: %d entries differ from the full sort", k, bad);
            ad_teacher_dense_row(ids, lp, k, V, row);
            double sum = 0;
            for (int j = 0; j < V; j++)
                sum += exp(row[j]);
            CHECK_NEAR(sum, 1.0, 1e-5);
            if (k < V) {
                /* the ids outside the top-k share the mass the top-k leaves out of the dense
                 * logits (compared as probability mass: float log-probs leave ~1e-7 of it) */
                const double rest = 1 - kept;
                CHECK_NEAR((V - k) * exp(row[(int)pairs[V - 1][1]]), rest, 2e-6);
                CHECK(row[(int)pairs[V - 1][1]] == row[(int)pairs[k][1]]);
            } else {
                double err = 0;
                for (int j = 0; j < V; j++)
                    err = fmax(err, fabs(row[j] - ls[j]));
                CHECK_MSG(err < 1e-5, "k = V: max |row - log_softmax| = %g", err);
            }
        }
    }
    /* All mass in the top-1: the rest bucket is clamped, finite, and the row still sums to 1. */
    for (int j = 0; j < V; j++)
        z[j] = j == 5 ? 200.0f : 0.0f;
    ad_teacher_topk(z, V, 1, ids, lp);
    ad_teacher_dense_row(ids, lp, 1, V, row);
    CHECK(ids[0] == 5 && isfinite(row[0]) && row[0] < -60);
}

#define N_SEG 5
#define K     3
#define VOC   50

static void fake_rows(int src, int lang, int seg, int rows, int32_t *ids, float *lp) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < K; j++) {
            ids[r * K + j] = (src * 7 + lang * 5 + seg * 3 + r + j) % VOC;
            lp[r * K + j] = -0.5f - (float)j - 0.01f * (float)(seg + r);
        }
}

static int write_cache(const char *path, bool complete) {
    const char *langs[] = {"de", "zh"};
    ad_teacher_cache_info info = {.top_k = K,
                                  .vocab_size = VOC,
                                  .max_frames = 100,
                                  .n_segments = N_SEG,
                                  .n_langs = 2,
                                  .langs = langs,
                                  .with_teacher_targets = true,
                                  .teacher_hash = 0x1234,
                                  .data_hash = 0xabcdef0123456789ull,
                                  .teacher_dir = "t",
                                  .data_path = "d",
                                  .translations = "greedy"};
    ad_teacher_cache_writer *w;
    AD_TRY(ad_teacher_cache_create(path, &info, &w));
    int32_t ids[40 * K], tok[40];
    float lp[40 * K];
    for (int seg = 0; seg < N_SEG; seg++)
        for (int l = 0; l < 2; l++)
            for (int s = 0; s < 2; s++) {
                if (!complete && seg == N_SEG - 1 && s == 1) continue;
                const int rows = s ? 2 + seg : 1 + (seg + l) % 3;
                fake_rows(s, l, seg, rows, ids, lp);
                if (ad_teacher_cache_append(w, s, l, seg, rows, ids, lp) < 0) goto fail;
                if (s == 1) {
                    for (int j = 0; j < rows; j++)
                        tok[j] = (seg + j) % VOC;
                    if (ad_teacher_cache_add_translation(w, l, seg, tok, rows, "héllo") < 0)
                        goto fail;
                }
            }
    return ad_teacher_cache_finish(w);
fail:
    ad_teacher_cache_abort(w);
    return AD_ERR;
}

static int copy_prefix(const char *from, const char *to, double fraction) {
    char *data;
    size_t size;
    AD_TRY(ad_read_file(from, 1 << 26, &data, &size));
    int rc = ad_write_file_atomic(to, data, (size_t)(size * fraction));
    free(data);
    return rc;
}

static void test_file_round_trip_and_refusals(void) {
    char path[640], bad[640];
    snprintf(path, sizeof path, "%s/cache.h5", dir);
    CHECK_OK(write_cache(path, true));
    ad_teacher_cache *c;
    CHECK_OK(ad_teacher_cache_open(path, &c));
    if (!c) return;
    CHECK(ad_teacher_cache_top_k(c) == K && ad_teacher_cache_vocab(c) == VOC);
    CHECK(ad_teacher_cache_data_hash(c) == 0xabcdef0123456789ull);
    CHECK(ad_teacher_cache_lang(c, AD_CACHE_TEACHER, "zh") == 1);
    CHECK(ad_teacher_cache_lang(c, AD_CACHE_REF, "en") == -1);
    int32_t ids[40 * K], want_ids[40 * K];
    float lp[40 * K], want_lp[40 * K];
    int bad_rows = 0;
    for (int s = 0; s < 2; s++)
        for (int l = 0; l < 2; l++)
            for (int seg = 0; seg < N_SEG; seg++) {
                const int rows = s ? 2 + seg : 1 + (seg + l) % 3;
                bad_rows += ad_teacher_cache_count(c, s, l, seg) != rows;
                fake_rows(s, l, seg, rows, want_ids, want_lp);
                CHECK_OK(ad_teacher_cache_read(c, s, l, seg, ids, lp));
                bad_rows += memcmp(ids, want_ids, sizeof(int32_t) * rows * K) != 0 ||
                            memcmp(lp, want_lp, sizeof(float) * rows * K) != 0;
            }
    CHECK(bad_rows == 0);
    const int64_t *off;
    const int32_t *tok;
    CHECK_OK(ad_teacher_cache_translations(c, 1, &off, &tok));
    CHECK(off[3] - off[2] == 4 && tok[off[2]] == 2);
    char *text = NULL;
    CHECK_OK(ad_teacher_cache_text(c, 0, 4, &text));
    CHECK(text && !strcmp(text, "héllo"));
    free(text);
    ad_teacher_cache_close(c);

    /* writes out of order or incomplete never produce a file */
    snprintf(bad, sizeof bad, "%s/incomplete.h5", dir);
    CHECK_FAILS_WITH(write_cache(bad, false), "holds 4 of 5 segments");
    CHECK(!ad_path_exists(bad));
    /* truncated */
    snprintf(bad, sizeof bad, "%s/truncated.h5", dir);
    CHECK_OK(copy_prefix(path, bad, 0.6));
    CHECK_FAILS_WITH(ad_teacher_cache_open(bad, &c), "truncated.h5");
    CHECK_FAILS_WITH(ad_teacher_cache_open(bad, &c), "truncated or damaged");
    /* one flipped byte inside the compressed chunk of /ref/zh/topk_logprobs */
    snprintf(bad, sizeof bad, "%s/damaged.h5", dir);
    CHECK_OK(copy_prefix(path, bad, 1.0));
    hid_t f = H5Fopen(bad, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "ref/zh/topk_logprobs", H5P_DEFAULT);
    haddr_t addr = 0;
    hsize_t size = 0, offset[2];
    unsigned mask;
    hid_t space = H5Dget_space(ds);
    CHECK(H5Dget_chunk_info(ds, space, 0, offset, &mask, &addr, &size) >= 0 && size > 4);
    H5Sclose(space), H5Dclose(ds), H5Fclose(f);
    FILE *fp = fopen(bad, "r+b");
    CHECK(fp != NULL);
    if (fp) {
        fseek(fp, (long)(addr + size / 2), SEEK_SET);
        int ch = fgetc(fp);
        fseek(fp, (long)(addr + size / 2), SEEK_SET);
        fputc(ch ^ 0x5a, fp);
        fclose(fp);
    }
    CHECK_FAILS_WITH(ad_teacher_cache_open(bad, &c), "damaged.h5");
    /* datasets that disagree with the attributes or with each other */
    snprintf(bad, sizeof bad, "%s/inconsistent.h5", dir);
    CHECK_OK(copy_prefix(path, bad, 1.0));
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "top_k", H5P_DEFAULT);
    int64_t k2 = K + 1;
    H5Awrite(a, H5T_NATIVE_INT64, &k2);
    H5Aclose(a), H5Fclose(f);
    CHECK_FAILS_WITH(ad_teacher_cache_open(bad, &c), "columns but the top_k attribute is 4");
    CHECK_OK(copy_prefix(path, bad, 1.0));
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    ds = H5Dopen2(f, "ref/de/offset", H5P_DEFAULT);
    int64_t o[N_SEG + 1];
    H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, o);
    o[N_SEG] += 1;
    H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, o);
    H5Dclose(ds), H5Fclose(f);
    CHECK_FAILS_WITH(ad_teacher_cache_open(bad, &c), "/ref/de/offset ends at");
    snprintf(bad, sizeof bad, "%s/missing.h5", dir);
    CHECK_FAILS_WITH(ad_teacher_cache_open(bad, &c), "does not exist");
}

/* ---- end to end with the tiny teacher ---------------------------------------------------- */

static void make_set(const char *path) {
    ad_rng rng;
    ad_rng_init(&rng, 11, 0);
    const char *text_langs[] = {"en", "de", "zh"}, *targets[] = {"de", "zh"};
    ad_prepared_info info = {.n_mels = 16,
                             .hop_length = 160,
                             .sample_rate = 16000,
                             .n_text_langs = 3,
                             .text_langs = text_langs,
                             .n_target_langs = 2,
                             .target_langs = targets};
    ad_prepared_writer *w;
    CHECK_OK(ad_prepared_create(path, &info, &w));
    int32_t before[] = {5, 17, 42}, after_de[] = {60, 61}, after_zh[] = {60, 62};
    CHECK_OK(ad_prepared_set_prompt(w, "de", "de", before, 3, after_de, 2));
    CHECK_OK(ad_prepared_set_prompt(w, "zh", "zh", before, 3, after_zh, 2));
    for (int i = 0; i < 6; i++) {
        const int frames = 20 + (int)ad_rng_below(&rng, 60);
        float f[82 * 16];
        /* two frames past the valid ones, as prepare stores them: a clip's result then does not
         * depend on how far its batch pads it */
        for (int k = 0; k < (frames + 2) * 16; k++)
            f[k] = ad_rng_normal(&rng) * 0.5f;
        int32_t de[4] = {100 + i, 107, 114, 276}, zh[3] = {150 + i, 155, 276};
        const int32_t *ids[2] = {de, zh};
        int counts[2] = {4, 3};
        const char *texts[3] = {"en", "de", "zh"};
        CHECK_OK(ad_prepared_append(w, f, frames + 2, frames, -1.0f, "talk", texts, ids, counts));
    }
    CHECK_OK(ad_prepared_finish(w));
}

static double metric(const char *run_dir, const char *tag) {
    char path[700], *data = NULL, key[64];
    size_t size;
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    if (ad_read_file(path, 1 << 20, &data, &size) < 0) return NAN;
    snprintf(key, sizeof key, "\"%s\": ", tag);
    const char *at = strstr(data, key);
    double v = at ? atof(at + strlen(key)) : NAN;
    free(data);
    return v;
}

static int run_yaml(const char *text, bool train) {
    ad_yaml_doc doc;
    AD_TRY(ad_yaml_parse(text, strlen(text), "job.yaml", &doc));
    int rc;
    if (train) {
        ad_train_job job;
        ad_train_run_options o = {.quiet = true};
        rc = ad_yaml_bind(&doc, doc.root, ad_train_job_fields, &job, "");
        if (rc == AD_OK) rc = ad_train_run(&doc, &job, &o);
    } else {
        ad_teacher_cache_job job;
        rc = ad_yaml_bind(&doc, doc.root, ad_teacher_cache_job_fields, &job, "");
        if (rc == AD_OK) rc = ad_teacher_cache_run(&doc, &job);
    }
    ad_yaml_free(&doc);
    return rc;
}

static void test_sequence_level(void) {
    char set[600], cache[600], yaml[4096], run[600];
    snprintf(set, sizeof set, "%s/set.h5", dir);
    snprintf(cache, sizeof cache, "%s/seq.h5", dir);
    make_set(set);
    const char *tiny = AUDISTILL_FIXTURES "/tiny_a";
    snprintf(yaml, sizeof yaml,
             "teacher: %s\ndata: %s\noutput: %s\ntop_k: 280\nmax_len: 64\nmax_frames: 100\n"
             "batch: 5\ntranslations: greedy\nmax_new_tokens: 6\n",
             tiny, set, cache);
    CHECK_OK(run_yaml(yaml, false));
    ad_teacher_cache *c = NULL;
    CHECK_OK(ad_teacher_cache_open(cache, &c));
    if (!c) return;
    /* The prepared targets all end with 276: so do the teacher's. Each generated token is the
     * top-1 of the teacher-forced position that predicts it. */
    int mismatched = 0, ends = 0, positions = 0;
    double ce_sum = 0;
    int32_t ids[16 * 280];
    float lp[16 * 280];
    for (int l = 0; l < 2; l++) {
        const int64_t *off;
        const int32_t *tok;
        CHECK_OK(ad_teacher_cache_translations(c, l, &off, &tok));
        for (int seg = 0; seg < 6; seg++) {
            const int n = (int)(off[seg + 1] - off[seg]);
            CHECK(ad_teacher_cache_count(c, AD_CACHE_TEACHER, l, seg) == n);
            CHECK_OK(ad_teacher_cache_read(c, AD_CACHE_TEACHER, l, seg, ids, lp));
            ends += tok[off[seg + 1] - 1] == 276;
            for (int j = 0; j < n; j++) {
                if (j < n - 1) mismatched += ids[j * 280] != tok[off[seg] + j];
                for (int q = 0; q < 280; q++)
                    if (ids[j * 280 + q] == tok[off[seg] + j]) ce_sum -= lp[j * 280 + q];
                positions++;
            }
        }
    }
    CHECK_MSG(mismatched == 0, "%d generated tokens are not the cached top-1", mismatched);
    CHECK(ends == 12);
    ad_teacher_cache_close(c);
    /* The teacher as its own student, learning rate 0: the first step's cross-entropy on the
     * teacher targets is the cache's mean -log p of those targets. */
    snprintf(run, sizeof run, "%s/seqrun", dir);
    snprintf(yaml, sizeof yaml,
             "student: %s\noutput: %s\ndata: {train: %s, targets: teacher}\n"
             "train: {steps: 1, batch: 12, micro_batch: 6, lr: 0, log_every: 1, max_len: 64, "
             "max_frames: 100}\ndistill: {alpha: 0, teacher_cache: %s}\n",
             tiny, run, set, cache);
    CHECK_OK(run_yaml(yaml, true));
    const double ce = metric(run, "train/ce"), want = ce_sum / positions;
    CHECK_MSG(fabs(ce - want) <= 1e-5 * fabs(want), "CE %.9g, cache says %.9g", ce, want);
    /* ... and differs from the cross-entropy on the references */
    snprintf(run, sizeof run, "%s/refrun", dir);
    snprintf(yaml, sizeof yaml,
             "student: %s\noutput: %s\ndata: {train: %s}\n"
             "train: {steps: 1, batch: 12, micro_batch: 6, lr: 0, log_every: 1, max_len: 64, "
             "max_frames: 100}\n",
             tiny, run, set);
    CHECK_OK(run_yaml(yaml, true));
    CHECK(fabs(metric(run, "train/ce") - want) > 0.1);
    /* Beam search translations: stored like the greedy ones, end-of-turn last, one cached
     * position per token. */
    snprintf(cache, sizeof cache, "%s/beam.h5", dir);
    snprintf(yaml, sizeof yaml,
             "teacher: %s\ndata: %s\noutput: %s\ntop_k: 4\nmax_len: 64\nmax_frames: 100\n"
             "batch: 5\ntranslations: beam\nnum_beams: 3\nmax_new_tokens: 6\n",
             tiny, set, cache);
    CHECK_OK(run_yaml(yaml, false));
    CHECK_OK(ad_teacher_cache_open(cache, &c));
    if (!c) return;
    int beam_ends = 0, beam_counts = 0;
    for (int l = 0; l < 2; l++) {
        const int64_t *off;
        const int32_t *tok;
        CHECK_OK(ad_teacher_cache_translations(c, l, &off, &tok));
        for (int seg = 0; seg < 6; seg++) {
            beam_ends += off[seg + 1] > off[seg] && tok[off[seg + 1] - 1] == 276;
            beam_counts +=
                ad_teacher_cache_count(c, AD_CACHE_TEACHER, l, seg) == off[seg + 1] - off[seg];
        }
    }
    CHECK(beam_ends == 12 && beam_counts == 12);
    ad_teacher_cache_close(c);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/teacher_cache.XXXXXX", AUDISTILL_TEST_TMP);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "cannot create a temporary directory under %s\n", AUDISTILL_TEST_TMP);
        return 1;
    }
    RUN(test_topk_and_dense);
    RUN(test_file_round_trip_and_refusals);
    RUN(test_sequence_level);
    ad_remove_tree(dir);
    return test_report();
}
