/* The synthetic corpus on disk: a tiny run read back through the data set loader (texts equal
 * the grammar's, talk ids from the segmentation list), each talk entry holding exactly its
 * sentence's samples, identical output for 1 and 2 workers, and complete-or-nothing on failure.
 * Needs espeak-ng; skips without it. */
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/synth_corpus.h"
#include "io/audio_file.h"
#include "io/file.h"
#include "test.h"

static bool espeak_available(void) {
    const char *path = getenv("PATH");
    if (!path) return false;
    char *copy = strdup(path);
    bool found = false;
    for (char *dir = strtok(copy, ":"); dir && !found; dir = strtok(NULL, ":")) {
        char p[4096];
        snprintf(p, sizeof p, "%s/espeak-ng", dir);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

static char base[1024];

static ad_synth_corpus_options options(const char *name) {
    static char out[4][1200];
    static int k;
    char *o = out[k++ % 4];
    snprintf(o, 1200, "%s/%s", base, name);
    ad_synth_corpus_options opt = {.out_dir = o,
                                   .seed = 77,
                                   .counts = {6, 3, 5},
                                   .talks = 2,
                                   .jobs = 2,
                                   .espeak = "espeak-ng"};
    return opt;
}

static bool same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool same = ad_read_file(a, 1 << 26, &x, &nx) == 0 && ad_read_file(b, 1 << 26, &y, &ny) == 0 &&
                nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

/* Every regular file under dir_a has an identical twin under dir_b; returns the count. */
static int compare_trees(const char *dir_a, const char *dir_b, int *different) {
    DIR *d = opendir(dir_a);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *pa = ad_path_join(dir_a, e->d_name), *pb = ad_path_join(dir_b, e->d_name);
        if (ad_is_directory(pa)) {
            count += compare_trees(pa, pb, different);
        } else {
            count++;
            if (!same_file(pa, pb)) {
                (*different)++;
                fprintf(stderr, "differs: %s\n", pa);
            }
        }
        free(pa);
        free(pb);
    }
    closedir(d);
    return count;
}

static void test_layout_reads_back(void) {
    ad_synth_corpus_options opt = options("a");
    ad_synth_corpus_stats st;
    CHECK_OK(ad_synth_write_corpus(&opt, &st));
    CHECK(st.sentences == 14 && st.audio_seconds > 14 * 0.8 && st.talk_seconds > 5 * 0.8);
    ad_synth_text *texts[AD_SYNTH_SPLITS];
    CHECK_OK(ad_synth_make_splits(opt.seed, opt.counts, texts));
    const char *langs[] = {"en", "de", "zh"};
    for (int s = 0; s < AD_SYNTH_SPLITS; s++) {
        ad_dataset ds;
        CHECK_OK(ad_dataset_load_acl(opt.out_dir, ad_synth_split_names[s], 3, langs, NULL, &ds));
        CHECK(ds.n_segments == opt.counts[s]);
        for (int i = 0; i < ds.n_segments && i < opt.counts[s]; i++) {
            CHECK(strcmp(ds.segments[i].text[0], texts[s][i].en) == 0);
            CHECK(strcmp(ds.segments[i].text[1], texts[s][i].de) == 0);
            CHECK(strcmp(ds.segments[i].text[2], texts[s][i].zh) == 0);
            ad_audio_info info;
            CHECK_OK(ad_audio_probe(ds.segments[i].audio, &info));
            CHECK(info.sample_rate == 16000 && info.channels == 1 && info.frames > 8000);
        }
        if (s == AD_SYNTH_EVAL && ds.n_segments == 5) {
            /* 5 sentences in 2 talks: 2 + 3. */
            CHECK(strcmp(ds.segments[0].talk, "talk_1") == 0);
            CHECK(strcmp(ds.segments[1].talk, "talk_1") == 0);
            CHECK(strcmp(ds.segments[2].talk, "talk_2") == 0);
            CHECK(strcmp(ds.segments[4].talk, "talk_2") == 0);
        }
        ad_dataset_free(&ds);
        free(texts[s]);
    }
    /* Each talk entry is exactly its sentence's audio. */
    char yaml[1400], wavs[1400], sent[1400];
    snprintf(yaml, sizeof yaml, "%s/eval/text/txt/ACL.6060.eval.en-xx.yaml", opt.out_dir);
    snprintf(wavs, sizeof wavs, "%s/eval/full_wavs", opt.out_dir);
    ad_dataset seg;
    CHECK_OK(ad_dataset_load_segmentation(yaml, wavs, &seg));
    CHECK(seg.n_segments == 5);
    double prev_end = 0.0;
    for (int i = 0; i < seg.n_segments; i++) {
        const ad_segment *g = &seg.segments[i];
        if (i == 2) prev_end = 0.0; /* second talk */
        double pause = g->offset - prev_end;
        CHECK_MSG(pause >= 0.3 - 1e-6 && pause <= 1.0 + 1e-6, "pause %.4f before entry %d", pause,
                  i);
        prev_end = g->offset + g->duration;
        float *a = NULL, *b = NULL;
        int64_t na = 0, nb = 0;
        snprintf(sent, sizeof sent, "%s/eval/segmented_wavs/gold/sent_%d.wav", opt.out_dir, i + 1);
        CHECK_OK(ad_audio_read(g->audio, g->offset, g->duration, 16000, &a, &na));
        CHECK_OK(ad_audio_read(sent, 0, 0, 16000, &b, &nb));
        CHECK_MSG(na == nb, "entry %d: %lld samples in the talk, %lld in %s", i, (long long)na,
                  (long long)nb, sent);
        float worst = 0.0f;
        for (int64_t k = 0; k < na && k < nb; k++)
            if (fabsf(a[k] - b[k]) > worst) worst = fabsf(a[k] - b[k]);
        CHECK_MSG(worst == 0.0f, "entry %d differs from %s by %g", i, sent, worst);
        free(a);
        free(b);
    }
    ad_dataset_free(&seg);
    char order[1400], *data = NULL;
    size_t size = 0;
    snprintf(order, sizeof order, "%s/eval/FILE_ORDER", opt.out_dir);
    CHECK_OK(ad_read_file(order, 1024, &data, &size));
    CHECK(data && strcmp(data, "talk_1\ntalk_2\n") == 0);
    free(data);
}

static void test_deterministic_across_workers(void) {
    ad_synth_corpus_options a = options("a"), b = options("b");
    b.jobs = 1;
    ad_synth_corpus_stats st;
    CHECK_OK(ad_synth_write_corpus(&b, &st));
    int different = 0;
    int files = compare_trees(a.out_dir, b.out_dir, &different);
    CHECK_MSG(files == 14 + 9 + 2 + 1 + 1 + 1, "%d files", files);
    CHECK_MSG(different == 0, "%d files differ between 2 workers and 1", different);
    /* Another seed gives other sentences. */
    ad_synth_corpus_options c = options("c");
    c.seed = 78;
    CHECK_OK(ad_synth_write_corpus(&c, &st));
    char pa[1400], pc[1400];
    snprintf(pa, sizeof pa, "%s/train/text/txt/ACL.6060.train.en-xx.en.txt", a.out_dir);
    snprintf(pc, sizeof pc, "%s/train/text/txt/ACL.6060.train.en-xx.en.txt", c.out_dir);
    CHECK(!same_file(pa, pc));
}

static void test_complete_or_nothing(void) {
    ad_synth_corpus_options opt = options("fails");
    opt.espeak = "false"; /* starts, exits 1 */
    ad_synth_corpus_stats st;
    CHECK_FAILS_WITH(ad_synth_write_corpus(&opt, &st), "exited with status 1");
    CHECK(!ad_path_exists(opt.out_dir));
    char tmp[1400];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", opt.out_dir, (long)getpid());
    CHECK(!ad_path_exists(tmp));
    opt.espeak = "/nonexistent/espeak-ng";
    CHECK_FAILS_WITH(ad_synth_write_corpus(&opt, &st), "cannot start /nonexistent/espeak-ng");
    CHECK(!ad_path_exists(opt.out_dir) && !ad_path_exists(tmp));
    /* An existing directory is kept unless forced. */
    ad_synth_corpus_options a = options("a");
    CHECK_FAILS_WITH(ad_synth_write_corpus(&a, &st), "already exists");
    char marker[1400];
    snprintf(marker, sizeof marker, "%s/synth_info.txt", a.out_dir);
    CHECK(ad_path_exists(marker));
    a.force = true;
    a.counts[0] = 2;
    CHECK_OK(ad_synth_write_corpus(&a, &st));
    char lines[1400];
    snprintf(lines, sizeof lines, "%s/train/segmented_wavs/gold/sent_3.wav", a.out_dir);
    CHECK(!ad_path_exists(lines)); /* the old tree is gone, not merged */
    a.talks = 9;
    CHECK_FAILS_WITH(ad_synth_write_corpus(&a, &st), "--talks");
}

int main(void) {
    if (!espeak_available()) TEST_SKIP("espeak-ng is not installed");
    snprintf(base, sizeof base, "%s/synth_corpus_%ld", AUDISTILL_TEST_TMP, (long)getpid());
    ad_remove_tree(base);
    if (ad_mkdir_p(base) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    RUN(test_layout_reads_back);
    RUN(test_deterministic_across_workers);
    RUN(test_complete_or_nothing);
    if (test_failed == 0) ad_remove_tree(base);
    return test_report();
}
