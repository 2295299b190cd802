/* Counter-based random numbers (Philox4x32-10). The whole state is (seed, stream, position):
 * the n-th number of a stream is a pure function of those, so a checkpoint stores three
 * integers and a resumed run draws exactly what an uninterrupted one would. Streams let
 * independent consumers (data shuffling, dropout, init) never disturb each other. */
#ifndef AUDISTILL_CORE_RNG_H
#define AUDISTILL_CORE_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t seed;
    uint64_t stream;
    uint64_t position; /* number of 32-bit values drawn so far */
} ad_rng;

void ad_rng_init(ad_rng *rng, uint64_t seed, uint64_t stream);
/* The raw Philox4x32-10 block for (counter, key); exposed for tests against known vectors. */
void ad_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);
uint32_t ad_rng_u32(ad_rng *rng);
/* Uniform in [0, 1) with 24 bits of resolution. */
float ad_rng_uniform(ad_rng *rng);
/* Standard normal (Box-Muller, two uniforms per value). */
float ad_rng_normal(ad_rng *rng);
/* Uniform integer in [0, n) without modulo bias. n must be > 0. */
uint32_t ad_rng_below(ad_rng *rng, uint32_t n);
/* Fisher-Yates shuffle of n indices. */
void ad_rng_shuffle_u32(ad_rng *rng, uint32_t *items, uint32_t n);

#endif
