/* Metrics files: CRC-32C against the published vectors (RFC 3720) and a bitwise reference;
 * the TFRecord framing against a bitwise masked CRC; records written by ad_metrics read back
 * (CRCs verified, Event protobufs decoded: file_version first, then steps, tags and float
 * values exactly); damaged event files refused; metrics.jsonl parses line by line with null for
 * non-finite values and escaped tags.
 *
 * `test_metrics --write RUN_DIR` writes the fixed scalars that tests/cli/tensorboard.sh reads
 * back with TensorBoard's own reader. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <unistd.h>

#include "io/file.h"
#include "test.h"
#include "train/metrics.h"

/* Bit by bit, reflected Castagnoli polynomial: independent of the table-driven ad_crc32c. */
static uint32_t crc32c_bitwise(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void test_crc32c(void) {
    CHECK(ad_crc32c(0, "123456789", 9) == 0xE3069283u);
    unsigned char zeros[32] = {0}, ones[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++)
        ones[i] = 0xFF, inc[i] = (unsigned char)i, dec[i] = (unsigned char)(31 - i);
    CHECK(ad_crc32c(0, zeros, 32) == 0x8A9136AAu); /* RFC 3720 B.4 */
    CHECK(ad_crc32c(0, ones, 32) == 0x62A8AB43u);
    CHECK(ad_crc32c(0, inc, 32) == 0x46DD794Eu);
    CHECK(ad_crc32c(0, dec, 32) == 0x113FDB5Cu);
    /* continuing from a partial CRC equals one pass */
    CHECK(ad_crc32c(ad_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
    unsigned char buf[1000];
    for (int i = 0; i < 1000; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n <= 1000; n += 37)
        CHECK(ad_crc32c(0, buf, n) == crc32c_bitwise(buf, n));
}

static uint32_t masked_ref(const unsigned char *p, size_t n) {
    const uint32_t c = crc32c_bitwise(p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void test_framing(void) {
    const char *payload = "hello, tensorboard";
    unsigned char out[64];
    const size_t n = strlen(payload), total = ad_tfrecord_frame(payload, n, out);
    CHECK(total == n + 16 && out[0] == n && !out[1] && !out[7]);
    CHECK(le32(out + 8) == masked_ref(out, 8));
    CHECK(!memcmp(out + 12, payload, n));
    CHECK(le32(out + 12 + n) == masked_ref((const unsigned char *)payload, n));
    size_t pos = 0, got_n;
    const unsigned char *got;
    CHECK(ad_tfrecord_next(out, total, &pos, &got, &got_n) == 1 && got_n == n && pos == total);
    CHECK(ad_tfrecord_next(out, total, &pos, &got, &got_n) == 0);
}

/* The scalars both this test and tensorboard.sh expect. */
static const char *TAGS[] = {"train/loss", "train/lr", "train/grad_norm", "say \"hi\"\\"};
static double value_of(int tag, int step) {
    switch (tag) {
    case 0: return 2.5 / step;
    case 1: return 1e-3 * step;
    case 2: return sqrt((double)step);
    default: return step == 3 ? NAN : -step;
    }
}

static int write_fixed(const char *run) {
    ad_metrics m;
    AD_TRY(ad_metrics_open(&m, run));
    int rc = AD_OK;
    for (int step = 1; step <= 5 && rc == AD_OK; step++) {
        double v[4];
        for (int t = 0; t < 4; t++)
            v[t] = value_of(t, step);
        rc = ad_metrics_write(&m, step * 10, 4, TAGS, v);
    }
    ad_metrics_close(&m);
    return rc;
}

static char *events_file(const char *run) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/tensorboard", run);
    DIR *d = opendir(dir);
    struct dirent *e;
    char *found = NULL;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "events.out.tfevents.", 20)) found = ad_path_join(dir, e->d_name);
    if (d) closedir(d);
    return found;
}

static void test_round_trip(const char *tmp) {
    char run[4200];
    snprintf(run, sizeof run, "%s/run", tmp);
    CHECK_OK(write_fixed(run));
    char *path = events_file(run), *data = NULL;
    size_t len = 0;
    CHECK(path && ad_read_file(path, 1 << 20, &data, &len) == AD_OK);
    if (!data) return;
    size_t pos = 0, n;
    const unsigned char *p, *buf = (const unsigned char *)data;
    ad_tb_event e;
    int records = 0, r;
    while ((r = ad_tfrecord_next(buf, len, &pos, &p, &n)) == 1) {
        CHECK_OK(ad_tb_event_decode(p, n, &e));
        CHECK(e.wall_time > 1.6e9); /* seconds since 1970, now-ish */
        if (records == 0) {
            CHECK(!strcmp(e.file_version, "brain.Event:2") && e.n_values == 0);
        } else {
            CHECK(e.step == records * 10 && e.n_values == 4 && !e.file_version[0]);
            for (int t = 0; t < 4 && t < e.n_values; t++) {
                const float want = (float)value_of(t, records);
                CHECK_MSG(!strcmp(e.tags[t], TAGS[t]), "tag %s", e.tags[t]);
                CHECK_MSG(!memcmp(&e.values[t], &want, 4), "step %d %s: %g vs %g", records, TAGS[t],
                          e.values[t], want);
            }
        }
        records++;
    }
    CHECK(r == 0 && records == 6);
    /* damage: a flipped payload byte, then a torn tail */
    data[40] ^= 0x10;
    pos = 0;
    while ((r = ad_tfrecord_next(buf, len, &pos, &p, &n)) == 1) {
    }
    CHECK(r < 0 && strstr(ad_error(), "fails its CRC-32C"));
    data[40] ^= 0x10;
    pos = 0;
    while ((r = ad_tfrecord_next(buf, len - 3, &pos, &p, &n)) == 1) {
    }
    CHECK(r < 0 && strstr(ad_error(), "past the end"));
    free(data), free(path);
    /* metrics.jsonl: one parseable object per record, NaN as null */
    char **lines;
    int n_lines;
    char jl[4300];
    snprintf(jl, sizeof jl, "%s/metrics.jsonl", run);
    CHECK_OK(ad_read_lines(jl, &lines, &n_lines));
    CHECK(n_lines == 5);
    for (int i = 0; i < n_lines; i++) {
        cJSON *o = cJSON_Parse(lines[i]);
        CHECK_MSG(o != NULL, "line %d is not JSON: %s", i + 1, lines[i]);
        if (!o) continue;
        CHECK(cJSON_GetObjectItem(o, "step")->valuedouble == (i + 1) * 10);
        CHECK(cJSON_GetObjectItem(o, "wall_time")->valuedouble > 1.6e9);
        for (int t = 0; t < 4; t++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, TAGS[t]);
            const double want = value_of(t, i + 1);
            if (isnan(want))
                CHECK(cJSON_IsNull(v));
            else
                CHECK_MSG(cJSON_IsNumber(v) && fabs(v->valuedouble - want) <= 1e-8 * fabs(want),
                          "line %d %s", i + 1, TAGS[t]);
        }
        cJSON_Delete(o);
    }
    ad_free_lines(lines, n_lines);
    /* appending: a second writer adds lines and its own event file */
    CHECK_OK(write_fixed(run));
    CHECK_OK(ad_read_lines(jl, &lines, &n_lines));
    CHECK(n_lines == 10);
    ad_free_lines(lines, n_lines);
}

static void test_bad_tags(const char *tmp) {
    char run[4200], long_tag[300];
    snprintf(run, sizeof run, "%s/bad", tmp);
    ad_metrics m;
    CHECK_OK(ad_metrics_open(&m, run));
    memset(long_tag, 'x', sizeof long_tag - 1);
    long_tag[sizeof long_tag - 1] = '\0';
    const char *tags[] = {long_tag};
    const double v = 1;
    CHECK_FAILS_WITH(ad_metrics_write(&m, 1, 1, tags, &v), "longer than 256 bytes");
    ad_metrics_close(&m);
    CHECK_FAILS_WITH(ad_metrics_open(&m, "/proc/no/such/dir"), "cannot create directory /proc/no");
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write")) {
        if (write_fixed(argv[2]) < 0) {
            fprintf(stderr, "%s\n", ad_error());
            return 1;
        }
        return 0;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/metrics.XXXXXX", AUDISTILL_TEST_TMP);
    if (ad_mkdir_p(AUDISTILL_TEST_TMP) < 0 || !mkdtemp(tmp)) {
        fprintf(stderr, "cannot make a directory under %s\n", AUDISTILL_TEST_TMP);
        return 1;
    }
    RUN(test_crc32c);
    RUN(test_framing);
    test_current = "test_round_trip";
    test_round_trip(tmp);
    test_current = "test_bad_tags";
    test_bad_tags(tmp);
    if (!test_failed) {
        char cmd[4300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    return test_report();
}
