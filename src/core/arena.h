/* Arenas: one big allocation per purpose (parameters, gradients, activations...), sized
 * before work starts and carved into tensors. Nothing is freed individually; a training step
 * never allocates: when a carve would exceed the planned capacity it fails with the arena's
 * name, the request and what is left, which points at a sizing bug rather than hiding it.
 * Sizing is done with an ad_arena_plan that applies the same alignment as the real arena. */
#ifndef AUDISTILL_CORE_ARENA_H
#define AUDISTILL_CORE_ARENA_H

#include <stddef.h>

#include "core/tensor.h"

#define AD_ARENA_ALIGN 64

typedef struct {
    size_t bytes;
    size_t count;
} ad_arena_plan;

typedef struct {
    char *base;
    size_t capacity;
    size_t used;
    size_t peak;
    const char *name;
    int owns_memory;
} ad_arena;

void ad_arena_plan_add(ad_arena_plan *plan, size_t bytes);
void ad_arena_plan_tensor(ad_arena_plan *plan, ad_dtype dtype, int ndim, const int64_t *shape);

/* Allocates `capacity` bytes (zeroed) on the CPU. */
int ad_arena_init(ad_arena *arena, size_t capacity, const char *name);
/* An arena over memory the caller owns (e.g. a device buffer). */
void ad_arena_wrap(ad_arena *arena, void *memory, size_t capacity, const char *name);
void ad_arena_free(ad_arena *arena);

void *ad_arena_alloc(ad_arena *arena, size_t bytes, const char *what);
int ad_arena_tensor(ad_arena *arena, ad_tensor *out, ad_dtype dtype, int ndim, const int64_t *shape,
                    const char *name);
/* Scratch use: remember the fill level and return to it. */
size_t ad_arena_mark(const ad_arena *arena);
void ad_arena_reset(ad_arena *arena, size_t mark);

#endif
