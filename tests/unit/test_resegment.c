/* Resegmentation against the mweralign package on 54 documents (fixture made by running the
 * mweralign command line): every output line identical (mweralign's trailing spaces
 * removed), for en/de word streams and zh character streams with missing, inserted and
 * substituted words, merged, dropped and repeated sentences, empty lines and a 3,000-word
 * document; then properties that must hold for any input. */
#include <cjson/cJSON.h>
#include <sys/wait.h>
#include <time.h>

#include "core/rng.h"
#include "eval/resegment.h"
#include "io/file.h"
#include "test.h"

static const char **string_array(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    const char **out = calloc((size_t)*n + 1, sizeof *out);
    for (int i = 0; out && i < *n; i++)
        out[i] = cJSON_GetArrayItem(a, i)->valuestring;
    return out;
}

static void test_against_mweralign(void) {
    char *json;
    size_t len;
    CHECK_OK(ad_read_file(AUDISTILL_FIXTURES "/resegment/docs.json", 1 << 24, &json, &len));
    cJSON *root = cJSON_Parse(json);
    CHECK(root != NULL);
    if (!root) return;
    const cJSON *docs = cJSON_GetObjectItem(root, "docs");
    int n_docs = cJSON_GetArraySize(docs), lines = 0, bad_lines = 0, bad_docs = 0;
    CHECK(n_docs >= 40);
    double seconds = 0;
    for (int d = 0; d < n_docs; d++) {
        const cJSON *doc = cJSON_GetArrayItem(docs, d);
        const char *name = cJSON_GetObjectItem(doc, "name")->valuestring;
        const char *lang = cJSON_GetObjectItem(doc, "lang")->valuestring;
        int nr, nh, ne;
        const char **ref = string_array(cJSON_GetObjectItem(doc, "ref"), &nr);
        const char **hyp = string_array(cJSON_GetObjectItem(doc, "hyp"), &nh);
        const char **want = string_array(cJSON_GetObjectItem(doc, "expected"), &ne);
        CHECK(ref && hyp && want && nr == ne);
        ad_reseg_result r;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = ad_resegment(ref, nr, hyp, nh,
                              strcmp(lang, "zh") ? AD_RESEG_WORDS : AD_RESEG_CHARS, &r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        seconds += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        CHECK_MSG(rc == AD_OK, "%s: %s", name, ad_error());
        if (rc == AD_OK) {
            CHECK(r.n_lines == nr);
            int bad = 0;
            for (int i = 0; i < nr && i < r.n_lines; i++, lines++) {
                if (strcmp(r.lines[i], want[i]) != 0) {
                    if (bad_lines < 5)
                        fprintf(stderr, "%s line %d:\n  ours      '%s'\n  mweralign '%s'\n", name,
                                i + 1, r.lines[i], want[i]);
                    bad++, bad_lines++;
                }
            }
            bad_docs += bad > 0;
            if (strstr(name, "long"))
                printf("%s: %lld hypothesis tokens, %d segments, %lld edits\n", name,
                       (long long)r.n_hyp_tokens, nr, (long long)r.cost);
            ad_reseg_free(&r);
        }
        free(ref), free(hyp), free(want);
    }
    CHECK_MSG(bad_lines == 0, "%d of %d lines (%d of %d documents) differ from mweralign",
              bad_lines, lines, bad_docs, n_docs);
    printf("%d documents, %d lines identical to mweralign %s (%.3f s)\n", n_docs - bad_docs, lines,
           cJSON_GetObjectItem(root, "mweralign")->valuestring, seconds);
    cJSON_Delete(root);
    free(json);
}

/* For random streams: one line per reference, and the output lines joined give the
 * hypothesis tokens back in order (resegmentation only moves line breaks). */
static void test_random_properties(void) {
    static const char *words[] = {"a", "b", "c", "D", "e", "ff", "g", "Ü", "ü", "h"};
    ad_rng rng;
    uint64_t seed = (uint64_t)time(NULL);
    ad_rng_init(&rng, seed, 0);
    printf("random properties: seed %llu\n", (unsigned long long)seed);
    for (int round = 0; round < 200; round++) {
        int nr = 1 + (int)(ad_rng_u32(&rng) % 12), nh = (int)(ad_rng_u32(&rng) % 6);
        char *ref[12], *hyp[6], joined[4096] = "", back[4096] = "";
        for (int i = 0; i < nr; i++) {
            char buf[256] = "";
            int n = (int)(ad_rng_u32(&rng) % 7);
            for (int k = 0; k < n; k++) {
                strcat(buf, words[ad_rng_u32(&rng) % 10]);
                strcat(buf, " ");
            }
            ref[i] = strdup(buf);
        }
        for (int i = 0; i < nh; i++) {
            char buf[512] = "";
            int n = (int)(ad_rng_u32(&rng) % 15);
            for (int k = 0; k < n; k++) {
                strcat(buf, words[ad_rng_u32(&rng) % 10]);
                strcat(buf, ad_rng_u32(&rng) % 4 ? " " : "  ");
            }
            hyp[i] = strdup(buf);
            for (char *p = strtok(buf, " "); p; p = strtok(NULL, " ")) {
                strcat(joined, p);
                strcat(joined, " ");
            }
        }
        ad_reseg_result r;
        CHECK_OK(ad_resegment((const char *const *)ref, nr, (const char *const *)hyp, nh,
                              AD_RESEG_WORDS, &r));
        CHECK(r.n_lines == nr);
        for (int i = 0; i < r.n_lines; i++) {
            if (r.lines[i][0]) {
                strcat(back, r.lines[i]);
                strcat(back, " ");
            }
        }
        CHECK_MSG(strcmp(back, joined) == 0, "round %d: '%s' vs '%s'", round, back, joined);
        ad_reseg_free(&r);
        for (int i = 0; i < nr; i++)
            free(ref[i]);
        for (int i = 0; i < nh; i++)
            free(hyp[i]);
    }
}

static void write_text(const char *path, const char **lines, int n) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\n", lines[i]);
    fclose(f);
}

/* The command line on one document per language: files in, one line per reference out. */
static void test_command(void) {
    char *json;
    size_t len;
    CHECK_OK(ad_read_file(AUDISTILL_FIXTURES "/resegment/docs.json", 1 << 24, &json, &len));
    cJSON *root = cJSON_Parse(json);
    const cJSON *docs = root ? cJSON_GetObjectItem(root, "docs") : NULL;
    const char *names[] = {"de-long", "zh-long"};
    for (int k = 0; k < 2 && docs; k++) {
        const cJSON *doc = NULL;
        for (int d = 0; d < cJSON_GetArraySize(docs) && !doc; d++)
            if (!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(docs, d), "name")->valuestring,
                        names[k]))
                doc = cJSON_GetArrayItem(docs, d);
        CHECK(doc != NULL);
        if (!doc) continue;
        int nr, nh, ne;
        const char **ref = string_array(cJSON_GetObjectItem(doc, "ref"), &nr);
        const char **hyp = string_array(cJSON_GetObjectItem(doc, "hyp"), &nh);
        const char **want = string_array(cJSON_GetObjectItem(doc, "expected"), &ne);
        char cmd[2048], **got = NULL;
        int ng = 0;
        write_text(AUDISTILL_TEST_TMP "/reseg.ref", ref, nr);
        write_text(AUDISTILL_TEST_TMP "/reseg.hyp", hyp, nh);
        snprintf(cmd, sizeof cmd,
                 "'%s' resegment --hyp '%s/reseg.hyp' --ref '%s/reseg.ref' --lang %s -o "
                 "'%s/reseg.out'",
                 AUDISTILL_BIN, AUDISTILL_TEST_TMP, AUDISTILL_TEST_TMP, k ? "zh" : "de",
                 AUDISTILL_TEST_TMP);
        CHECK(system(cmd) == 0);
        CHECK_OK(ad_read_lines(AUDISTILL_TEST_TMP "/reseg.out", &got, &ng));
        CHECK_MSG(ng == nr, "%s: %d lines for %d references", names[k], ng, nr);
        int same = 0;
        for (int i = 0; i < ng && i < ne; i++)
            same += !strcmp(got[i], want[i]);
        CHECK_MSG(same == ne, "%s: %d of %d lines as mweralign", names[k], same, ne);
        ad_free_lines(got, ng);
        free(ref), free(hyp), free(want);
    }
    cJSON_Delete(root);
    free(json);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' resegment --hyp x --ref y 2>/dev/null", AUDISTILL_BIN);
    int st = system(cmd);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 2, "missing -o must be a usage error");
    snprintf(cmd, sizeof cmd,
             "'%s' resegment --hyp %s/none.hyp --ref %s/reseg.ref -o %s/x.out 2>%s/err",
             AUDISTILL_BIN, AUDISTILL_TEST_TMP, AUDISTILL_TEST_TMP, AUDISTILL_TEST_TMP,
             AUDISTILL_TEST_TMP);
    st = system(cmd);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "a missing file must exit 1");
}

static void test_errors(void) {
    ad_reseg_result r;
    const char *ref[] = {"ein Satz", "noch einer"}, *bad[] = {"ok \xff"};
    CHECK_FAILS_WITH(ad_resegment(ref, 0, ref, 1, AD_RESEG_WORDS, &r), "no reference");
    CHECK_FAILS_WITH(ad_resegment(ref, 2, bad, 1, AD_RESEG_WORDS, &r), "hypothesis line 1");
    CHECK_FAILS_WITH(ad_resegment(bad, 1, ref, 2, AD_RESEG_WORDS, &r), "not valid UTF-8");
    /* Perfect input keeps its segmentation. */
    const char *hyp[] = {"Ein Satz noch", "einer"};
    CHECK_OK(ad_resegment(ref, 2, hyp, 2, AD_RESEG_WORDS, &r));
    CHECK(r.n_lines == 2 && !strcmp(r.lines[0], "Ein Satz") && !strcmp(r.lines[1], "noch einer"));
    CHECK(r.cost == 0);
    ad_reseg_free(&r);
}

int main(void) {
    RUN(test_against_mweralign);
    RUN(test_random_properties);
    RUN(test_errors);
    RUN(test_command);
    return test_report();
}
