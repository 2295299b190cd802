#include "core/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void ad_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void ad_rng_init(ad_rng *rng, uint64_t seed, uint64_t stream) {
    rng->seed = seed;
    rng->stream = stream;
    rng->position = 0;
}

uint32_t ad_rng_u32(ad_rng *rng) {
    uint64_t block = rng->position >> 2;
    uint32_t counter[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)rng->stream,
                           (uint32_t)(rng->stream >> 32)};
    uint32_t key[2] = {(uint32_t)rng->seed, (uint32_t)(rng->seed >> 32)};
    uint32_t out[4];
    ad_philox4x32_10(counter, key, out);
    return out[rng->position++ & 3];
}

float ad_rng_uniform(ad_rng *rng) {
    return (float)(ad_rng_u32(rng) >> 8) * (1.0f / 16777216.0f);
}

float ad_rng_normal(ad_rng *rng) {
    /* 1 - u keeps the log argument in (0, 1]. */
    double u1 = 1.0 - (double)ad_rng_uniform(rng);
    double u2 = (double)ad_rng_uniform(rng);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint32_t ad_rng_below(ad_rng *rng, uint32_t n) {
    uint32_t limit = (uint32_t)(-n) % n; /* values below this would bias the modulo */
    for (;;) {
        uint32_t r = ad_rng_u32(rng);
        if (r >= limit) return r % n;
    }
}

void ad_rng_shuffle_u32(ad_rng *rng, uint32_t *items, uint32_t n) {
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = ad_rng_below(rng, i);
        uint32_t tmp = items[i - 1];
        items[i - 1] = items[j];
        items[j] = tmp;
    }
}
