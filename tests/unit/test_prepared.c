/* Prepared sets (HDF5): what is appended reads back exactly (features, ids per language, the
 * prompt, UTF-8 texts, talks); h5py reads the same values; damaged or foreign files are
 * refused; an aborted write leaves nothing behind. */
#include <unistd.h>

#include "core/rng.h"
#include "data/prepared.h"
#include "io/file.h"
#include "test.h"

#define N_SEG  5
#define N_MELS 8

static char path[512];
static float *features[N_SEG];
static int frames[N_SEG];
static int32_t *ids[2][N_SEG];
static int n_ids[2][N_SEG];
static const char *texts[3][N_SEG] = {
    {"Hello world.", "Three red cars.", "", "Ünïcödé “quotes”", "last one"},
    {"Hallo Welt.", "Drei rote Autos.", "", "Grüße", "der letzte"},
    {"你好，世界。", "三辆红色的汽车。", "", "混合 mixed 文字", "最后一个"},
};

static void make_data(ad_rng *rng) {
    for (int i = 0; i < N_SEG; i++) {
        frames[i] = i == 2 ? 0 : 3 + (int)ad_rng_below(rng, 700); /* segment 2: empty audio */
        features[i] = malloc(sizeof(float) * (size_t)(frames[i] * N_MELS + 1));
        for (int k = 0; k < frames[i] * N_MELS; k++)
            features[i][k] = ad_rng_normal(rng);
        for (int l = 0; l < 2; l++) {
            n_ids[l][i] = (int)ad_rng_below(rng, 40);
            ids[l][i] = malloc(sizeof(int32_t) * (size_t)(n_ids[l][i] + 1));
            for (int k = 0; k < n_ids[l][i]; k++)
                ids[l][i][k] = (int32_t)ad_rng_below(rng, 156032);
        }
    }
}

static int write_set(void) {
    const char *text_langs[] = {"en", "de", "zh"}, *target_langs[] = {"de", "zh"};
    ad_prepared_info info = {.n_mels = N_MELS,
                             .hop_length = 160,
                             .sample_rate = 16000,
                             .source = "synthetic/dev",
                             .tokenizer = "sha:1234",
                             .n_text_langs = 3,
                             .text_langs = text_langs,
                             .n_target_langs = 2,
                             .target_langs = target_langs};
    ad_prepared_writer *w;
    AD_TRY(ad_prepared_create(path, &info, &w));
    int32_t before[] = {151647}, after[] = {151648, 1, 2, 3};
    if (ad_prepared_set_prompt(w, "de", "<|audio_bos|><|AUDIO|><|audio_eos|>Translate to German:",
                               before, 1, after, 4) < 0 ||
        ad_prepared_set_prompt(w, "zh", "zh prompt", before, 1, after, 2) < 0) {
        ad_prepared_abort(w);
        return AD_ERR;
    }
    for (int i = 0; i < N_SEG; i++) {
        const char *t[3] = {texts[0][i], texts[1][i], texts[2][i]};
        const int32_t *id[2] = {ids[0][i], ids[1][i]};
        int n[2] = {n_ids[0][i], n_ids[1][i]};
        char talk[32];
        snprintf(talk, sizeof talk, "talk_%d", i / 2);
        if (ad_prepared_append(w, features[i], frames[i], frames[i] > 2 ? frames[i] - 2 : 0,
                               -0.5f - (float)i, talk, t, id, n) < 0) {
            ad_prepared_abort(w);
            return AD_ERR;
        }
    }
    return ad_prepared_finish(w);
}

static void test_round_trip(void) {
    CHECK_OK(write_set());
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(!ad_path_exists(tmp));
    ad_prepared *p;
    CHECK_OK(ad_prepared_open(path, &p));
    if (!p) return;
    CHECK(ad_prepared_count(p) == N_SEG && ad_prepared_n_mels(p) == N_MELS);
    CHECK(strcmp(ad_prepared_attr(p, "tokenizer"), "sha:1234") == 0);
    for (int i = 0; i < N_SEG; i++) {
        int stored, valid;
        float pad;
        CHECK_OK(ad_prepared_frames(p, i, &stored, &valid, &pad));
        CHECK(stored == frames[i] && pad == -0.5f - (float)i);
        float *got = malloc(sizeof(float) * (size_t)(stored * N_MELS + 1));
        CHECK_OK(ad_prepared_features(p, i, got));
        CHECK(memcmp(got, features[i], sizeof(float) * (size_t)(stored * N_MELS)) == 0);
        free(got);
        const char *langs[] = {"de", "zh"};
        for (int l = 0; l < 2; l++) {
            int32_t *g;
            int n;
            CHECK_OK(ad_prepared_target_ids(p, langs[l], i, &g, &n));
            CHECK(n == n_ids[l][i] &&
                  (n == 0 || memcmp(g, ids[l][i], sizeof(int32_t) * (size_t)n) == 0));
            free(g);
        }
        const char *all[] = {"en", "de", "zh"};
        for (int l = 0; l < 3; l++) {
            char *t;
            CHECK_OK(ad_prepared_text(p, all[l], i, &t));
            CHECK_MSG(t && strcmp(t, texts[l][i]) == 0, "segment %d %s: '%s'", i, all[l], t);
            free(t);
        }
        char *talk;
        CHECK_OK(ad_prepared_talk(p, i, &talk));
        char want[32];
        snprintf(want, sizeof want, "talk_%d", i / 2);
        CHECK(talk && strcmp(talk, want) == 0);
        free(talk);
    }
    int32_t *before, *after;
    int nb, na;
    CHECK_OK(ad_prepared_prompt(p, "de", &before, &nb, &after, &na));
    CHECK(nb == 1 && na == 4 && before[0] == 151647 && after[3] == 3);
    free(before);
    free(after);
    int32_t *g;
    int n;
    CHECK_FAILS_WITH(ad_prepared_target_ids(p, "fr", 0, &g, &n), "no token ids for language 'fr'");
    CHECK_FAILS_WITH(ad_prepared_features(p, N_SEG, NULL), "out of range");
    ad_prepared_close(p);
}

/* h5py (the reference reader) sees the same values. */
static void test_h5py_reads_it(void) {
    if (system("python3 -c 'import h5py' 2>/dev/null") != 0) {
        printf("note: h5py not installed, h5py check skipped\n");
        return;
    }
    char expect[600], cmd[2048];
    snprintf(expect, sizeof expect, "%s.expect", path);
    FILE *f = fopen(expect, "w");
    fprintf(f, "%d %d %d\n", frames[1], n_ids[1][3], N_MELS);
    for (int k = 0; k < frames[1] * N_MELS; k++)
        fprintf(f, "%.9g\n", features[1][k]);
    for (int k = 0; k < n_ids[1][3]; k++)
        fprintf(f, "%d\n", ids[1][3][k]);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "python3 - '%s' '%s' <<'EOF'\n"
             "import sys, h5py, numpy as np\n"
             "h = h5py.File(sys.argv[1], 'r')\n"
             "vals = open(sys.argv[2]).read().split()\n"
             "fr, nid, nm = int(vals[0]), int(vals[1]), int(vals[2])\n"
             "feat = np.array(vals[3:3 + fr * nm], "
             "dtype=np.float64).astype(np.float32).reshape(fr, nm)\n"
             "ids = np.array(vals[3 + fr * nm:], dtype=np.int32)\n"
             "o = h['frame_offset'][:]\n"
             "assert h.attrs['format'] == 'audistill-prepared'\n"
             "assert np.array_equal(h['features'][o[1]:o[2]], feat)\n"
             "io = h['ids/zh/offset'][:]\n"
             "assert np.array_equal(h['ids/zh/tokens'][io[3]:io[4]], ids)\n"
             "assert h['text/zh'][0].decode() == '你好，世界。'\n"
             "assert h['talk'][4].decode() == 'talk_2'\n"
             "EOF",
             path, expect);
    CHECK_MSG(system(cmd) == 0, "h5py disagrees with what was written");
    unlink(expect);
}

static void test_bad_files(void) {
    ad_prepared *p;
    char bad[600];
    snprintf(bad, sizeof bad, "%s.bad", path);
    ad_write_file_atomic(bad, "not hdf5 at all", 15);
    CHECK_FAILS_WITH(ad_prepared_open(bad, &p), "not an HDF5 file");
    /* A truncated copy of a good file. */
    char *data;
    size_t size;
    CHECK_OK(ad_read_file(path, 1u << 30, &data, &size));
    ad_write_file_atomic(bad, data, size / 2);
    free(data);
    ad_error_clear();
    CHECK(ad_prepared_open(bad, &p) < 0 && strlen(ad_error()) > 0);
    unlink(bad);
    CHECK_FAILS_WITH(ad_prepared_open("/nonexistent/set.h5", &p), "does not exist");

    /* An aborted writer leaves neither the final file nor its temporary. */
    char aborted[600];
    snprintf(aborted, sizeof aborted, "%s.aborted", path);
    const char *langs[] = {"en"};
    ad_prepared_info info = {.n_mels = 4, .n_text_langs = 1, .text_langs = langs};
    ad_prepared_writer *w;
    CHECK_OK(ad_prepared_create(aborted, &info, &w));
    ad_prepared_abort(w);
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", aborted, (long)getpid());
    CHECK(!ad_path_exists(aborted) && !ad_path_exists(tmp));
}

int main(void) {
    snprintf(path, sizeof path, "%s/prepared-%ld.h5", AUDISTILL_TEST_TMP, (long)getpid());
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 3);
    make_data(&rng);
    RUN(test_round_trip);
    RUN(test_h5py_reads_it);
    RUN(test_bad_files);
    unlink(path);
    for (int i = 0; i < N_SEG; i++) {
        free(features[i]);
        free(ids[0][i]);
        free(ids[1][i]);
    }
    return test_report();
}
