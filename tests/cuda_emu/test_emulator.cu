// Self-test of the CUDA emulator (tests/cuda_emu): the primitives the backend's kernels rely on
// behave as the CUDA programming guide defines them, and the faults the emulator exists to
// catch are caught. Built and run only with -DAUDISTILL_CUDA_EMULATOR=ON; it is CUDA source,
// rewritten by translate.py like cuda/*.cu, so the translator is exercised too.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_internal.h" /* the backend's warp reductions */

#if defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_UNDER_ASAN 1
#endif
#endif

static int g_failed, g_passed;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            g_passed++;                                                                            \
        } else {                                                                                   \
            g_failed++;                                                                            \
            printf("%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                        \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* out[w][lane] for the four shuffle kinds at width w. */
__global__ static void shuffle_kernel(int *out, int width) {
    const int lane = threadIdx.x & 31, base = (threadIdx.x >> 5) * 32 * 4;
    const int v = 100 * (int)(threadIdx.x >> 5) + lane;
    out[base + lane] = __shfl_sync(0xffffffffu, v, 3, width);
    out[base + 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 5, width);
    out[base + 64 + lane] = __shfl_down_sync(0xffffffffu, v, 2, width);
    out[base + 96 + lane] = __shfl_up_sync(0xffffffffu, v, 2, width);
}

static void test_shuffles(void) {
    for (int width = 32; width >= 8; width /= 2) {
        int *d, h[2 * 128];
        cudaMalloc((void **)&d, sizeof h);
        shuffle_kernel<<<1, 64>>>(d, width);
        CHECK(cudaGetLastError() == cudaSuccess, "launch");
        cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
        cudaFree(d);
        for (int w = 0; w < 2; w++)
            for (int l = 0; l < 32; l++) {
                const int seg = l / width * width, *o = h + w * 128;
                const int v0 = 100 * w;
                /* Programming guide, warp shuffle functions: a source lane outside the caller's
                 * width-segment returns the caller's own value (down, up, xor upward). */
                const int idx = seg + 3 % width;
                const int x = (l ^ 5) >= seg + width ? l : (l ^ 5);
                const int dn = l + 2 < seg + width ? l + 2 : l;
                const int up = l - 2 >= seg ? l - 2 : l;
                CHECK(o[l] == v0 + idx, "__shfl_sync width %d lane %d: %d", width, l, o[l]);
                CHECK(o[32 + l] == v0 + x, "__shfl_xor_sync width %d lane %d: %d", width, l,
                      o[32 + l]);
                CHECK(o[64 + l] == v0 + dn, "__shfl_down_sync width %d lane %d: %d", width, l,
                      o[64 + l]);
                CHECK(o[96 + l] == v0 + up, "__shfl_up_sync width %d lane %d: %d", width, l,
                      o[96 + l]);
            }
    }
}

/* ad_emu_warp_gather: every lane gets all 32 lanes' bytes of its own warp; a second exchange
 * right after (lanes having changed their values) gives the new ones. */
__global__ static void gather_kernel(int *out) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int mine[3] = {1000 * warp + lane, lane ^ 5, -lane};
    int *o = out + threadIdx.x * 2 * 96;
    const int *all = (const int *)ad_emu_warp_gather(mine, (int)sizeof mine);
    for (int i = 0; i < 96; i++)
        o[i] = all[i];
    mine[0] += 7;
    all = (const int *)ad_emu_warp_gather(mine, (int)sizeof mine);
    for (int i = 0; i < 96; i++)
        o[96 + i] = all[i];
}

static void test_warp_gather(void) {
    const int n = 64 * 2 * 96;
    int *d, *h = (int *)malloc(n * sizeof(int));
    cudaMalloc((void **)&d, n * sizeof(int));
    gather_kernel<<<1, 64>>>(d);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    cudaMemcpy(h, d, n * sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(d);
    int bad = 0;
    for (int t = 0; t < 64; t++)
        for (int round = 0; round < 2; round++)
            for (int l = 0; l < 32; l++) {
                const int *o = h + t * 2 * 96 + round * 96 + 3 * l;
                const int w = t / 32;
                bad += o[0] != 1000 * w + l + 7 * round || o[1] != (l ^ 5) || o[2] != -l;
            }
    CHECK(bad == 0, "%d of %d exchanged values wrong", bad, 64 * 2 * 32);
    free(h);
}

/* The backend's warp reductions (cuda_internal.h: one exchange on the emulator) against the
 * xor-shuffle tree they stand for, written out with shuffles here, and against the same tree
 * computed on the host: the same bits in every lane. Values of wide magnitudes and both signs,
 * zeros of both signs, so that a different order or operand would show. */
__global__ static void warp_reduce_kernel(const float *x, float *out) {
    const float v = x[threadIdx.x];
    float s = v, m = v;
    double sd = (double)v * 1e-3;
    const double vd = sd;
    for (int o = 16; o > 0; o >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, o);
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        sd += __shfl_xor_sync(0xffffffffu, sd, o);
    }
    float *o = out + threadIdx.x * 6;
    o[0] = cu_warp_sum(v);
    o[1] = s;
    o[2] = cu_warp_max(v);
    o[3] = m;
    const double td = cu_warp_sum(vd);
    memcpy(o + 4, &td, sizeof td);
    (void)sd;
}

static void test_warp_reductions(void) {
    float hx[64], hout[64 * 6];
    unsigned seed = 12345u ^ (unsigned)getpid();
    for (int i = 0; i < 64; i++) {
        seed = seed * 1664525u + 1013904223u;
        const int e = (int)(seed >> 27) - 16; /* 2^-16 .. 2^15 */
        hx[i] = ldexpf((float)((seed >> 8) & 0xffff) / 65536.0f + 0.5f, e) *
                ((seed >> 3) & 1 ? -1.0f : 1.0f);
    }
    hx[5] = -0.0f, hx[9] = 0.0f, hx[40] = -0.0f;
    float *dx, *dout;
    cudaMalloc((void **)&dx, sizeof hx);
    cudaMalloc((void **)&dout, sizeof hout);
    cudaMemcpy(dx, hx, sizeof hx, cudaMemcpyHostToDevice);
    warp_reduce_kernel<<<1, 64>>>(dx, dout);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    cudaMemcpy(hout, dout, sizeof hout, cudaMemcpyDeviceToHost);
    cudaFree(dx);
    cudaFree(dout);
    int bad = 0;
    for (int w = 0; w < 2; w++) {
        float s[32], m[32];
        double sd[32];
        for (int l = 0; l < 32; l++)
            s[l] = m[l] = hx[32 * w + l], sd[l] = (double)hx[32 * w + l] * 1e-3;
        for (int o = 16; o > 0; o >>= 1) { /* the lanes' tree, level by level */
            float ns[32], nm[32];
            double nsd[32];
            for (int l = 0; l < 32; l++)
                ns[l] = s[l] + s[l ^ o], nm[l] = fmaxf(m[l], m[l ^ o]), nsd[l] = sd[l] + sd[l ^ o];
            memcpy(s, ns, sizeof s), memcpy(m, nm, sizeof m), memcpy(sd, nsd, sizeof sd);
        }
        for (int l = 0; l < 32; l++) {
            const float *o = hout + (32 * w + l) * 6;
            double td;
            memcpy(&td, o + 4, sizeof td);
            bad += memcmp(&o[0], &s[l], 4) != 0 || memcmp(&o[1], &s[l], 4) != 0;
            bad += memcmp(&o[2], &m[l], 4) != 0 || memcmp(&o[3], &m[l], 4) != 0;
            bad += memcmp(&td, &sd[l], 8) != 0;
        }
    }
    CHECK(bad == 0, "%d warp reductions differ from the xor-shuffle tree's bits", bad);
}

/* Each block reverses its slice through shared memory: needs the barrier between the write
 * and the read; also sums its slice with a tree in dynamic shared memory. */
__global__ static void reverse_kernel(float *x, float *sums) {
    __shared__ float buf[128];
    extern __shared__ float tree[];
    const int t = threadIdx.x, n = blockDim.x;
    float *row = x + (size_t)blockIdx.x * n;
    buf[t] = row[t];
    tree[t] = row[t];
    __syncthreads();
    row[t] = buf[n - 1 - t];
    for (int s = n / 2; s > 0; s /= 2) {
        __syncthreads();
        if (t < s) tree[t] += tree[t + s];
    }
    if (t == 0) sums[blockIdx.x] = tree[0];
}

static void test_barriers(void) {
    enum { B = 5, N = 128 };
    float h[B * N], sums[B], *d, *ds;
    for (int i = 0; i < B * N; i++)
        h[i] = (float)i;
    cudaMalloc((void **)&d, sizeof h);
    cudaMalloc((void **)&ds, sizeof sums);
    cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice);
    reverse_kernel<<<B, N, N * sizeof(float)>>>(d, ds);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    cudaMemcpy(sums, ds, sizeof sums, cudaMemcpyDeviceToHost);
    cudaFree(d);
    cudaFree(ds);
    int wrong = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < N; t++)
            wrong += h[b * N + t] != (float)(b * N + N - 1 - t);
        const double want = (double)N * (2.0 * b * N + N - 1) / 2.0;
        CHECK(sums[b] == (float)want, "block %d sum %g, want %g", b, sums[b], want);
    }
    CHECK(wrong == 0, "%d elements not reversed", wrong);
}

__global__ static void nothing_kernel(int *p) {
    if (p) p[threadIdx.x] = 0;
}

static void test_launch_errors(void) {
    nothing_kernel<<<1, 1025>>>(NULL);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads per block");
    CHECK(cudaGetLastError() == cudaSuccess, "the error is cleared once read");
    nothing_kernel<<<dim3(1, 70000), 32>>>(NULL);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y 70000");
    nothing_kernel<<<1, 32, 64 << 10>>>(NULL);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB dynamic shared without opt-in");
    CHECK(cudaFuncSetAttribute(nothing_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               64 << 10) == cudaSuccess,
          "opt-in");
    nothing_kernel<<<1, 32, 64 << 10>>>(NULL);
    CHECK(cudaGetLastError() == cudaSuccess, "64 KiB after opt-in");
}

/* Stream order as a GPU would have it: a non-blocking stream is ordered after the default
 * stream's pending kernels only by an event waited for, or by a synchronising call. */
bool ad_emu_stream_ordered(cudaStream_t s);

static void test_stream_order(void) {
    cudaStream_t s;
    cudaEvent_t e;
    int *d;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess, "stream");
    CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess, "event");
    CHECK(cudaMalloc((void **)&d, 32 * sizeof(int)) == cudaSuccess, "malloc");
    nothing_kernel<<<1, 32>>>(d);
    CHECK(!ad_emu_stream_ordered(s), "a kernel pending on the default stream");
    CHECK(ad_emu_stream_ordered(cudaStreamLegacy), "the default stream is ordered after itself");
    CHECK(cudaEventRecord(e, s) == cudaSuccess && cudaStreamWaitEvent(s, e, 0) == cudaSuccess &&
              !ad_emu_stream_ordered(s),
          "an event of the stream itself does not order it after the default stream");
    CHECK(cudaEventRecord(e, cudaStreamLegacy) == cudaSuccess, "record");
    nothing_kernel<<<1, 32>>>(d); /* issued after the event: not covered by it */
    CHECK(cudaStreamWaitEvent(s, e, 0) == cudaSuccess && !ad_emu_stream_ordered(s),
          "an event recorded before the last kernel");
    CHECK(cudaEventRecord(e, cudaStreamLegacy) == cudaSuccess &&
              cudaStreamWaitEvent(s, e, 0) == cudaSuccess && ad_emu_stream_ordered(s),
          "an event recorded after it and waited for");
    cudaMemset(d, 0, 32 * sizeof(int));
    CHECK(!ad_emu_stream_ordered(s), "cudaMemset is asynchronous");
    CHECK(cudaDeviceSynchronize() == cudaSuccess && ad_emu_stream_ordered(s),
          "cudaDeviceSynchronize orders everything");
    cudaFree(d);
    cudaEventDestroy(e);
    cudaStreamDestroy(s);
}

/* ---- faults: each runs in a child, which must abort naming the fault ---------------------- */
__global__ static void divergent_barrier_kernel(void) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        float v = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
        (void)v;
    }
}
__global__ static void exited_lane_kernel(float *out) {
    if (threadIdx.x == 7) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
__global__ static void overrun_kernel(float *out, int n) {
    out[n + threadIdx.x] = 1.0f;
}
__global__ static void dynamic_shared_kernel(int n) {
    extern __shared__ float dyn[];
    dyn[n + threadIdx.x] = 1.0f;
}
__global__ static void uninitialised_shared_kernel(float *out) {
    __shared__ float s[32];
    out[threadIdx.x] = s[threadIdx.x];
}

__global__ static void gather_sizes_kernel(void) {
    const double v = 1.0;
    ad_emu_warp_gather(&v, threadIdx.x == 3 ? 4 : 8);
}
__global__ static void gather_exited_kernel(void) {
    if (threadIdx.x == 30) return;
    const int v = 1;
    ad_emu_warp_gather(&v, 4);
}
__global__ static void gather_shuffle_kernel(void) {
    int v = 1;
    if (threadIdx.x == 2)
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    else
        ad_emu_warp_gather(&v, 4);
}

static void fault_gather_sizes(void) {
    gather_sizes_kernel<<<1, 32>>>();
}
static void fault_gather_exited(void) {
    gather_exited_kernel<<<1, 32>>>();
}
static void fault_gather_partial_warp(void) {
    gather_exited_kernel<<<1, 20>>>();
}
static void fault_gather_shuffle(void) {
    gather_shuffle_kernel<<<1, 32>>>();
}
static void fault_divergent(void) {
    divergent_barrier_kernel<<<1, 64>>>();
}
static void fault_exited(void) {
    float *d;
    cudaMalloc((void **)&d, 32 * sizeof(float));
    exited_lane_kernel<<<1, 32>>>(d);
}
static void fault_overrun(void) {
    float *d;
    cudaMalloc((void **)&d, 10 * sizeof(float));
    overrun_kernel<<<1, 2>>>(d, 10);
}
/* after a launch with more dynamic shared memory, whose buffer must not stay behind */
static void fault_dynamic_shared(void) {
    dynamic_shared_kernel<<<1, 2, 4096>>>(16);
    dynamic_shared_kernel<<<1, 2, 16 * sizeof(float)>>>(16);
}
static void fault_host_read(void) {
    float *d;
    cudaMalloc((void **)&d, 8 * sizeof(float));
    printf("%g\n", ((volatile float *)d)[3]); /* host code reading device memory */
}
/* after a kernel ran on another allocation (the region was opened for it and closed again) */
static void fault_host_write_after_launch(void) {
    int *a, *b;
    cudaMalloc((void **)&a, 64 * sizeof(int));
    cudaMalloc((void **)&b, 64 * sizeof(int));
    nothing_kernel<<<1, 1>>>(b);
    cudaDeviceSynchronize();
    ((volatile int *)a)[5] = 1;
}
/* a freed block reused by an allocation of the same size stays protected */
static void fault_host_read_reused(void) {
    float *d, *e;
    cudaMalloc((void **)&d, 3000 * sizeof(float));
    cudaFree(d);
    cudaMalloc((void **)&e, 3000 * sizeof(float));
    printf("%p %g\n", (void *)d, ((volatile float *)e)[7]);
}
/* Vector accesses at `offset` floats into an allocation: aligned ones sum 16 floats, misaligned
 * ones stop the kernel as a GPU's misaligned-address fault would. */
__global__ static void vector_kernel(float *d, int offset, int how) {
    const float *p = d + offset;
    float4 v;
    if (how == 0) v = cu_vload<float4>(p);
    if (how == 1) v = __ldg((const float4 *)p);
    if (how == 2) {
        cu_vstore(d + offset, make_float2(1.0f, 2.0f));
        v = make_float4(1.0f, 2.0f, 0.0f, 0.0f);
    }
    d[16] = v.x + v.y + v.z + v.w;
}
static void vector_access(int offset, int how) {
    float *d;
    cudaMalloc((void **)&d, 20 * sizeof(float));
    vector_kernel<<<1, 1>>>(d, offset, how);
    cudaDeviceSynchronize();
}
static void fault_vector_load(void) {
    vector_access(2, 0); /* 8 bytes in: not 16-byte aligned */
}
static void fault_vector_ldg(void) {
    vector_access(1, 1);
}
static void fault_vector_store(void) {
    vector_access(3, 2); /* 12 bytes in: not 8-byte aligned */
}
static void vectors_aligned(void) {
    vector_access(4, 0);
    vector_access(8, 1);
    vector_access(2, 2);
}

static void fault_copy(void) {
    float *d, h[4];
    cudaMalloc((void **)&d, 2 * sizeof(float));
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
}

/* The child must die with `needle` in its message (or `asan_needle` when AddressSanitizer,
 * which the sanitizer build adds, reports the fault first). */
static void expect_abort(const char *what, void (*fn)(void), const char *needle,
                         const char *asan_needle = NULL) {
    int fds[2];
    if (pipe(fds) != 0) return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    char msg[2048] = "";
    size_t len = 0;
    ssize_t r;
    while (len + 1 < sizeof msg && (r = read(fds[0], msg + len, sizeof msg - 1 - len)) > 0)
        len += (size_t)r;
    msg[len] = 0;
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    const bool named = strstr(msg, needle) || (asan_needle && strstr(msg, asan_needle));
    const bool died = WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0);
    CHECK(died && named, "%s: child status %d, message \"%s\"", what, st, msg);
}

int main(void) {
    setenv("AUDISTILL_CUDA_EMU_HOST_CHECK", "1", 1); /* device memory page-protected from host */
    test_shuffles();
    test_warp_gather();
    test_warp_reductions();
    test_barriers();
    test_launch_errors();
    test_stream_order();
    {
        float *d, h[32];
        cudaMalloc((void **)&d, sizeof h);
        uninitialised_shared_kernel<<<1, 32>>>(d);
        cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
        cudaFree(d);
        int nan = 0;
        for (int i = 0; i < 32; i++)
            nan += h[i] != h[i];
        CHECK(nan == 32, "shared memory read before any write: %d of 32 NaN", nan);
    }
    expect_abort("divergent barrier", fault_divergent, "divergent barrier");
    expect_abort("exchange sizes differ", fault_gather_sizes,
                 "lanes 0 and 3 exchange 8 and 4 bytes");
    expect_abort("exchange naming an exited lane", fault_gather_exited, "which has exited");
    expect_abort("exchange in a partial warp", fault_gather_partial_warp, "which does not exist");
    expect_abort("exchange beside a shuffle", fault_gather_shuffle, "in different shuffles");
    expect_abort("shuffle naming an exited lane", fault_exited, "which has exited");
    expect_abort("write past an allocation", fault_overrun, "overrun_kernel wrote past the end",
                 "heap-buffer-overflow");
    expect_abort("copy past an allocation", fault_copy, "is not inside one device allocation");
    expect_abort("misaligned 16-byte vector load", fault_vector_load,
                 "misaligned 16-byte vector load");
    expect_abort("misaligned 16-byte __ldg", fault_vector_ldg, "misaligned 16-byte __ldg");
    expect_abort("misaligned 8-byte vector store", fault_vector_store,
                 "misaligned 8-byte vector store");
    {
        fflush(stdout);
        const pid_t pid = fork(); /* the same accesses, aligned: no fault */
        if (pid == 0) {
            vectors_aligned();
            _exit(cudaGetLastError() == cudaSuccess ? 0 : 3);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "aligned vector accesses: status %d", st);
    }
    expect_abort("write past dynamic shared memory", fault_dynamic_shared,
                 "dynamic_shared_kernel wrote past its 64 bytes of dynamic shared memory",
                 "heap-buffer-overflow");
#ifndef TEST_UNDER_ASAN /* the ASan build does not page-protect device memory */
    expect_abort("host read of device memory", fault_host_read, "host code accessed device memory");
    expect_abort("host write after a launch", fault_host_write_after_launch,
                 "host code accessed device memory");
    expect_abort("host read of a reused block", fault_host_read_reused,
                 "host code accessed device memory");
#endif
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
