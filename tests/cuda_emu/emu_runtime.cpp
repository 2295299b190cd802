// The CPU emulator of the CUDA runtime for tests/cuda_emu: device memory, the few runtime calls
// the backend makes, and the kernel scheduler. Device memory is host memory with guard zones
// (checked after every launch, so an out-of-bounds write names the kernel) and is filled with
// NaN bytes when allocated, as uninitialised GPU memory would be garbage. Kernels run one block
// at a time; each thread of a block is a fiber that runs until it reaches a barrier or
// returns, one warp at a time up to a __syncthreads; cp.async copies land at their wait.
// AUDISTILL_CUDA_EMU_ORDER=reverse runs blocks, warps and threads in reverse order and lands
// cp.async copies at issue, so a result that depends on the order (a missing __syncthreads, a
// race between blocks, a shared tile overwritten while read) changes.
//
// Built with AddressSanitizer, device allocations are exact (no guard zones) so that ASan
// reports any read or write out of bounds with the kernel's line, and the fiber switches are
// announced to ASan (its fiber API), as compute-sanitizer's memcheck would on a GPU.
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "emu_device.h"

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

uint3 ad_emu_thread_idx, ad_emu_block_idx;
dim3 ad_emu_block_dim, ad_emu_grid_dim;

[[noreturn]] static void emu_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda emulator: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    abort();
}

/* ---- call counts (AUDISTILL_CUDA_EMU_STATS=1) ------------------------------------------------
 * What a GPU would pay for beside the arithmetic: kernel launches (a few microseconds each),
 * synchronous copies and synchronisations (each drains the GPU's queue) and allocations in
 * the middle of work (cudaMalloc/cudaFree synchronise too). Per kernel also the threads it
 * ran and how often a thread was resumed (each barrier or shuffle a thread waits at costs one
 * more): what the emulator itself pays, two context switches per resume. Printed to stderr at exit,
 * or written to the file the variable names when it is not "1". */
struct emu_kernel_stats {
    long launches = 0;
    long long threads = 0,
              fiber_runs = 0; /* fiber_runs: a thread resumed (to a barrier or its end) */
};
struct emu_stats {
    std::map<std::string, emu_kernel_stats> launches;
    long h2d = 0, d2h = 0, d2d = 0, memsets = 0, syncs = 0, mallocs = 0, frees = 0;
    double h2d_bytes = 0, d2h_bytes = 0;
};
static emu_stats *g_stats;
static emu_kernel_stats *g_kernel_stats; /* the running launch's, when counting */

static void print_stats(void) {
    const char *where = getenv("AUDISTILL_CUDA_EMU_STATS");
    FILE *out = where && strcmp(where, "1") != 0 ? fopen(where, "w") : stderr;
    if (!out) out = stderr;
    long total = 0;
    for (auto &kv : g_stats->launches)
        total += kv.second.launches;
    fprintf(out,
            "cuda emulator calls: %ld kernel launches, %ld host->device copies (%.0f bytes), "
            "%ld device->host copies (%.0f bytes), %ld device copies, %ld memsets, %ld "
            "synchronisations, %ld cudaMalloc, %ld cudaFree\n",
            total, g_stats->h2d, g_stats->h2d_bytes, g_stats->d2h, g_stats->d2h_bytes, g_stats->d2d,
            g_stats->memsets, g_stats->syncs, g_stats->mallocs, g_stats->frees);
    fprintf(out, "  %8s %12s %12s kernel\n", "launches", "threads", "fiber runs");
    for (auto &kv : g_stats->launches)
        fprintf(out, "  %8ld %12lld %12lld %s\n", kv.second.launches, kv.second.threads,
                kv.second.fiber_runs, kv.first.c_str());
    if (out != stderr) fclose(out);
}

static emu_stats *stats(void) {
    static bool checked;
    if (!checked) {
        checked = true;
        const char *e = getenv("AUDISTILL_CUDA_EMU_STATS");
        if (e && *e && strcmp(e, "0") != 0) {
            g_stats = new emu_stats;
            atexit(print_stats);
        }
    }
    return g_stats;
}

/* Work issued to the legacy default stream so far, and how much of it the host has waited for
 * (see "streams and events" below). */
static unsigned long g_default_generation, g_synchronised_generation;

/* ---- device memory --------------------------------------------------------------------- */
#ifdef EMU_ASAN
#define GUARD_BYTES 0 /* ASan's own redzones catch reads too */
#else
#define GUARD_BYTES 256 /* keeps cudaMalloc's 256-byte alignment */
#endif
#define GUARD_BYTE 0xA5

struct allocation {
    char *base; /* guard, user bytes, guard */
    size_t size;
    size_t mapped; /* bytes mapped at base (0: from the heap, under ASan) */
};
static std::map<uintptr_t, allocation> g_allocs; /* by user address */
static size_t g_allocated;
/* The emulated card's memory: 80 GiB, or AUDISTILL_CUDA_EMU_GIB (a small card makes the
 * out-of-memory paths testable). */
static size_t emu_total_memory(void) {
    static size_t total;
    if (!total) {
        const char *e = getenv("AUDISTILL_CUDA_EMU_GIB");
        const double gib = e && *e ? atof(e) : 80.0;
        total = gib > 0 ? (size_t)(gib * (double)(1 << 30)) : (size_t)80 << 30;
        if (!total) total = 1;
    }
    return total;
}
#define EMU_TOTAL_MEMORY emu_total_memory()

/* The allocation holding [p, p + bytes), or NULL. */
static const allocation *find_alloc(const void *p, size_t bytes) {
    const uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return NULL;
    --it;
    if (a < it->first || a + bytes > it->first + it->second.size) return NULL;
    return &it->second;
}

/* ---- host access to device memory ------------------------------------------------------
 * On a GPU, host code that dereferences a device pointer faults. Here device memory is host
 * memory, so outside the emulated device's own work (a kernel, a copy, a memset, cuBLASLt,
 * NCCL's staging) every allocation is mapped PROT_NONE: host code touching it stops with a
 * message naming the allocation instead of silently working. (Not under ASan, whose exact
 * heap allocations cannot be protected page by page; ASan watches bounds instead.) Switching the
 * protection around every launch costs about as much as the kernels of a training test, so it
 * is on only with AUDISTILL_CUDA_EMU_HOST_CHECK=1 (scripts/test.sh sets it for one of its two
 * passes). */
static int g_device_access; /* nesting depth of device work in progress */

/* Device memory comes from one reserved region, so that one mprotect covers all of it (one per
 * allocation per launch would cost more than the kernels). Page-granular blocks; a freed block
 * is reused by an allocation of the same size.
 *
 * With the host check on, the region is one mapping of 2 MiB-aligned transparent huge pages
 * whose protection only ever changes as a whole: mprotect's cost grows with the page-table
 * entries it rewrites, and over 100 MB of 4 KiB pages a PROT_NONE / PROT_READ|WRITE pair took
 * 3.9 ms against 15 us over huge pages (experiments/emulator/mprotect_cost.c). So no block is
 * protected on its own (that would split the mapping) and no freed block is handed back to the
 * system (that would split its huge pages). */
static char *g_heap, *g_heap_top;
static const size_t g_heap_size = (size_t)256 << 30; /* address space only (MAP_NORESERVE) */
static const size_t g_huge_page = (size_t)2 << 20;
static std::multimap<size_t, char *> g_free_blocks;

static bool host_check(void);

static char *heap_alloc(size_t mapped) {
    if (!g_heap) {
        void *m = mmap(NULL, g_heap_size + g_huge_page, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return NULL;
        const uintptr_t aligned = ((uintptr_t)m + g_huge_page - 1) & ~(uintptr_t)(g_huge_page - 1);
        g_heap = g_heap_top = (char *)aligned;
        /* a hint: without transparent huge pages the check is only slower */
        if (host_check()) (void)madvise(g_heap, g_heap_size, MADV_HUGEPAGE);
    }
    auto it = g_free_blocks.find(mapped);
    if (it != g_free_blocks.end()) {
        char *p = it->second;
        g_free_blocks.erase(it);
        return p;
    }
    if ((size_t)(g_heap + g_heap_size - g_heap_top) < mapped) return NULL;
    char *p = g_heap_top;
    g_heap_top += mapped;
    return p;
}

static void heap_free(char *p, size_t mapped) {
    if (!host_check()) madvise(p, mapped, MADV_DONTNEED);
    g_free_blocks.insert({mapped, p});
}

static void protect(char *p, size_t bytes, int prot) {
    if (bytes && mprotect(p, bytes, prot) != 0)
        emu_die("mprotect of device memory failed: %s", strerror(errno));
}

static bool host_check(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("AUDISTILL_CUDA_EMU_HOST_CHECK");
        on = e && *e && strcmp(e, "0") != 0;
    }
    return on;
}

static void protect_all(int prot) {
    if (g_heap && host_check()) protect(g_heap, (size_t)(g_heap_top - g_heap), prot);
}

void ad_emu_device_access(bool begin) {
    if (begin && g_device_access++ == 0) protect_all(PROT_READ | PROT_WRITE);
    if (!begin && --g_device_access == 0) protect_all(PROT_NONE);
}

static void host_fault(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    const uintptr_t a = (uintptr_t)info->si_addr;
    if (g_heap && (a < (uintptr_t)g_heap || a >= (uintptr_t)g_heap_top)) {
        signal(sig, SIG_DFL); /* not device memory: the ordinary crash */
        return;
    }
    for (auto &kv : g_allocs) {
        const allocation &al = kv.second;
        if (al.mapped && a >= (uintptr_t)al.base && a < (uintptr_t)al.base + al.mapped) {
            char msg[256];
            const int n =
                snprintf(msg, sizeof msg,
                         "cuda emulator: host code accessed device memory at %p (byte "
                         "%lld of a %zu-byte allocation at %p): on a GPU this faults; "
                         "use a copy\n",
                         info->si_addr, (long long)(a - kv.first), al.size, (void *)kv.first);
            if (write(2, msg, (size_t)n) < 0) {
            }
            abort();
        }
    }
    signal(sig, SIG_DFL); /* not ours: the ordinary crash */
}

static void watch_host_access(void) {
    static bool installed;
    if (installed) return;
    installed = true;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = host_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

/* The first written byte of the guard zones around the `size` bytes that follow the zone at
 * `guarded`: n > 0 for n bytes before the start, -1 - n for byte n after the end, 0 when both
 * zones are intact. */
static long guard_written(const void *guarded, size_t size) {
    const unsigned char *lo = (const unsigned char *)guarded, *hi = lo + GUARD_BYTES + size;
    for (int i = 0; i < GUARD_BYTES; i++) {
        if (lo[i] != GUARD_BYTE) return GUARD_BYTES - i;
        if (hi[i] != GUARD_BYTE) return -1 - i;
    }
    return 0;
}

static void check_guards(const char *after) {
    for (auto &kv : g_allocs) {
        const allocation &al = kv.second;
        const long w = guard_written(al.base, al.size);
        if (w > 0)
            emu_die("%s wrote before a device allocation of %zu bytes at %p (byte %ld before "
                    "its start)",
                    after, al.size, (void *)kv.first, w);
        if (w < 0)
            emu_die("%s wrote past the end of a device allocation of %zu bytes at %p (byte "
                    "%ld after its end)",
                    after, al.size, (void *)kv.first, -1 - w);
    }
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    if (stats()) g_stats->mallocs++;
    if (!ptr) return cudaErrorInvalidValue;
    if (g_allocated + bytes > EMU_TOTAL_MEMORY) return cudaErrorMemoryAllocation;
    /* cudaMalloc's alignment; the user bytes exact under ASan, whole 256-byte units here. */
    void *mem = NULL;
    const size_t body = GUARD_BYTES ? (bytes + 255) & ~(size_t)255 : (bytes ? bytes : 1);
    size_t mapped = 0;
#if GUARD_BYTES
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    mapped = (GUARD_BYTES * 2 + body + page - 1) / page * page;
    mem = heap_alloc(mapped);
    if (!mem) return cudaErrorMemoryAllocation;
    watch_host_access();
    /* the host check opens and closes the whole region (see heap_alloc); within device work
     * it is open already, past the block that just moved g_heap_top: open that one */
    const bool open_all = host_check() && !g_device_access;
    if (open_all)
        ad_emu_device_access(true);
    else
        protect((char *)mem, mapped, PROT_READ | PROT_WRITE);
#else
    if (posix_memalign(&mem, 256, GUARD_BYTES * 2 + body) != 0) return cudaErrorMemoryAllocation;
#endif
    char *base = (char *)mem;
#if GUARD_BYTES
    memset(base, GUARD_BYTE, GUARD_BYTES);
    memset(base + GUARD_BYTES + bytes, GUARD_BYTE, GUARD_BYTES);
#endif
    memset(base + GUARD_BYTES, 0xFF, bytes);
#if GUARD_BYTES
    if (open_all) ad_emu_device_access(false);
#endif
    *ptr = base + GUARD_BYTES;
    g_allocs[(uintptr_t)*ptr] = allocation{base, bytes, mapped};
    g_allocated += bytes;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
    if (!ptr) return cudaSuccess;
    if (stats()) g_stats->frees++;
    auto it = g_allocs.find((uintptr_t)ptr);
    if (it == g_allocs.end()) emu_die("cudaFree(%p): not a live device allocation", ptr);
    ad_emu_device_access(true);
    check_guards("a kernel or copy before cudaFree");
    ad_emu_device_access(false);
    g_allocated -= it->second.size;
    if (it->second.mapped)
        heap_free(it->second.base, it->second.mapped);
    else
        free(it->second.base);
    g_allocs.erase(it);
    return cudaSuccess;
}

static void check_range(const char *call, const char *role, const void *p, size_t bytes) {
    if (bytes && !find_alloc(p, bytes))
        emu_die("%s: %s [%p, +%zu bytes) is not inside one device allocation", call, role, p,
                bytes);
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    if (stats()) g_stats->memsets++;
    check_range("cudaMemset", "destination", p, bytes);
    g_default_generation++; /* asynchronous on a GPU */
    ad_emu_device_access(true);
    memset(p, value, bytes);
    ad_emu_device_access(false);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (stats()) {
        if (kind == cudaMemcpyHostToDevice) g_stats->h2d++, g_stats->h2d_bytes += (double)bytes;
        if (kind == cudaMemcpyDeviceToHost) g_stats->d2h++, g_stats->d2h_bytes += (double)bytes;
        if (kind == cudaMemcpyDeviceToDevice) g_stats->d2d++;
    }
    switch (kind) {
    case cudaMemcpyHostToDevice:
        check_range("cudaMemcpy(HostToDevice)", "destination", dst, bytes);
        if (bytes && find_alloc(src, 1))
            emu_die("cudaMemcpy(HostToDevice): the source %p is device memory", src);
        break;
    case cudaMemcpyDeviceToHost:
        check_range("cudaMemcpy(DeviceToHost)", "source", src, bytes);
        if (bytes && find_alloc(dst, 1))
            emu_die("cudaMemcpy(DeviceToHost): the destination %p is device memory", dst);
        break;
    case cudaMemcpyDeviceToDevice:
        check_range("cudaMemcpy(DeviceToDevice)", "source", src, bytes);
        check_range("cudaMemcpy(DeviceToDevice)", "destination", dst, bytes);
        break;
    default: break;
    }
    ad_emu_device_access(true);
    memmove(dst, src, bytes);
    ad_emu_device_access(false);
    g_synchronised_generation = ++g_default_generation; /* cudaMemcpy waits for the device */
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = EMU_TOTAL_MEMORY - g_allocated;
    *total_bytes = EMU_TOTAL_MEMORY;
    return cudaSuccess;
}

/* For the emulated NCCL (emu_nccl.cpp): whether [p, p + bytes) is device memory. */
bool ad_emu_device_range(const void *p, size_t bytes) {
    return !bytes || find_alloc(p, bytes);
}

/* ---- streams and events ------------------------------------------------------------------
 * Kernels and copies run synchronously, so a stream is idle except while the emulated NCCL has
 * a collective on it waiting for the other ranks: cudaStreamQuery then lets it make progress
 * (the poll returns true while it is not finished) and answers cudaErrorNotReady.
 *
 * What a GPU would order is still tracked: work on the legacy default stream (launches,
 * cuBLASLt, memsets) counts up a generation; a synchronising call (cudaMemcpy,
 * cudaDeviceSynchronize, cudaStreamSynchronize of the default stream) or an event recorded on
 * the default stream and waited for by another stream orders that stream after it. The emulated
 * NCCL refuses a collective on a stream not ordered after the default stream's work, because on
 * a GPU (a non-blocking stream) it would read buffers the pending kernels have not written. */
struct CUstream_st {
    bool (*poll)(void *);
    void *arg;
    unsigned long ordered_after; /* default-stream generation this stream has waited for */
};
struct CUevent_st {
    unsigned long generation;
    double ms; /* the clock at the record: every launch here has finished when it returns */
};

/* Events read the host clock, or with AUDISTILL_CUDA_EMU_CLOCK=virtual a clock that only the
 * work advances: 1 us per kernel launch and GEMM call plus the delays tests inject (below, and
 * emu_cublaslt.cpp's), which then do not sleep. Tests that steer GEMM tuning with delays use it:
 * on the host clock the emulation time of the candidates themselves (under ASan on a slow
 * machine, more than a 60 ms delay apart) could outweigh the delays. */
static long long g_virtual_us;
static bool virtual_clock(void) {
    const char *c = getenv("AUDISTILL_CUDA_EMU_CLOCK");
    return c && !strcmp(c, "virtual");
}
void ad_emu_spend_us(long us) {
    g_virtual_us += us;
    if (us > 1 && !virtual_clock()) {
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}
static double event_clock_ms(void) {
    if (virtual_clock()) return (double)g_virtual_us * 1e-3;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
void ad_emu_default_stream_work(void) {
    g_default_generation++;
}

static bool is_default_stream(cudaStream_t s) {
    return s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread;
}

bool ad_emu_stream_ordered(cudaStream_t s) {
    if (g_synchronised_generation >= g_default_generation) return true;
    return s && !is_default_stream(s) ? s->ordered_after >= g_default_generation : true;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    (void)flags;
    *e = new CUevent_st{0, 0.0};
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return cudaErrorInvalidValue;
    /* another stream's work is complete when issued here; the default stream's is pending */
    e->generation = is_default_stream(s) ? g_default_generation : 0;
    e->ms = event_clock_ms();
    return cudaSuccess;
}

/* The host waits for the event: for the default stream's work up to its record. */
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidValue;
    if (stats()) g_stats->syncs++;
    if (e->generation > g_synchronised_generation) g_synchronised_generation = e->generation;
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t stop) {
    if (!ms || !start || !stop) return cudaErrorInvalidValue;
    *ms = (float)(stop->ms - start->ms);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    (void)flags;
    if (!e) return cudaErrorInvalidValue;
    if (s && !is_default_stream(s) && e->generation > s->ordered_after)
        s->ordered_after = e->generation;
    return cudaSuccess;
}

void ad_emu_stream_set_poll(cudaStream_t s, bool (*poll)(void *), void *arg) {
    s->poll = poll;
    s->arg = arg;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    (void)flags;
    *s = new CUstream_st{NULL, NULL, 0};
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s) {
    if (is_default_stream(s)) return cudaSuccess;
    return s->poll && s->poll(s->arg) ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (stats()) g_stats->syncs++;
    if (is_default_stream(s)) g_synchronised_generation = g_default_generation;
    while (!is_default_stream(s) && s->poll && s->poll(s->arg))
        sched_yield();
    return cudaSuccess;
}

/* ---- device ---------------------------------------------------------------------------- */
static cudaError_t g_last_error = cudaSuccess;

/* One emulated card per process, or AUDISTILL_CUDA_EMU_DEVICES of them (each process of an MPI
 * run then opens "its" GPU, local rank r -> device r; all are this process's memory). */
static int emu_devices(void) {
    const char *e = getenv("AUDISTILL_CUDA_EMU_DEVICES");
    const int n = e && *e ? atoi(e) : 1;
    return n >= 1 && n <= 64 ? n : 1;
}

cudaError_t cudaGetDeviceCount(int *count) {
    *count = emu_devices();
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    return device >= 0 && device < emu_devices() ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (device < 0 || device >= emu_devices()) return cudaErrorInvalidDevice;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "CUDA emulator on the CPU (tests/cuda_emu)");
    prop->totalGlobalMem = EMU_TOTAL_MEMORY;
    prop->sharedMemPerBlock = 48 << 10;
    prop->sharedMemPerBlockOptin = 227 << 10;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 0x7fffffff;
    prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
    prop->multiProcessorCount = 132;
    prop->major = 9;
    prop->minor = 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    if (stats()) g_stats->syncs++;
    g_synchronised_generation = g_default_generation;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t err) {
    switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    default: return "unknown error (emulator)";
    }
}

static std::map<const void *, int> g_max_dynamic_smem;

cudaError_t cudaFuncSetAttribute(const void *kernel, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    if (value < 0 || value > (227 << 10)) return cudaErrorInvalidValue;
    g_max_dynamic_smem[kernel] = value;
    return cudaSuccess;
}

/* ---- fibers ------------------------------------------------------------------------------ */
#define FIBER_STACK_BYTES ((size_t)256 << 10)
#define MAX_THREADS       1024

enum fiber_state { F_READY, F_WAIT_BLOCK, F_WAIT_WARP, F_DONE };
/* fiber::kind of a warp wait: shuffles 0-3 (ad_emu_shuffle), or a warp-wide exchange */
#define KIND_GATHER 4

struct fiber {
    void *sp;
    char *stack;
    void *asan_fake_stack; /* ASan's record of this fiber's stack while it is switched out */
    fiber_state state;
    uint3 idx;
    /* a pending shuffle */
    unsigned mask;
    int kind, arg, width;
    const char *site_file; /* the __syncthreads it waits at (source line: compiled code may */
    int site_line;         /* duplicate one barrier, e.g. when it unswitches a loop) */
    uint64_t value, result;
    /* its asynchronous copies (cp.async) not yet waited for; `group` is the commit group,
     * committed ones below `groups` */
    struct copy {
        void *dst;
        const void *src; /* NULL: zero fill */
        int bytes, group;
    } copies[64];
    int n_copies, groups;
};

static fiber g_fibers[MAX_THREADS];
static bool g_reverse; /* AUDISTILL_CUDA_EMU_ORDER=reverse */
static fiber *g_current;
static void *g_sched_sp;
#ifdef EMU_ASAN
static const void *g_sched_stack_bottom; /* the scheduler's stack, as ASan reports it */
static size_t g_sched_stack_size;
#endif

/* ASan's fiber protocol: announce a switch before it, confirm it after (sanitizer/
 * common_interface_defs.h). No-ops without ASan. */
static inline void asan_leave(void **fake_stack_save, const void *to_bottom, size_t to_size) {
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(fake_stack_save, to_bottom, to_size);
#else
    (void)fake_stack_save, (void)to_bottom, (void)to_size;
#endif
}
static inline void asan_arrived_in_fiber(void *fake_stack) {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, &g_sched_stack_bottom, &g_sched_stack_size);
#else
    (void)fake_stack;
#endif
}
static inline void asan_back_in_scheduler(void *fake_stack) {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, NULL, NULL);
#else
    (void)fake_stack;
#endif
}
static inline const void *sched_bottom(void) {
#ifdef EMU_ASAN
    return g_sched_stack_bottom;
#else
    return NULL;
#endif
}
static inline size_t sched_size(void) {
#ifdef EMU_ASAN
    return g_sched_stack_size;
#else
    return 0;
#endif
}
static void (*g_body)(void *);
static void *g_body_ctx;
static const char *g_kernel_name;
static unsigned long long g_block_serial;

extern "C" void ad_emu_switch(void **save_sp, void *to_sp);
#if defined(__x86_64__)
/* Saves the callee-saved registers on the current stack, swaps stacks, restores. */
__asm__(".text\n"
        ".globl ad_emu_switch\n"
        ".type ad_emu_switch,@function\n"
        "ad_emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size ad_emu_switch, .-ad_emu_switch\n");
#else
#error "tests/cuda_emu has a context switch for x86-64 only"
#endif

[[noreturn]] static void kernel_fault(const char *fmt, ...);

[[noreturn]] static void fiber_entry(void) {
    fiber *f = g_current;
    asan_arrived_in_fiber(NULL);
    g_body(g_body_ctx);
    if (f->n_copies)
        kernel_fault("thread (%u,%u,%u) returned with %d asynchronous copies not waited for",
                     f->idx.x, f->idx.y, f->idx.z, f->n_copies);
    f->state = F_DONE;
    asan_leave(NULL, sched_bottom(), sched_size()); /* NULL: this stack is finished with */
    ad_emu_switch(&f->sp, g_sched_sp);
    __builtin_unreachable();
}

static void fiber_reset(fiber *f) {
    if (!f->stack) {
        /* A guard page below each stack turns an overflow into a fault, not corruption. */
        char *m = (char *)mmap(NULL, FIBER_STACK_BYTES + 4096, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) emu_die("cannot map a thread stack: %s", strerror(errno));
        if (mprotect(m, 4096, PROT_NONE) != 0) emu_die("mprotect: %s", strerror(errno));
        f->stack = m + 4096;
    }
    void **top = (void **)(((uintptr_t)(f->stack + FIBER_STACK_BYTES)) & ~(uintptr_t)15);
    top[-1] = NULL;                /* fiber_entry's return address: never used */
    top[-2] = (void *)fiber_entry; /* where the first switch returns to */
    for (int i = 3; i <= 8; i++)
        top[-i] = NULL; /* rbp rbx r12..r15 */
    f->sp = &top[-8];
    f->state = F_READY;
    f->n_copies = f->groups = 0;
}

static void run_fiber(fiber *f) {
    if (g_kernel_stats) g_kernel_stats->fiber_runs++;
    g_current = f;
    ad_emu_thread_idx = f->idx;
    void *sched_fake_stack = NULL;
    asan_leave(&sched_fake_stack, f->stack, FIBER_STACK_BYTES);
    ad_emu_switch(&g_sched_sp, f->sp);
    asan_back_in_scheduler(sched_fake_stack);
    g_current = NULL;
}

[[noreturn]] static void kernel_fault(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emu_die("kernel %s, block (%u,%u,%u) of (%u,%u,%u), %u threads: %s", g_kernel_name,
            ad_emu_block_idx.x, ad_emu_block_idx.y, ad_emu_block_idx.z, ad_emu_grid_dim.x,
            ad_emu_grid_dim.y, ad_emu_grid_dim.z,
            ad_emu_block_dim.x * ad_emu_block_dim.y * ad_emu_block_dim.z, msg);
}

void ad_emu_kernel_fault(const char *what) {
    kernel_fault("%s", what);
}

static void wait_here(fiber_state st) {
    fiber *f = g_current;
    if (!f) emu_die("a barrier or shuffle outside a kernel");
    f->state = st;
    asan_leave(&f->asan_fake_stack, sched_bottom(), sched_size());
    ad_emu_switch(&f->sp, g_sched_sp);
    asan_arrived_in_fiber(f->asan_fake_stack);
}

/* cp.async lands at some point between its issue and the wait_group that covers its group.
 * In launch order the copy lands as late as it may (at that wait), so a tile read before its
 * wait, or before the barrier after the other threads' waits, holds stale bytes; in reverse
 * order as early as it may (at issue), so a stage overwritten while another warp still reads
 * it is caught. */
static void land(void *dst, const void *src, int bytes) {
    if (src)
        memcpy(dst, src, (size_t)bytes);
    else
        memset(dst, 0, (size_t)bytes); /* cp.async's zero fill */
}

void ad_emu_copy_async(void *dst, const void *src, int bytes, bool valid) {
    fiber *f = g_current;
    if (!f) emu_die("cp.async outside a kernel");
    if ((uintptr_t)dst % (uintptr_t)bytes || (valid && (uintptr_t)src % (uintptr_t)bytes))
        kernel_fault("cp.async of %d bytes from a misaligned address", bytes);
    if (g_reverse) {
        land(dst, valid ? src : NULL, bytes);
        return;
    }
    if (f->n_copies == (int)(sizeof f->copies / sizeof f->copies[0]))
        kernel_fault("more asynchronous copies in flight than the emulator keeps");
    f->copies[f->n_copies++] = {dst, valid ? src : NULL, bytes, f->groups};
}

void ad_emu_copy_commit(void) {
    if (!g_current) emu_die("cp.async.commit_group outside a kernel");
    g_current->groups++;
}

void ad_emu_copy_wait(int pending) {
    fiber *f = g_current;
    if (!f) emu_die("cp.async.wait_group outside a kernel");
    int kept = 0;
    for (int i = 0; i < f->n_copies; i++) {
        const fiber::copy &c = f->copies[i];
        if (c.group < f->groups - pending) {
            land(c.dst, c.src, c.bytes);
        } else {
            f->copies[kept++] = c;
        }
    }
    f->n_copies = kept;
}

void ad_emu_syncthreads(const char *file, int line) {
    if (g_current) {
        g_current->site_file = file;
        g_current->site_line = line;
    }
    wait_here(F_WAIT_BLOCK);
}

uint64_t ad_emu_shuffle(unsigned mask, uint64_t bits, int kind, int arg, int width) {
    fiber *f = g_current;
    if (!f) emu_die("a shuffle outside a kernel");
    if (width < 1 || width > 32 || (width & (width - 1)))
        kernel_fault("shuffle width %d is not a power of two up to 32", width);
    f->mask = mask;
    f->value = bits;
    f->kind = kind;
    f->arg = arg;
    f->width = width;
    wait_here(F_WAIT_WARP);
    return f->result;
}

const void *ad_emu_warp_gather(const void *mine, int bytes) {
    fiber *f = g_current;
    if (!f) emu_die("a warp-wide exchange outside a kernel");
    if (bytes < 1 || bytes > AD_EMU_GATHER_MAX)
        kernel_fault("a warp-wide exchange of %d bytes (1 to %d)", bytes, AD_EMU_GATHER_MAX);
    f->mask = 0xffffffffu;
    f->value = (uint64_t)(uintptr_t)mine;
    f->kind = KIND_GATHER;
    f->arg = bytes;
    f->width = 32;
    wait_here(F_WAIT_WARP);
    return (const void *)(uintptr_t)f->result;
}

/* Releases the warp of threads [w0, w0 + nl) when its shuffle has all its lanes; false when
 * it could not be. */
static bool release_warp(int w0, int nl) {
    fiber *lanes = &g_fibers[w0];
    int first = -1;
    for (int l = 0; l < nl; l++)
        if (lanes[l].state == F_WAIT_WARP) {
            first = l;
            break;
        }
    if (first < 0) return false;
    const unsigned mask = lanes[first].mask;
    for (int l = 0; l < 32; l++) {
        const bool named = (mask >> l) & 1u;
        if (l >= nl) {
            if (named)
                kernel_fault("warp %d: a shuffle's mask 0x%08x names lane %d, which does not "
                             "exist",
                             w0 / 32, mask, l);
            continue;
        }
        const fiber &fl = lanes[l];
        if (fl.state == F_WAIT_WARP && !named)
            kernel_fault("warp %d: lane %d shuffles with mask 0x%08x, which lane %d's mask "
                         "0x%08x does not name",
                         w0 / 32, l, fl.mask, first, mask);
        if (!named) continue;
        if (fl.state == F_DONE)
            kernel_fault("warp %d: a shuffle's mask 0x%08x names lane %d, which has exited",
                         w0 / 32, mask, l);
        if (fl.state == F_WAIT_BLOCK)
            kernel_fault("warp %d: lane %d waits at __syncthreads while lane %d shuffles "
                         "(divergent barrier)",
                         w0 / 32, l, first);
        if (fl.mask != mask || fl.kind != lanes[first].kind)
            kernel_fault("warp %d: lanes %d and %d are in different shuffles", w0 / 32, first, l);
    }
    if (lanes[first].kind == KIND_GATHER) {
        /* one copy per warp: each lane reads it before any lane can wait again */
        static char buffers[MAX_THREADS / 32][32 * AD_EMU_GATHER_MAX];
        char *all = buffers[w0 / 32];
        const int bytes = lanes[first].arg;
        for (int l = 0; l < 32; l++) {
            if (lanes[l].arg != bytes)
                kernel_fault("warp %d: lanes %d and %d exchange %d and %d bytes", w0 / 32, first, l,
                             bytes, lanes[l].arg);
            memcpy(all + l * bytes, (const void *)(uintptr_t)lanes[l].value, (size_t)bytes);
        }
        for (int l = 0; l < 32; l++) {
            lanes[l].result = (uint64_t)(uintptr_t)all;
            lanes[l].state = F_READY;
        }
        return true;
    }
    for (int l = 0; l < nl; l++) {
        fiber &fl = lanes[l];
        if (!((mask >> l) & 1u)) continue;
        const int w = fl.width, seg = l & ~(w - 1);
        int src = l;
        switch (fl.kind) {
        case 0: src = seg + (fl.arg & (w - 1)); break;
        case 1:
            src = l ^ fl.arg;
            if (src >= seg + w) src = l;
            break;
        case 2:
            src = l + fl.arg;
            if (src >= seg + w) src = l;
            break;
        default:
            src = l - fl.arg;
            if (src < seg) src = l;
            break;
        }
        if (src < 0 || src >= 32 || !((mask >> src) & 1u))
            kernel_fault("warp %d: lane %d reads lane %d, which is not in the shuffle's mask "
                         "0x%08x (undefined on a GPU)",
                         w0 / 32, l, src, mask);
        fl.result = lanes[src].value;
    }
    for (int l = 0; l < nl; l++)
        if ((mask >> l) & 1u) lanes[l].state = F_READY;
    return true;
}

/* Releases every warp whose shuffle has all its lanes; false when none could be. */
static bool release_warps(int nthreads) {
    bool released = false;
    for (int w0 = 0; w0 < nthreads; w0 += 32)
        released |= release_warp(w0, nthreads - w0 < 32 ? nthreads - w0 : 32);
    return released;
}

static void run_block(int nthreads) {
    g_block_serial++;
    const dim3 b = ad_emu_block_dim;
    for (int t = 0; t < nthreads; t++) {
        fiber_reset(&g_fibers[t]);
        g_fibers[t].idx = make_uint3(t % b.x, (t / b.x) % b.y, t / (b.x * b.y));
    }
    const int nwarps = (nthreads + 31) / 32;
    for (;;) {
        /* One warp at a time runs until each of its threads waits at a __syncthreads or has
         * returned, its shuffles released as they fill: a warp that reads what another warp
         * writes with no barrier between them reads it before it is written. */
        for (int k = 0; k < nwarps; k++) {
            const int w = g_reverse ? nwarps - 1 - k : k, t0 = 32 * w,
                      n = nthreads - t0 < 32 ? nthreads - t0 : 32;
            do {
                for (int i = 0; i < n; i++) {
                    fiber *f = &g_fibers[t0 + (g_reverse ? n - 1 - i : i)];
                    if (f->state == F_READY) run_fiber(f);
                }
            } while (release_warp(t0, n)); /* only this warp has run since the last release */
        }
        bool all_done = true, any_block = false;
        for (int t = 0; t < nthreads; t++) {
            if (g_fibers[t].state != F_DONE) all_done = false;
            if (g_fibers[t].state == F_WAIT_BLOCK) any_block = true;
        }
        if (all_done) return;
        if (release_warps(nthreads)) continue;
        if (!any_block) kernel_fault("no thread can proceed (deadlock)");
        /* A barrier in code that not every thread reaches is undefined (the programming
         * guide); GPUs often get away with it, so only the emulator can say. */
        int waiter = -1;
        for (int t = 0; t < nthreads; t++) {
            const fiber &f = g_fibers[t];
            if (f.state == F_DONE)
                kernel_fault("thread %d has exited while others wait at a __syncthreads "
                             "(divergent barrier)",
                             t);
            if (waiter < 0) waiter = t;
            const fiber &w = g_fibers[waiter];
            if (f.site_line != w.site_line ||
                (f.site_file != w.site_file && strcmp(f.site_file, w.site_file) != 0))
                kernel_fault("thread %d waits at the __syncthreads of %s:%d, thread %d at %s:%d "
                             "(divergent barrier)",
                             waiter, w.site_file, w.site_line, t, f.site_file, f.site_line);
        }
        for (int t = 0; t < nthreads; t++)
            g_fibers[t].state = F_READY;
    }
}

/* ---- shared memory ------------------------------------------------------------------------- */
/* A launch's dynamic shared memory between two guard zones (none under ASan), in a buffer of
 * exactly that size: a reused vector's spare capacity would hide an overrun from ASan. */
static std::vector<char> g_dynamic_smem;
static size_t g_dynamic_bytes;
static std::map<void *, unsigned long long> g_shared_seen;

void *ad_emu_dynamic_shared(void) {
    return g_dynamic_smem.data() + GUARD_BYTES;
}

static void dynamic_shared_arm(size_t bytes) {
    g_dynamic_bytes = bytes;
    g_dynamic_smem = std::vector<char>(bytes + 2 * GUARD_BYTES + (bytes || GUARD_BYTES ? 0 : 1));
#if GUARD_BYTES
    memset(g_dynamic_smem.data(), GUARD_BYTE, GUARD_BYTES);
    memset(g_dynamic_smem.data() + GUARD_BYTES + bytes, GUARD_BYTE, GUARD_BYTES);
#endif
}

static void dynamic_shared_check(const char *kernel) {
    const long w = guard_written(g_dynamic_smem.data(), g_dynamic_bytes);
    if (w > 0)
        emu_die("kernel %s wrote before its %zu bytes of dynamic shared memory (byte %ld before "
                "the start)",
                kernel, g_dynamic_bytes, w);
    if (w < 0)
        emu_die("kernel %s wrote past its %zu bytes of dynamic shared memory (byte %ld after the "
                "end): the launch asked for too few",
                kernel, g_dynamic_bytes, -1 - w);
}

void ad_emu_shared_fresh(void *p, size_t bytes) {
    unsigned long long &seen = g_shared_seen[p];
    if (seen == g_block_serial) return;
    seen = g_block_serial;
    memset(p, 0xFF, bytes);
}

/* ---- launch ---------------------------------------------------------------------------------- */
/* AUDISTILL_CUDA_EMU_KERNEL_DELAY_US="NAME=US;NAME=US": each launch of a kernel of that name (as
 * the launch spells it, e.g. fa_forward_kernel<D,narrow>) takes US microseconds more (slept, or
 * on the virtual clock), so tests can steer what GEMM tuning times. */
static void kernel_delay(const char *name) {
    ad_emu_spend_us(1);
    const char *spec = getenv("AUDISTILL_CUDA_EMU_KERNEL_DELAY_US");
    const size_t len = strlen(name);
    for (const char *p = spec; p && *p;) {
        const char *eq = strchr(p, '='), *end = strchr(p, ';');
        if (!eq) break;
        if ((size_t)(eq - p) == len && strncmp(p, name, len) == 0) {
            ad_emu_spend_us(strtol(eq + 1, NULL, 10));
            return;
        }
        p = end ? end + 1 : NULL;
    }
}

/* The last kernel launched, by name (tests check which variant a choice ran). */
static const char *g_last_kernel = "";
extern "C" const char *ad_emu_last_kernel(void) {
    return g_last_kernel;
}

void ad_emu_launch_impl(const void *kernel, const char *name, dim3 grid, dim3 block, size_t smem,
                        void (*body)(void *), void *ctx) {
    if (g_current) emu_die("kernel %s launched from inside a kernel", name);
    kernel_delay(name);
    g_last_kernel = name;
    g_kernel_stats = stats() ? &g_stats->launches[name] : NULL;
    if (g_kernel_stats) g_kernel_stats->launches++;
    g_default_generation++;
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > MAX_THREADS || block.x > 1024 || block.y > 1024 ||
        block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu ||
        grid.y > 65535 || grid.z > 65535) {
        g_last_error = cudaErrorInvalidConfiguration;
        return;
    }
    if (smem > (48u << 10)) {
        auto it = g_max_dynamic_smem.find(kernel);
        if (it == g_max_dynamic_smem.end() || (size_t)it->second < smem) {
            g_last_error = cudaErrorInvalidValue;
            return;
        }
    }
    static bool order_read;
    if (!order_read) {
        const char *o = getenv("AUDISTILL_CUDA_EMU_ORDER");
        g_reverse = o && strcmp(o, "reverse") == 0;
        order_read = true;
    }
    dynamic_shared_arm(smem);
    ad_emu_device_access(true);
    g_body = body;
    g_body_ctx = ctx;
    g_kernel_name = name;
    ad_emu_grid_dim = grid;
    ad_emu_block_dim = block;
    const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    if (g_kernel_stats) g_kernel_stats->threads += (long long)(nblocks * nthreads);
    for (unsigned long long i = 0; i < nblocks; i++) {
        const unsigned long long bi = g_reverse ? nblocks - 1 - i : i;
        ad_emu_block_idx = make_uint3((unsigned)(bi % grid.x), (unsigned)((bi / grid.x) % grid.y),
                                      (unsigned)(bi / ((unsigned long long)grid.x * grid.y)));
        memset(ad_emu_dynamic_shared(), 0xFF, smem);
        run_block((int)nthreads);
        dynamic_shared_check(name);
    }
    check_guards(name);
    ad_emu_device_access(false);
}
