/* safetensors: our writer and reader agree on every dtype and metadata; sharded checkpoints
 * open through their index; every malformed file is refused with a message that says what
 * is wrong (truncation, bad header length, not JSON, unknown dtype, size mismatch, overlap,
 * duplicates, a missing shard). */
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "core/rng.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "test.h"

static char tmp_dir[512];

static char *tmp_path(const char *name) {
    static char buf[8][768];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", tmp_dir, name);
    return p;
}

/* Writes 8-byte length + header + data as they are, for crafting broken files. */
static void write_raw(const char *path, const char *header, uint64_t declared_len, const void *data,
                      size_t data_len) {
    FILE *f = fopen(path, "wb");
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(declared_len >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}

static void write_simple(const char *path, const char *header, size_t data_len) {
    uint8_t data[256] = {0};
    write_raw(path, header, strlen(header), data, data_len);
}

static void test_round_trip(void) {
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)time(NULL), 1);
    float f32[6];
    uint16_t bf16[4], f16[3];
    int32_t i32[5];
    int8_t i8[7];
    for (int i = 0; i < 6; i++)
        f32[i] = ad_rng_normal(&rng);
    for (int i = 0; i < 4; i++)
        bf16[i] = ad_f32_to_bf16(ad_rng_normal(&rng));
    for (int i = 0; i < 3; i++)
        f16[i] = ad_f32_to_f16(ad_rng_normal(&rng));
    for (int i = 0; i < 5; i++)
        i32[i] = (int32_t)ad_rng_u32(&rng);
    for (int i = 0; i < 7; i++)
        i8[i] = (int8_t)ad_rng_u32(&rng);
    ad_st_write_item items[] = {
        {"language_model.model.norm.weight", AD_F32, 2, {2, 3}, f32},
        {"b", AD_BF16, 2, {2, 2}, bf16},
        {"c.half", AD_F16, 1, {3}, f16},
        {"ids", AD_I32, 1, {5}, i32},
        {"bytes", AD_I8, 3, {7, 1, 1}, i8},
        {"empty", AD_F32, 2, {0, 4}, NULL},
    };
    ad_st_metadata meta[] = {{"format", "pt"}, {"audistill", "test"}};
    const char *path = tmp_path("round.safetensors");
    CHECK_OK(ad_safetensors_write(path, items, 6, meta, 2));
    CHECK(!ad_path_exists(tmp_path("round.safetensors.tmp")));

    ad_safetensors st;
    CHECK_OK(ad_safetensors_open(&st, path));
    CHECK(st.n_entries == 6);
    CHECK(ad_safetensors_metadata(&st, "format") &&
          strcmp(ad_safetensors_metadata(&st, "format"), "pt") == 0);
    /* The header is padded so the data section starts 8-byte aligned. */
    CHECK(st.data_offset[0] % 8 == 0);
    float got[6];
    CHECK_OK(ad_safetensors_read_f32(&st, "language_model.model.norm.weight", 2, (int64_t[]){2, 3},
                                     got));
    CHECK(memcmp(got, f32, sizeof f32) == 0);
    CHECK_OK(ad_safetensors_read_f32(&st, "b", 2, (int64_t[]){2, 2}, got));
    for (int i = 0; i < 4; i++)
        CHECK(got[i] == ad_bf16_to_f32(bf16[i]));
    CHECK_OK(ad_safetensors_read_f32(&st, "c.half", 1, (int64_t[]){3}, got));
    for (int i = 0; i < 3; i++)
        CHECK(got[i] == ad_f16_to_f32(f16[i]));
    CHECK_FAILS_WITH(ad_safetensors_read_f32(&st, "b", 2, (int64_t[]){4, 1}, got),
                     "expected shape");
    CHECK_FAILS_WITH(ad_safetensors_read_f32(&st, "ids", 1, (int64_t[]){5}, got), "float dtype");
    CHECK_FAILS_WITH(ad_safetensors_read_f32(&st, "nope", 1, (int64_t[]){5}, got), "missing");
    const ad_st_entry *e = ad_safetensors_find(&st, "ids");
    ad_tensor t;
    CHECK(e && ad_safetensors_view(&st, e, &t) == AD_OK && memcmp(t.data, i32, sizeof i32) == 0);
    e = ad_safetensors_find(&st, "bytes");
    CHECK(e && e->ndim == 3 && ad_safetensors_view(&st, e, &t) == AD_OK &&
          memcmp(t.data, i8, 7) == 0);
    ad_safetensors_close(&st);

    ad_st_write_item dup[] = {{"x", AD_F32, 1, {1}, f32}, {"x", AD_F32, 1, {1}, f32}};
    CHECK_FAILS_WITH(ad_safetensors_write(tmp_path("dup.safetensors"), dup, 2, NULL, 0),
                     "used twice");
    CHECK(!ad_path_exists(tmp_path("dup.safetensors")));
    ad_st_write_item q4[] = {{"q", AD_Q4, 1, {4}, f32}};
    CHECK_FAILS_WITH(ad_safetensors_write(tmp_path("q4.safetensors"), q4, 1, NULL, 0),
                     "pack it as U8");
}

static void test_bad_files(void) {
    ad_safetensors st;
    const char *p = tmp_path("bad.safetensors");
    FILE *f = fopen(p, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "too short");

    write_raw(p, "{}", 1000, NULL, 0);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "runs past the end");

    write_simple(p, "{\"a\": {\"dtype\": \"F32\", ", 0);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "not valid JSON");

    write_simple(p, "[1, 2, 3]", 0);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "not an object");

    write_simple(p, "{\"a\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "unknown dtype 'F8_E5M2'");

    write_simple(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "needs 24");

    write_simple(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                 16);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "overlapping");

    write_simple(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "truncated");

    write_simple(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 8);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "more than once");

    write_simple(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "non-negative");

    write_simple(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "end 4 < begin 8");

    write_simple(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "dims");

    write_simple(p, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "dtype");

    write_simple(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "data_offsets");

    write_simple(p, "{\"__metadata__\": {\"k\": 3}}", 0);
    CHECK_FAILS_WITH(ad_safetensors_open(&st, p), "not a string");

    /* A valid file with an empty tensor and a zero-length range inside another is fine. */
    write_simple(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                 8);
    CHECK_OK(ad_safetensors_open(&st, p));
    ad_safetensors_close(&st);

    CHECK_FAILS_WITH(ad_safetensors_open(&st, tmp_path("does-not-exist.safetensors")),
                     "cannot open");
    CHECK_FAILS_WITH(ad_safetensors_open(&st, tmp_dir), "neither");
}

static void test_sharded(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sharded", tmp_dir);
    CHECK_OK(ad_mkdir_p(dir));
    float a[3] = {1, 2, 3}, b[2] = {4, 5};
    char p1[700], p2[700], idx[700];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    ad_st_write_item i1[] = {{"a", AD_F32, 1, {3}, a}}, i2[] = {{"b", AD_F32, 1, {2}, b}};
    CHECK_OK(ad_safetensors_write(p1, i1, 1, NULL, 0));
    CHECK_OK(ad_safetensors_write(p2, i2, 1, NULL, 0));
    const char *index = "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {"
                        "\"a\": \"model-00001-of-00002.safetensors\","
                        "\"b\": \"model-00002-of-00002.safetensors\"}}";
    CHECK_OK(ad_write_file_atomic(idx, index, strlen(index)));
    ad_safetensors st;
    CHECK_OK(ad_safetensors_open(&st, dir));
    CHECK(st.n_shards == 2 && st.n_entries == 2);
    float got[3];
    CHECK_OK(ad_safetensors_read_f32(&st, "b", 1, (int64_t[]){2}, got));
    CHECK(got[0] == 4 && got[1] == 5);
    ad_safetensors_close(&st);

    const char *wrong_shard = "{\"weight_map\": {\"a\": \"model-00002-of-00002.safetensors\","
                              "\"b\": \"model-00002-of-00002.safetensors\"}}";
    CHECK_OK(ad_write_file_atomic(idx, wrong_shard, strlen(wrong_shard)));
    CHECK_FAILS_WITH(ad_safetensors_open(&st, idx), "is not in shard");

    const char *missing = "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                          "\"b\": \"model-00003-of-00003.safetensors\"}}";
    CHECK_OK(ad_write_file_atomic(idx, missing, strlen(missing)));
    CHECK_FAILS_WITH(ad_safetensors_open(&st, dir), "does not exist");

    /* The same tensor name in two shards is a duplicate. */
    ad_st_write_item i3[] = {{"a", AD_F32, 1, {2}, b}};
    CHECK_OK(ad_safetensors_write(p2, i3, 1, NULL, 0));
    const char *dup = "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                      "\"a\": \"model-00002-of-00002.safetensors\"}}";
    CHECK_OK(ad_write_file_atomic(idx, dup, strlen(dup)));
    CHECK_FAILS_WITH(ad_safetensors_open(&st, dir), "appears more than once");
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "%s/safetensors-%ld", AUDISTILL_TEST_TMP, (long)getpid());
    if (ad_mkdir_p(tmp_dir) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    RUN(test_round_trip);
    RUN(test_bad_files);
    RUN(test_sharded);
    return test_report();
}
