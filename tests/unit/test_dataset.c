/* Data set readers: the ACL 60/60 layout, segmentation YAML lists and manifests; every
 * inconsistency (line counts, missing audio, bad YAML/TSV fields) names the file and line. */
#include <unistd.h>

#include "data/dataset.h"
#include "io/file.h"
#include "test.h"

static char root[512];

static void write_text(const char *path, const char *text) {
    char *dir = ad_path_dirname(path);
    ad_mkdir_p(dir);
    free(dir);
    ad_write_file_atomic(path, text, strlen(text));
}

static void make_acl(const char *split, int n_wavs, const char *en, const char *de) {
    char p[1024];
    for (int i = 1; i <= n_wavs; i++) {
        snprintf(p, sizeof p, "%s/%s/segmented_wavs/gold/sent_%d.wav", root, split, i);
        write_text(p, "RIFF");
    }
    snprintf(p, sizeof p, "%s/%s/text/txt/ACL.6060.%s.en-xx.en.txt", root, split, split);
    write_text(p, en);
    snprintf(p, sizeof p, "%s/%s/text/txt/ACL.6060.%s.en-xx.de.txt", root, split, split);
    write_text(p, de);
}

static void test_acl_layout(void) {
    const char *langs[] = {"en", "de"};
    make_acl("dev", 3, "one\ntwo\r\nthree\n", "eins\nzwei\ndrei");
    ad_dataset ds;
    CHECK_OK(ad_dataset_load_acl(root, "dev", 2, langs, NULL, &ds));
    CHECK(ds.n_segments == 3 && ds.n_langs == 2 && ad_dataset_lang(&ds, "de") == 1);
    CHECK(strcmp(ds.segments[1].text[0], "two") == 0 &&
          strcmp(ds.segments[2].text[1], "drei") == 0);
    CHECK(strstr(ds.segments[2].audio, "gold/sent_3.wav") != NULL && ds.segments[0].duration <= 0);
    ad_dataset_free(&ds);

    /* Talk ids from the segmentation YAML beside the texts. */
    char p[1024];
    snprintf(p, sizeof p, "%s/dev/text/txt/ACL.6060.dev.en-xx.yaml", root);
    write_text(p, "- {duration: 2.8, offset: 0.59, speaker_id: talk_a, wav: talk_a.wav}\n"
                  "- {duration: 1.5, offset: 4.0, speaker_id: talk_a, wav: talk_a.wav}\n"
                  "- {duration: 3.0, offset: 0.1, speaker_id: talk_b, wav: talk_b.wav}\n");
    CHECK_OK(ad_dataset_load_acl(root, "dev", 2, langs, NULL, &ds));
    CHECK(ds.n_segments == 3 && strcmp(ds.segments[2].talk, "talk_b") == 0);
    ad_dataset_free(&ds);
    ad_dataset seg;
    CHECK_OK(ad_dataset_load_segmentation(p, "/talks", &seg));
    CHECK(seg.n_segments == 3 && seg.segments[0].offset == 0.59 && seg.segments[0].duration == 2.8);
    CHECK(strcmp(seg.segments[1].audio, "/talks/talk_a.wav") == 0);
    ad_dataset_free(&seg);

    make_acl("bad1", 3, "one\ntwo\nthree\n", "eins\nzwei\n");
    CHECK_FAILS_WITH(ad_dataset_load_acl(root, "bad1", 2, langs, NULL, &ds), "has 2 lines");
    make_acl("bad2", 2, "one\ntwo\nthree\n", "eins\nzwei\ndrei\n");
    CHECK_FAILS_WITH(ad_dataset_load_acl(root, "bad2", 2, langs, NULL, &ds),
                     "sent_3.wav is missing");
    make_acl("bad3", 4, "one\ntwo\nthree\n", "eins\nzwei\ndrei\n");
    CHECK_FAILS_WITH(ad_dataset_load_acl(root, "bad3", 2, langs, NULL, &ds), "only 3 lines");
    CHECK_FAILS_WITH(ad_dataset_load_acl(root, "nope", 2, langs, NULL, &ds), "no such split");
    const char *zh[] = {"en", "zh"};
    CHECK_FAILS_WITH(ad_dataset_load_acl(root, "dev", 2, zh, NULL, &ds), "en-xx.zh.txt");
    snprintf(p, sizeof p, "%s/bad.yaml", root);
    write_text(p, "- {duration: 2.8, offset: 0.59, speaker_id: t, wav: t.wav}\n- {duration: x, "
                  "offset: 1, speaker_id: t, wav: t.wav}\n");
    CHECK_FAILS_WITH(ad_dataset_load_acl(root, "dev", 2, langs, p, &ds), "bad.yaml:2: duration");
    write_text(p, "- {duration: 2.8, offset: 0.59, speaker_id: t, wav: t.wav}\n");
    CHECK_FAILS_WITH(ad_dataset_load_acl(root, "dev", 2, langs, p, &ds),
                     "lists 1 segments but the data set has 3");
    write_text(p, "- {duration: 2.8, offset: 0.59, wav: t.wav}\n");
    CHECK_FAILS_WITH(ad_dataset_load_segmentation(p, ".", &seg),
                     "bad.yaml:1: entry needs a string 'speaker_id'");
    write_text(p, "- [unclosed\n");
    CHECK_FAILS_WITH(ad_dataset_load_segmentation(p, ".", &seg), "YAML syntax error");
}

static void test_manifests(void) {
    char p[1024], wav[1024];
    snprintf(wav, sizeof wav, "%s/m/a.wav", root);
    write_text(wav, "RIFF");
    snprintf(p, sizeof p, "%s/m/list.tsv", root);
    write_text(p, "audio\toffset\tduration\ttalk\ten\tzh\na.wav\t1.5\t2\tt1\thello\t你好\n\na."
                  "wav\t\t\tt2\tbye\t再见\n");
    ad_dataset ds;
    CHECK_OK(ad_dataset_load_manifest(p, &ds));
    CHECK(ds.n_segments == 2 && ds.n_langs == 2 && strcmp(ds.langs[1], "zh") == 0);
    CHECK(ds.segments[0].offset == 1.5 && ds.segments[0].duration == 2 &&
          ds.segments[1].duration == 0);
    CHECK(strcmp(ds.segments[1].text[1], "再见") == 0 && strcmp(ds.segments[0].audio, wav) == 0);
    ad_dataset_free(&ds);

    write_text(p, "audio\ten\na.wav\thello\textra\n");
    CHECK_FAILS_WITH(ad_dataset_load_manifest(p, &ds), "list.tsv:2: 3 fields, the header has 2");
    write_text(p, "file\ten\na.wav\thello\n");
    CHECK_FAILS_WITH(ad_dataset_load_manifest(p, &ds), "must name an 'audio' column");
    write_text(p, "audio\toffset\ten\nmissing.wav\t0\thello\n");
    CHECK_FAILS_WITH(ad_dataset_load_manifest(p, &ds), "missing.wav does not exist");
    write_text(p, "audio\toffset\ten\na.wav\t-3\thello\n");
    CHECK_FAILS_WITH(ad_dataset_load_manifest(p, &ds), "offset must be a non-negative");

    snprintf(p, sizeof p, "%s/m/list.yaml", root);
    write_text(p, "- audio: a.wav\n  en: hello\n  de: hallo\n- audio: a.wav\n  offset: 2\n  "
                  "duration: 1\n  en: x\n  de: y\n");
    CHECK_OK(ad_dataset_load_manifest(p, &ds));
    CHECK(ds.n_segments == 2 && ds.segments[1].offset == 2 &&
          strcmp(ds.segments[0].text[1], "hallo") == 0);
    ad_dataset_free(&ds);
    write_text(p, "- audio: a.wav\n  en: hello\n- audio: a.wav\n  en: x\n  fr: y\n");
    CHECK_FAILS_WITH(ad_dataset_load_manifest(p, &ds), "list.yaml:5: key 'fr'");
    write_text(p, "- audio: a.wav\n  en: hello\n  de: hallo\n- audio: a.wav\n  en: x\n");
    CHECK_FAILS_WITH(ad_dataset_load_manifest(p, &ds), "needs a string 'de'");
    snprintf(p, sizeof p, "%s/m/list.csv", root);
    write_text(p, "x");
    CHECK_FAILS_WITH(ad_dataset_load_manifest(p, &ds), "must end in .tsv");
}

int main(void) {
    snprintf(root, sizeof root, "%s/dataset-%ld", AUDISTILL_TEST_TMP, (long)getpid());
    RUN(test_acl_layout);
    RUN(test_manifests);
    return test_report();
}
