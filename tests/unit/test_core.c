/* Core: dtype conversions against exact known encodings, views and slices, arenas, the Philox
 * generator against the Random123 known-answer vectors, and resumable RNG streams. */
#include <stdint.h>

#include "core/arena.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "test.h"

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_bf16(void) {
    CHECK(ad_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(ad_f32_to_bf16(-2.0f) == 0xc000);
    CHECK(ad_f32_to_bf16(bits_f32(0x3f808000u)) == 0x3f80); /* tie -> even (down) */
    CHECK(ad_f32_to_bf16(bits_f32(0x3f818000u)) == 0x3f82); /* tie -> even (up) */
    CHECK(ad_f32_to_bf16(bits_f32(0x3f808001u)) == 0x3f81); /* above the tie */
    CHECK(ad_f32_to_bf16(INFINITY) == 0x7f80);
    CHECK(ad_f32_to_bf16(bits_f32(0x7f7fffffu)) == 0x7f80); /* FLT_MAX rounds to inf */
    uint16_t nan = ad_f32_to_bf16(NAN);
    CHECK((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
    /* Every bf16 value survives the round trip. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ad_bf16_to_f32((uint16_t)h);
        if (!isnan(f) && ad_f32_to_bf16(f) != h) bad++;
    }
    CHECK_MSG(bad == 0, "%d bf16 values do not round-trip", bad);
}

static void test_f16(void) {
    CHECK(ad_f32_to_f16(1.0f) == 0x3c00);
    CHECK(ad_f32_to_f16(-2.0f) == 0xc000);
    CHECK(ad_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(ad_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(ad_f32_to_f16(65520.0f) == 0x7c00); /* rounds to inf */
    CHECK(ad_f32_to_f16(0.1f) == 0x2e66);
    CHECK(ad_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001);    /* smallest subnormal */
    CHECK(ad_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);    /* tie -> even (zero) */
    CHECK(ad_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002);    /* tie -> even (two) */
    CHECK(ad_f32_to_f16(ldexpf(1.0f, -14)) == 0x0400);    /* smallest normal */
    CHECK(ad_f32_to_f16(ldexpf(1023.0f, -24)) == 0x03ff); /* largest subnormal */
    CHECK(ad_f32_to_f16(-0.0f) == 0x8000);
    CHECK_NEAR(ad_f16_to_f32(0x3555), 0.33325195f, 1e-8);
    CHECK(ad_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(isinf(ad_f16_to_f32(0xfc00)) && ad_f16_to_f32(0xfc00) < 0);
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ad_f16_to_f32((uint16_t)h);
        if (!isnan(f) && ad_f32_to_f16(f) != h) bad++;
    }
    CHECK_MSG(bad == 0, "%d f16 values do not round-trip", bad);
    /* Rounding of random floats agrees with the nearest of the two neighbouring halves. */
    ad_rng rng;
    ad_rng_init(&rng, 99, 0);
    int wrong = 0;
    for (int i = 0; i < 100000; i++) {
        float f = (ad_rng_uniform(&rng) - 0.5f) * ldexpf(1.0f, (int)ad_rng_below(&rng, 40) - 24);
        uint16_t h = ad_f32_to_f16(f);
        double err = fabs((double)ad_f16_to_f32(h) - f);
        double err_up = fabs((double)ad_f16_to_f32((uint16_t)(h + 1)) - f);
        double err_down = (h & 0x7fff) ? fabs((double)ad_f16_to_f32((uint16_t)(h - 1)) - f) : err;
        if (err > err_up || err > err_down) wrong++;
    }
    CHECK_MSG(wrong == 0, "%d random values not rounded to the nearest f16", wrong);
}

static void test_views(void) {
    float data[24];
    for (int i = 0; i < 24; i++)
        data[i] = (float)i;
    ad_tensor t, v, s, tr;
    CHECK_OK(ad_tensor_init(&t, data, AD_F32, AD_DEVICE_CPU, 3, (int64_t[]){2, 3, 4}, "t"));
    CHECK(ad_tensor_numel(&t) == 24 && ad_tensor_nbytes(&t) == 96);
    CHECK(ad_tensor_is_contiguous(&t));
    CHECK_OK(ad_tensor_reshape(&t, 2, (int64_t[]){6, 4}, &v));
    CHECK(v.shape[0] == 6 && v.stride[0] == 4);
    CHECK_FAILS_WITH(ad_tensor_reshape(&t, 2, (int64_t[]){5, 4}, &v), "cannot reshape");
    CHECK_OK(ad_tensor_slice(&t, 1, 1, 2, &s)); /* t[:, 1:3, :] */
    CHECK(!ad_tensor_is_contiguous(&s));
    CHECK(*(float *)ad_tensor_at(&s, (int64_t[]){1, 1, 3}) == 12 + 8 + 3);
    CHECK_FAILS_WITH(ad_tensor_slice(&t, 1, 2, 2, &s), "outside dim 1");
    CHECK_OK(ad_tensor_transpose(&t, 1, 2, &tr));
    CHECK(*(float *)ad_tensor_at(&tr, (int64_t[]){1, 3, 2}) == 12 + 2 * 4 + 3);
    float out[24];
    CHECK_OK(ad_tensor_to_f32(&tr, out));
    CHECK(out[1] == 4.0f && out[3] == 1.0f); /* row 0 of the transposed [4,3] block */
    CHECK_FAILS_WITH(
        ad_tensor_init(&t, data, AD_F32, AD_DEVICE_CPU, 5, (int64_t[]){1, 1, 1, 1, 1}, "x"),
        "at most 4");

    /* Packed 4-bit: 2 rows of 6 codes = 3 bytes each; slicing row 1 starts at byte 3. */
    uint8_t packed[6] = {0};
    ad_tensor q, qrow;
    CHECK_OK(ad_tensor_init(&q, packed, AD_Q4, AD_DEVICE_CPU, 2, (int64_t[]){2, 6}, "q"));
    CHECK(ad_tensor_nbytes(&q) == 6);
    CHECK_OK(ad_tensor_slice(&q, 0, 1, 1, &qrow));
    CHECK((uint8_t *)qrow.data == packed + 3);
    CHECK_FAILS_WITH(ad_tensor_slice(&q, 1, 0, 2, &qrow), "dim 0 only");
    ad_tensor q3;
    CHECK_OK(ad_tensor_init(&q3, packed, AD_Q3, AD_DEVICE_CPU, 2, (int64_t[]){2, 8}, "q3"));
    CHECK(ad_tensor_nbytes(&q3) == 6);
    CHECK_FAILS_WITH(ad_tensor_to_f32(&q3, out), "scales");

    ad_dtype dt;
    CHECK_OK(ad_dtype_parse("BF16", &dt));
    CHECK(dt == AD_BF16);
    CHECK_FAILS_WITH(ad_dtype_parse("F8_E4M3", &dt), "unknown dtype");
    uint16_t bf[2] = {0x3f80, 0xc000};
    ad_tensor b;
    CHECK_OK(ad_tensor_init(&b, bf, AD_BF16, AD_DEVICE_CPU, 1, (int64_t[]){2}, "b"));
    CHECK_OK(ad_tensor_to_f32(&b, out));
    CHECK(out[0] == 1.0f && out[1] == -2.0f);
}

static void test_arena(void) {
    ad_arena_plan plan = {0};
    int64_t s1[] = {3, 5}, s2[] = {7};
    ad_arena_plan_tensor(&plan, AD_F32, 2, s1);
    ad_arena_plan_tensor(&plan, AD_BF16, 1, s2);
    ad_arena arena;
    CHECK_OK(ad_arena_init(&arena, plan.bytes, "test"));
    ad_tensor a, b, c;
    CHECK_OK(ad_arena_tensor(&arena, &a, AD_F32, 2, s1, "a"));
    CHECK_OK(ad_arena_tensor(&arena, &b, AD_BF16, 1, s2, "b"));
    CHECK(((uintptr_t)a.data % AD_ARENA_ALIGN) == 0 && ((uintptr_t)b.data % AD_ARENA_ALIGN) == 0);
    CHECK(arena.used == plan.bytes);
    CHECK_FAILS_WITH(ad_arena_tensor(&arena, &c, AD_F32, 1, s2, "c"), "planned too small");
    size_t mark = ad_arena_mark(&arena);
    ad_arena_reset(&arena, 0);
    CHECK(arena.used == 0 && arena.peak == mark);
    ad_arena_free(&arena);
}

/* Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors). */
static void test_philox_known_answers(void) {
    struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        ad_philox4x32_10(kat[i].ctr, kat[i].key, out);
        CHECK_MSG(memcmp(out, kat[i].out, sizeof out) == 0, "vector %zu: %08x %08x %08x %08x", i,
                  out[0], out[1], out[2], out[3]);
    }
}

static void test_rng_streams(void) {
    ad_rng a, b;
    ad_rng_init(&a, 42, 7);
    for (int i = 0; i < 13; i++)
        ad_rng_u32(&a);
    b = a; /* saving the state is copying three integers */
    uint32_t x[20], y[20];
    for (int i = 0; i < 20; i++)
        x[i] = ad_rng_u32(&a);
    ad_rng c;
    ad_rng_init(&c, b.seed, b.stream);
    c.position = b.position;
    for (int i = 0; i < 20; i++)
        y[i] = ad_rng_u32(&c);
    CHECK(memcmp(x, y, sizeof x) == 0);
    ad_rng other;
    ad_rng_init(&other, 42, 8);
    CHECK(ad_rng_u32(&other) != x[0] || ad_rng_u32(&other) != x[1]);

    double sum = 0, sum2 = 0, usum = 0;
    int out_of_range = 0;
    const int n = 200000;
    ad_rng_init(&a, 5, 0);
    for (int i = 0; i < n; i++) {
        double z = ad_rng_normal(&a);
        sum += z;
        sum2 += z * z;
        float u = ad_rng_uniform(&a);
        out_of_range += !(u >= 0.0f && u < 1.0f);
        usum += u;
    }
    CHECK(out_of_range == 0);
    CHECK_NEAR(sum / n, 0.0, 0.01);
    CHECK_NEAR(sum2 / n, 1.0, 0.02);
    CHECK_NEAR(usum / n, 0.5, 0.005);

    uint32_t perm[100], seen[100] = {0};
    for (uint32_t i = 0; i < 100; i++)
        perm[i] = i;
    ad_rng_shuffle_u32(&a, perm, 100);
    int moved = 0;
    for (uint32_t i = 0; i < 100; i++) {
        seen[perm[i]]++;
        moved += perm[i] != i;
    }
    int all_once = 1;
    for (int i = 0; i < 100; i++)
        all_once &= seen[i] == 1;
    CHECK(all_once && moved > 50);
}

static void test_duration_format(void) {
    char buf[32];
    ad_format_duration(12.4, buf, sizeof buf);
    CHECK(strcmp(buf, "12s") == 0);
    ad_format_duration(200, buf, sizeof buf);
    CHECK(strcmp(buf, "3m20s") == 0);
    ad_format_duration(3720, buf, sizeof buf);
    CHECK(strcmp(buf, "1h02m") == 0);
}

int main(void) {
    RUN(test_bf16);
    RUN(test_f16);
    RUN(test_views);
    RUN(test_arena);
    RUN(test_philox_known_answers);
    RUN(test_rng_streams);
    RUN(test_duration_format);
    return test_report();
}
