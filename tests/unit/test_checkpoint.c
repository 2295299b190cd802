/* Checkpoints: bit-identical round trip of fresh random flat arenas and of the state (RNG
 * triples beyond 2^53 included); keep-K pruning; crash safety (a child killed by SIGKILL at
 * every fault point while writing checkpoint 2 over checkpoint 1 leaves a run whose
 * `--resume auto` lookup finds checkpoint 1 or 2, complete and bit-identical, never a broken
 * one; the next save removes the leftovers); damaged files (a flipped byte in each file,
 * truncation, a missing file, a missing state.json, an unknown version) refused by name, with
 * the lookup falling back to an intact checkpoint; config mismatches listing the keys. */
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/rng.h"
#include "io/file.h"
#include "test.h"
#include "train/checkpoint.h"

enum { NT = 4, NUMEL = 6 * 5 + 5 + 3 * 4 * 2 + 7 };
static const ad_param_slot SLOTS[NT] = {
    {"model.layers.0.self_attn.q_proj.weight", 0, 30, 2, {6, 5}},
    {"model.layers.0.self_attn.q_proj.bias", 30, 5, 1, {5}},
    {"model.audio_tower.conv1.weight", 35, 24, 3, {3, 4, 2}},
    {"model.norm.weight", 59, 7, 1, {7}},
};
static const ad_kv CONFIG[] = {{"train.lr", "3e-4"},
                               {"train.steps", "1000"},
                               {"student", "/models/s"},
                               {"data.langs", "[de, zh]"}};

static char root[4096];
static uint64_t seed;

/* Parameters and moments of "training step" `step`: fresh random values per test run. */
typedef struct {
    float p[NUMEL], m[NUMEL], v[NUMEL];
} arenas;

static void make_arenas(int step, arenas *a) {
    ad_rng r;
    ad_rng_init(&r, seed, (uint64_t)step);
    for (int i = 0; i < NUMEL; i++)
        a->p[i] = ad_rng_normal(&r), a->m[i] = ad_rng_normal(&r) * 1e-3f,
        a->v[i] = ad_rng_uniform(&r) * 1e-6f;
    a->p[3] = -0.0f, a->m[5] = 1e-40f; /* signed zero and a subnormal survive too */
}

static void make_state(int step, ad_ckpt_state *st) {
    memset(st, 0, sizeof *st);
    st->step = step;
    st->n_rng = 2;
    snprintf(st->rng[0].name, sizeof st->rng[0].name, "data");
    st->rng[0].rng = (ad_rng){seed, 7, 0xFFFFFFFFFFFFFFF0ull - (uint64_t)step};
    snprintf(st->rng[1].name, sizeof st->rng[1].name, "dropout");
    st->rng[1].rng = (ad_rng){(1ull << 60) + 1, 3, (uint64_t)step * 1000};
    st->cursor = (ad_data_cursor){step / 3, step % 3 * 17, seed ^ 0x9E3779B97F4A7C15ull};
    st->n_config = 4;
    st->config = (ad_kv *)CONFIG;
}

static int save(const char *run, int step, int keep) {
    arenas a;
    make_arenas(step, &a);
    ad_ckpt_state st;
    make_state(step, &st);
    ad_st_write_item model[NT], opt[2 * NT];
    char *n1 = NULL, *n2 = NULL, *n3 = NULL;
    int rc = ad_checkpoint_items(SLOTS, NT, a.p, "", model, &n1);
    if (rc == AD_OK) rc = ad_checkpoint_items(SLOTS, NT, a.m, ".exp_avg", opt, &n2);
    if (rc == AD_OK) rc = ad_checkpoint_items(SLOTS, NT, a.v, ".exp_avg_sq", opt + NT, &n3);
    char config[64];
    snprintf(config, sizeof config, "{\"model_type\": \"qwen2_audio\", \"step\": %d}\n", step);
    if (rc == AD_OK) rc = ad_checkpoint_write(run, &st, model, NT, opt, 2 * NT, config, keep, NULL);
    free(n1), free(n2), free(n3);
    return rc;
}

/* The checkpoint in `dir` holds exactly what save(step) wrote. */
static bool holds_step(const char *dir, int step) {
    arenas want, got;
    make_arenas(step, &want);
    memset(&got, 0xAB, sizeof got);
    ad_ckpt_state st, ws;
    make_state(step, &ws);
    if (ad_checkpoint_load(dir, &st) < 0) return false;
    bool ok = st.step == step && st.n_rng == 2 && st.has_cursor &&
              !memcmp(&st.cursor, &ws.cursor, sizeof ws.cursor) && st.n_config == 4 &&
              st.config_hash == ad_config_hash(CONFIG, 4, NULL);
    for (int i = 0; ok && i < 2; i++)
        ok = !strcmp(st.rng[i].name, ws.rng[i].name) && st.rng[i].rng.seed == ws.rng[i].rng.seed &&
             st.rng[i].rng.stream == ws.rng[i].rng.stream &&
             st.rng[i].rng.position == ws.rng[i].rng.position;
    for (int i = 0; ok && i < 4; i++)
        ok = !strcmp(st.config[i].key, CONFIG[i].key) &&
             !strcmp(st.config[i].value, CONFIG[i].value);
    ad_ckpt_state_free(&st);
    ok = ok && ad_checkpoint_read_arena(dir, "model.safetensors", SLOTS, NT, "", got.p) == AD_OK &&
         ad_checkpoint_read_arena(dir, "optimizer.safetensors", SLOTS, NT, ".exp_avg", got.m) ==
             AD_OK &&
         ad_checkpoint_read_arena(dir, "optimizer.safetensors", SLOTS, NT, ".exp_avg_sq", got.v) ==
             AD_OK;
    return ok && !memcmp(&got, &want, sizeof got); /* bit-identical, -0.0 and subnormals too */
}

static void path_of(char *out, const char *run, int step, const char *file) {
    snprintf(out, 4300, "%s/checkpoints/step_%08d%s%s", run, step, file ? "/" : "",
             file ? file : "");
}

static void fresh_run(char *run, const char *name) {
    snprintf(run, 4200, "%s/%s", root, name);
    CHECK_OK(ad_mkdir_p(run));
}

static void test_round_trip(void) {
    char run[4200], dir[4300], *found = NULL;
    fresh_run(run, "roundtrip");
    CHECK_OK(ad_checkpoint_find(run, &found));
    CHECK(found == NULL); /* a fresh run has none */
    CHECK_OK(save(run, 12, 3));
    path_of(dir, run, 12, NULL);
    CHECK_OK(ad_checkpoint_verify(dir));
    CHECK_MSG(holds_step(dir, 12), "%s", ad_error());
    CHECK_OK(ad_checkpoint_find(run, &found));
    CHECK(found && !strcmp(found, dir));
    free(found);
    /* HF names in the model file; torch's names for the moments */
    ad_safetensors st;
    char p[4400];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK_OK(ad_safetensors_open(&st, p));
    CHECK(st.n_entries == NT && ad_safetensors_find(&st, "model.norm.weight"));
    ad_safetensors_close(&st);
    snprintf(p, sizeof p, "%s/optimizer.safetensors", dir);
    CHECK_OK(ad_safetensors_open(&st, p));
    CHECK(st.n_entries == 2 * NT && ad_safetensors_find(&st, "model.norm.weight.exp_avg_sq"));
    ad_safetensors_close(&st);
    char *latest;
    size_t len;
    snprintf(p, sizeof p, "%s/checkpoints/latest", run);
    CHECK_OK(ad_read_file(p, 100, &latest, &len));
    CHECK(!strcmp(latest, "step_00000012\n"));
    free(latest);
    /* a reader's arena with the wrong shape is refused by tensor name */
    ad_param_slot bad = SLOTS[0];
    bad.shape[0] = 5, bad.shape[1] = 6;
    float tmp[30];
    CHECK_FAILS_WITH(ad_checkpoint_read_arena(dir, "model.safetensors", &bad, 1, "", tmp),
                     "q_proj.weight");
}

static int count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, needle) != NULL;
    if (d) closedir(d);
    return n;
}

static void test_keep(void) {
    char run[4200], ck[4300], dir[4300];
    fresh_run(run, "keep");
    for (int s = 1; s <= 5; s++)
        CHECK_OK(save(run, s, 2));
    snprintf(ck, sizeof ck, "%s/checkpoints", run);
    CHECK(count_entries(ck, "step_") == 2);
    path_of(dir, run, 4, NULL);
    CHECK(holds_step(dir, 4));
    /* resuming from step 4 and saving step 5 again replaces it; keep 1 drops step 4 */
    CHECK_OK(save(run, 5, 1));
    path_of(dir, run, 5, NULL);
    CHECK(holds_step(dir, 5) && count_entries(ck, "step_") == 1);
    /* an older step written after newer ones (a run resumed from further back) is kept even
     * when it is not among the newest by number */
    CHECK_OK(save(run, 3, 1));
    path_of(dir, run, 3, NULL);
    CHECK(ad_is_directory(dir) && count_entries(ck, "step_") == 1);
    char *found = NULL;
    CHECK_OK(ad_checkpoint_find(run, &found));
    CHECK(found && strstr(found, "step_00000003"));
    free(found);
    /* a dead writer's temporary directory is removed by the next save, even keeping all */
    const pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char leftover[4400];
    snprintf(leftover, sizeof leftover, "%s/step_00000009.tmp.%ld", ck, (long)dead);
    CHECK_OK(ad_mkdir_p(leftover));
    CHECK(count_entries(ck, ".tmp.") == 1);
    CHECK_OK(save(run, 6, 0));
    CHECK(count_entries(ck, ".tmp.") == 0 && count_entries(ck, "step_") == 2);
}

/* Kills a child at `fault` while it writes checkpoint 2 (keep 1) over checkpoint 1. */
static void crash_at(const char *fault, int expect_step) {
    char run[4200], name[96];
    snprintf(name, sizeof name, "crash_%s", fault);
    for (char *p = name; *p; p++)
        if (*p == ':') *p = '_';
    fresh_run(run, name);
    CHECK_OK(save(run, 1, 1));
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        setenv("AUDISTILL_FAULT_AT", fault, 1);
        ad_log_set_level(AD_LOG_ERROR);
        if (strstr(fault, ":2")) save(run, 2, 1); /* the first pass of the point is survived */
        _exit(save(run, 2, 1) == AD_OK ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "%s: the child was not killed "
              "(status %d)",
              fault, status);
    char *found = NULL;
    ad_log_set_level(AD_LOG_ERROR); /* the fallback warning is expected at some points */
    CHECK_MSG(ad_checkpoint_find(run, &found) == AD_OK && found, "%s: %s", fault, ad_error());
    ad_log_set_level(AD_LOG_INFO);
    if (!found) return;
    const int step = strstr(found, "step_00000002") ? 2 : strstr(found, "step_00000001") ? 1 : -1;
    CHECK_MSG(step == 1 || step == 2, "%s: found %s", fault, found);
    if (expect_step) CHECK_MSG(step == expect_step, "%s: found step %d", fault, step);
    CHECK_MSG(holds_step(found, step), "%s: %s is not exactly checkpoint %d: %s", fault, found,
              step, ad_error());
    printf("killed at %-15s -> resumes from complete checkpoint %d\n", fault, step);
    free(found);
    /* the next save (this process) removes the dead writer's leftovers */
    char ck[4300];
    snprintf(ck, sizeof ck, "%s/checkpoints", run);
    CHECK_OK(save(run, 3, 1));
    CHECK_MSG(
        count_entries(ck, ".tmp.") + count_entries(ck, ".del.") + count_entries(ck, ".old.") == 0 &&
            count_entries(ck, "step_") == 1,
        "%s: leftovers after the next save", fault);
}

static void test_crash_safety(void) {
    /* expected step: 1 until the rename, 2 from when `latest` names it, either in between */
    for (int i = 0; AD_CKPT_FAULT_POINTS[i]; i++) {
        const char *p = AD_CKPT_FAULT_POINTS[i];
        const int expect =
            !strcmp(p, "after_rename")                                                      ? 0
            : !strcmp(p, "after_latest") || !strcmp(p, "during_prune") || !strcmp(p, "end") ? 2
                                                                                            : 1;
        crash_at(p, expect);
    }
    /* the second save of the process (replacing step 2) dies */
    crash_at("after_state:2", 2);
    crash_at("before_rename:2", 2);
    crash_at("after_rename:2", 2);
}

static void flip_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    if (at < 0) {
        fseek(f, 0, SEEK_END);
        at = ftell(f) + at;
    }
    fseek(f, at, SEEK_SET);
    const int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x01, f);
    fclose(f);
}

static void test_damage(void) {
    const char *files[] = {"model.safetensors", "optimizer.safetensors", "config.json"};
    char run[4200], p[4300], dir[4300], *found = NULL;
    for (int i = 0; i < 3; i++) {
        fresh_run(run, files[i]);
        CHECK_OK(save(run, 1, 0));
        CHECK_OK(save(run, 2, 0));
        path_of(p, run, 2, files[i]);
        path_of(dir, run, 2, NULL);
        flip_byte(p, -3); /* inside the data, past any header */
        char want[128];
        snprintf(want, sizeof want, "%s fails its CRC-32 check", files[i]);
        CHECK_FAILS_WITH(ad_checkpoint_verify(dir), want);
        CHECK_FAILS_WITH(ad_checkpoint_find(dir, &found), want); /* named: refused, no fallback */
        ad_log_set_level(AD_LOG_ERROR);
        CHECK_OK(ad_checkpoint_find(run, &found)); /* auto: falls back to step 1 */
        ad_log_set_level(AD_LOG_INFO);
        CHECK(found && strstr(found, "step_00000001") && holds_step(found, 1));
        free(found), found = NULL;
        flip_byte(p, -3);
        CHECK_OK(ad_checkpoint_verify(dir)); /* restored */
    }
    path_of(p, run, 2, "model.safetensors");
    CHECK(truncate(p, 100) == 0);
    CHECK_FAILS_WITH(ad_checkpoint_verify(dir), "model.safetensors is 100 bytes");
    unlink(p);
    CHECK_FAILS_WITH(ad_checkpoint_verify(dir), "model.safetensors is missing");
    /* state.json: a flipped digit still parses, its own CRC catches it */
    fresh_run(run, "state");
    CHECK_OK(save(run, 1, 0));
    path_of(dir, run, 1, NULL);
    path_of(p, run, 1, "state.json");
    char *text;
    size_t len;
    CHECK_OK(ad_read_file(p, 1 << 20, &text, &len));
    char *at = strstr(text, "\"epoch\":");
    if (at) {
        at += strcspn(at, "0123456789");
        *at = *at == '0' ? '1' : '0';
        CHECK_OK(ad_write_file_atomic(p, text, len));
        CHECK_FAILS_WITH(ad_checkpoint_verify(dir), "state.json fails its CRC-32 check");
        *at = *at == '0' ? '1' : '0';
    }
    char *v = strstr(text, "\"format_version\":");
    if (v) {
        v += strcspn(v, "0123456789");
        *v = '9';
        CHECK_OK(ad_write_file_atomic(p, text, len));
        CHECK_FAILS_WITH(ad_checkpoint_verify(dir), "format version 9, this build reads version");
    }
    CHECK_OK(ad_write_file_atomic(p, text, len / 2));
    CHECK_FAILS_WITH(ad_checkpoint_verify(dir), "state.json is corrupt");
    free(text);
    unlink(p);
    CHECK_FAILS_WITH(ad_checkpoint_verify(dir), "has no state.json");
    ad_log_set_level(AD_LOG_ERROR);
    CHECK_FAILS_WITH(ad_checkpoint_find(run, &found), "holds no complete checkpoint");
    ad_log_set_level(AD_LOG_INFO);
    CHECK(found == NULL);
    /* a checkpoint renamed to another step is refused */
    fresh_run(run, "renamed");
    CHECK_OK(save(run, 4, 0));
    char from[4300];
    path_of(from, run, 4, NULL);
    path_of(dir, run, 5, NULL);
    CHECK(rename(from, dir) == 0);
    CHECK_FAILS_WITH(ad_checkpoint_verify(dir), "state.json says step 4");
}

static void test_config(void) {
    const ad_kv job[] = {{"data.langs", "[de]"},
                         {"train.steps", "2000"},
                         {"student", "/models/s"},
                         {"train.warmup", "10"}};
    const ad_kv reordered[] = {CONFIG[3], CONFIG[1], CONFIG[0], CONFIG[2]};
    const char *ignore[] = {"train.steps", NULL};
    CHECK(ad_config_hash(CONFIG, 4, NULL) == ad_config_hash(reordered, 4, NULL));
    CHECK(ad_config_hash(CONFIG, 4, NULL) != ad_config_hash(job, 4, NULL));
    ad_ckpt_state st;
    make_state(1, &st);
    CHECK_OK(ad_checkpoint_check_config("ck", &st, reordered, 4, NULL, false));
    CHECK_FAILS_WITH(ad_checkpoint_check_config("ck", &st, job, 4, ignore, false),
                     "3 keys differ: train.lr (checkpoint: 3e-4, job: absent); data.langs "
                     "(checkpoint: [de, zh], job: [de]); train.warmup (checkpoint: absent, job: "
                     "10) (use --force");
    CHECK_FAILS_WITH(ad_checkpoint_check_config("ck", &st, job, 4, NULL, false), "train.steps");
    ad_log_set_level(AD_LOG_ERROR);
    CHECK_OK(ad_checkpoint_check_config("ck", &st, job, 4, NULL, true));
    ad_log_set_level(AD_LOG_INFO);
}

int main(void) {
    seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    printf("seed %llu\n", (unsigned long long)seed);
    snprintf(root, sizeof root, "%s/checkpoint.XXXXXX", AUDISTILL_TEST_TMP);
    if (ad_mkdir_p(AUDISTILL_TEST_TMP) < 0 || !mkdtemp(root)) {
        fprintf(stderr, "cannot make a directory under %s\n", AUDISTILL_TEST_TMP);
        return 1;
    }
    RUN(test_round_trip);
    RUN(test_keep);
    RUN(test_crash_safety);
    RUN(test_damage);
    RUN(test_config);
    if (!test_failed) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    }
    return test_report();
}
