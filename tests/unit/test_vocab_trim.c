/* Vocabulary pruning keeps texts' tokenization: the tokens a calibration text uses (with
 * ad_vocab_keep_set's closure over the merges that build them), written as a trimmed
 * tokenizer (ad_vocab_write_tokenizer), must tokenize that text into exactly the teacher's
 * tokens, renumbered. Before the closure, BPE's intermediate tokens ("Tr" on the way to
 * "Translate") were dropped with their merges and kept words fell apart into bytes.
 * The reference is the teacher's own tokenization (the tokenizer itself is checked against
 * transformers in test_tokenizer.c); the texts are fresh random sentences (seed printed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compress/prune.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/file.h"
#include "test.h"
#include "text/bpe.h"

static const char *const words[] = {
    "Translate",
    "the",
    "English",
    "speech",
    "into",
    "German",
    "Chinese",
    "There",
    "are",
    "five",
    "grey",
    "chairs",
    "in",
    "front",
    "of",
    "bed",
    "How",
    "many",
    "trees",
    "airport",
    "Vor",
    "dem",
    "Bett",
    "gibt",
    "es",
    "fünf",
    "graue",
    "Stühle",
    "Flughafen",
    "Straße",
    "sechsundvierzig",
    "Kuchen",
    "Schwester",
    "Heft",
    "我的",
    "书",
    "是黑色的",
    "蛋糕",
    "机场",
    "compression",
    "distillation",
    "quantization",
    "Pareto",
    "frontier",
    "segments",
    "resegmentation",
    "12",
    "2026",
};

/* A random sentence of 3-12 words from the list, with punctuation. */
static void random_sentence(ad_rng *rng, char *out, size_t cap) {
    size_t n = 0;
    int k = 3 + (int)(ad_rng_below(rng, 10));
    for (int i = 0; i < k; i++) {
        const char *w = words[ad_rng_below(rng, (uint32_t)(sizeof words / sizeof *words))];
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? " " : "", w);
    }
    snprintf(out + n, cap - n, "%s", ad_rng_u32(rng) % 2 ? "." : "?");
}

static void check_trim(const char *teacher_dir, const char *label, uint64_t seed) {
    ad_tokenizer *teacher = NULL, *student = NULL;
    char text[8192] = "", sentence[1024], other[1024];
    ad_rng rng;
    ad_rng_init(&rng, seed, 0);
    size_t n = 0;
    for (int i = 0; i < 20; i++) {
        random_sentence(&rng, sentence, sizeof sentence);
        n += (size_t)snprintf(text + n, sizeof text - n, "%s\n", sentence);
    }
    random_sentence(&rng, other, sizeof other);
    int32_t *ids = NULL, *sids = NULL, *keep = NULL;
    int n_ids = 0, n_sids = 0, n_keep = 0;
    char tmpl[1200], *out = NULL;
    snprintf(tmpl, sizeof tmpl, "%s/vocab_trim.XXXXXX", AUDISTILL_TEST_TMP);
    CHECK_OK(ad_tokenizer_load(teacher_dir, 0, &teacher));
    if (!teacher) return;
    int vocab = ad_tokenizer_size(teacher);
    CHECK_OK(ad_tokenizer_encode(teacher, text, strlen(text), &ids, &n_ids));
    CHECK_OK(ad_vocab_keep_set(teacher_dir, vocab, ids, n_ids, &keep, &n_keep));
    CHECK_MSG(n_keep < vocab, "%s: nothing was trimmed (%d of %d kept)", label, n_keep, vocab);
    out = mkdtemp(tmpl);
    CHECK(out != NULL);
    if (out && keep) {
        CHECK_OK(ad_vocab_write_tokenizer(teacher_dir, out, vocab, keep, n_keep));
        CHECK_OK(ad_tokenizer_load(out, 0, &student));
    }
    if (student) {
        CHECK_OK(ad_tokenizer_encode(student, text, strlen(text), &sids, &n_sids));
        int bad = -1;
        for (int i = 0; i < n_ids && i < n_sids && bad < 0; i++)
            if (sids[i] < 0 || sids[i] >= n_keep || keep[sids[i]] != ids[i]) bad = i;
        CHECK_MSG(n_sids == n_ids && bad < 0,
                  "%s (seed %llu): %d teacher tokens, %d trimmed, first difference at %d", label,
                  (unsigned long long)seed, n_ids, n_sids, bad);
        /* Any other text stays encodable and decodes back to itself. */
        int32_t *oids = NULL;
        int n_oids = 0;
        char *back = NULL;
        CHECK_OK(ad_tokenizer_encode(student, other, strlen(other), &oids, &n_oids));
        CHECK_OK(ad_tokenizer_decode(student, oids, n_oids, 0, &back));
        CHECK_MSG(back && !strcmp(back, other), "%s: '%s' decodes to '%s'", label, other,
                  back ? back : "(null)");
        free(oids), free(back);
    }
    printf("%s: %d of %d tokens kept for %d calibration tokens\n", label, n_keep, vocab, n_ids);
    if (out) ad_remove_tree(out);
    ad_tokenizer_free(teacher), ad_tokenizer_free(student);
    free(ids), free(sids), free(keep);
}

int main(void) {
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    printf("seed %llu\n", (unsigned long long)seed);
    test_current = "fixture tokenizer";
    check_trim(AUDISTILL_FIXTURES "/tiny_a", "tiny_a", seed);
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/qwen2-tokenizer", test_ref_dir());
    if (!ad_is_directory(dir)) {
        printf("SKIP (Qwen2 part): %s is absent: the Qwen2 vocabulary is a shared reference "
               "file\n",
               dir);
        return test_report();
    }
    test_current = "Qwen2 tokenizer";
    check_trim(dir, "qwen2", seed);
    return test_report();
}
