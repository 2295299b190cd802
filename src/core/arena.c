#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

static size_t align_up(size_t n) {
    return (n + AD_ARENA_ALIGN - 1) & ~(size_t)(AD_ARENA_ALIGN - 1);
}

void ad_arena_plan_add(ad_arena_plan *plan, size_t bytes) {
    plan->bytes += align_up(bytes);
    plan->count++;
}

void ad_arena_plan_tensor(ad_arena_plan *plan, ad_dtype dtype, int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    ad_arena_plan_add(plan, ad_dtype_bytes_for(dtype, n));
}

int ad_arena_init(ad_arena *arena, size_t capacity, const char *name) {
    memset(arena, 0, sizeof *arena);
    arena->name = name;
    size_t bytes = align_up(capacity ? capacity : 1);
    void *p = NULL;
    if (posix_memalign(&p, AD_ARENA_ALIGN, bytes) != 0 || !p)
        return ad_fail("out of memory: arena '%s' needs %zu bytes", name, bytes);
    memset(p, 0, bytes);
    arena->base = p;
    arena->capacity = bytes;
    arena->owns_memory = 1;
    return AD_OK;
}

void ad_arena_wrap(ad_arena *arena, void *memory, size_t capacity, const char *name) {
    memset(arena, 0, sizeof *arena);
    arena->base = memory;
    arena->capacity = capacity;
    arena->name = name;
}

void ad_arena_free(ad_arena *arena) {
    if (arena->owns_memory) free(arena->base);
    memset(arena, 0, sizeof *arena);
}

void *ad_arena_alloc(ad_arena *arena, size_t bytes, const char *what) {
    size_t need = align_up(bytes);
    if (need > arena->capacity - arena->used) {
        ad_fail("arena '%s' exhausted allocating %zu bytes for %s (%zu of %zu used): the "
                "arena was planned too small",
                arena->name, bytes, what, arena->used, arena->capacity);
        return NULL;
    }
    void *p = arena->base + arena->used;
    arena->used += need;
    if (arena->used > arena->peak) arena->peak = arena->used;
    return p;
}

int ad_arena_tensor(ad_arena *arena, ad_tensor *out, ad_dtype dtype, int ndim, const int64_t *shape,
                    const char *name) {
    AD_TRY(ad_tensor_init(out, NULL, dtype, AD_DEVICE_CPU, ndim, shape, name));
    void *p = ad_arena_alloc(arena, ad_tensor_nbytes(out), name);
    if (!p) return AD_ERR;
    out->data = p;
    return AD_OK;
}

size_t ad_arena_mark(const ad_arena *arena) {
    return arena->used;
}

void ad_arena_reset(ad_arena *arena, size_t mark) {
    if (mark <= arena->used) arena->used = mark;
}
