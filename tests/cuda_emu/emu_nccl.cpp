// The emulated NCCL of tests/cuda_emu: the collectives src/dist/comm_nccl.c uses, between the
// processes of an MPI run, each of which emulates its own card. Written from NCCL's documented
// semantics, against the toolkit's nccl.h:
// - ncclGetUniqueId names a POSIX shared-memory segment; ncclCommInitRank maps it and waits
//   until every rank has joined (as NCCL's init blocks), then the name is unlinked, so a crash
//   leaves nothing in /dev/shm.
// - A collective is asynchronous, as on a GPU: the call posts it on its stream and returns.
//   It advances, chunk by chunk through one staging slot per rank, whenever the caller polls
//   the stream (cudaStreamQuery, cudaStreamSynchronize) or the communicator's asynchronous
//   error (ncclCommGetAsyncError). A rank that never arrives leaves the others' streams not
//   ready, as a hung peer does on GPUs; a peer process that has exited, or a communicator that a
//   peer aborted, becomes the asynchronous error ncclRemoteError.
// - Buffers must be device memory of this process (emulated allocations): host pointers are
//   ncclInvalidArgument, where real NCCL would fault. The stream must be ordered after the work
//   pending on the default stream (an event, or a synchronising call): otherwise
//   ncclInvalidUsage, where a GPU would read buffers that are not written yet.
// - Sums are formed in rank order in the buffer's type (float or double); ncclAvg is that sum
//   times 1/world. Every rank computes the same sums, so every rank gets the same bits, as NCCL
//   guarantees for allreduce.
#include <errno.h>
#include <fcntl.h>
#include <nccl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "emu_device.h"

bool ad_emu_device_range(const void *p, size_t bytes);
void ad_emu_stream_set_poll(cudaStream_t s, bool (*poll)(void *), void *arg);
bool ad_emu_stream_ordered(cudaStream_t s);
void ad_emu_device_access(bool begin);

#define EMU_NCCL_MAGIC      "audistill-emulated-nccl-id"
#define EMU_NCCL_MAX_RANKS  64
#define EMU_NCCL_SLOT_BYTES ((size_t)64 << 10) /* small: tests cross chunk boundaries */

/* The shared segment: a header, then one staging slot per rank. Counters are touched only with
 * __atomic builtins (lock-free, so they work between processes). */
struct shared_state {
    int world;
    int joined;
    int aborted; /* a rank called ncclCommAbort */
    int pids[EMU_NCCL_MAX_RANKS];
    uint64_t posted[EMU_NCCL_MAX_RANKS];   /* chunks whose input a rank has staged */
    uint64_t consumed[EMU_NCCL_MAX_RANKS]; /* chunks whose output a rank has formed */
};

enum op_kind { OP_ALLREDUCE, OP_BROADCAST, OP_REDUCE_SCATTER, OP_ALL_GATHER };

struct pending_op {
    bool active;
    bool staged; /* this chunk's input is in the slot, the output not yet formed */
    op_kind kind;
    const char *send;
    char *recv;
    size_t count; /* elements: per rank's block for reduce-scatter and all-gather */
    size_t done;  /* elements of count finished */
    size_t esize;
    ncclDataType_t dtype;
    ncclRedOp_t op;
    int root;
};

struct ncclComm {
    int rank, world;
    shared_state *shm;
    size_t map_bytes;
    uint64_t chunks; /* chunks this rank has finished */
    pending_op op;
    ncclResult_t async;
    cudaStream_t stream;
};

static char *slot(ncclComm *c, int q) {
    return (char *)(c->shm + 1) + (size_t)q * EMU_NCCL_SLOT_BYTES;
}

static uint64_t load(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static bool process_gone(int pid) {
    return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH;
}

/* Whether rank q is unable ever to arrive: it exited, or some rank aborted. */
static bool peer_lost(ncclComm *c, int q) {
    if (__atomic_load_n(&c->shm->aborted, __ATOMIC_ACQUIRE)) return true;
    return process_gone(__atomic_load_n(&c->shm->pids[q], __ATOMIC_ACQUIRE));
}

static size_t type_size(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
    }
}

/* Elements of this chunk and the pieces each rank stages for it. */
static size_t chunk_elements(const pending_op *o, int world) {
    const size_t pieces = o->kind == OP_REDUCE_SCATTER ? (size_t)world : 1;
    const size_t fit = EMU_NCCL_SLOT_BYTES / (pieces * o->esize);
    return o->count - o->done < fit ? o->count - o->done : fit;
}

template <typename T>
static void reduce_into(ncclComm *c, size_t piece, size_t k, T *out, ncclRedOp_t op) {
    for (size_t j = 0; j < k; j++) {
        T acc = ((const T *)slot(c, 0))[piece * k + j];
        for (int q = 1; q < c->world; q++)
            acc += ((const T *)slot(c, q))[piece * k + j];
        if (op == ncclAvg) acc *= (T)1 / (T)c->world;
        out[j] = acc;
    }
}

static void form_output(ncclComm *c, pending_op *o, size_t k) {
    const size_t at = o->done;
    switch (o->kind) {
    case OP_ALLREDUCE:
    case OP_REDUCE_SCATTER: {
        const size_t piece = o->kind == OP_REDUCE_SCATTER ? (size_t)c->rank : 0;
        if (o->dtype == ncclFloat32)
            reduce_into<float>(c, piece, k, (float *)o->recv + at, o->op);
        else
            reduce_into<double>(c, piece, k, (double *)o->recv + at, o->op);
        break;
    }
    case OP_BROADCAST: memcpy(o->recv + at * o->esize, slot(c, o->root), k * o->esize); break;
    case OP_ALL_GATHER:
        for (int q = 0; q < c->world; q++)
            memcpy(o->recv + ((size_t)q * o->count + at) * o->esize, slot(c, q), k * o->esize);
        break;
    }
}

static void stage_input(ncclComm *c, pending_op *o, size_t k) {
    char *mine = slot(c, c->rank);
    if (o->kind == OP_REDUCE_SCATTER) {
        for (int p = 0; p < c->world; p++)
            memcpy(mine + (size_t)p * k * o->esize,
                   o->send + ((size_t)p * o->count + o->done) * o->esize, k * o->esize);
    } else if (o->kind != OP_BROADCAST || c->rank == o->root) {
        memcpy(mine, o->send + o->done * o->esize, k * o->esize);
    }
}

/* Advances the pending collective as far as the other ranks allow, without waiting. Returns
 * whether it is still unfinished. A chunk is staged once every rank has formed the previous
 * chunk's output (so nobody still reads this rank's slot), and its output is formed once every
 * rank has staged it. */
static bool progress(void *arg) {
    ncclComm *c = (ncclComm *)arg;
    pending_op *o = &c->op;
    while (o->active && c->async == ncclSuccess) {
        const uint64_t next = c->chunks + 1;
        for (int q = 0; q < c->world; q++) {
            const uint64_t *counter = o->staged ? &c->shm->posted[q] : &c->shm->consumed[q];
            const uint64_t need = o->staged ? next : c->chunks;
            if (load(counter) >= need) continue;
            if (peer_lost(c, q)) c->async = ncclRemoteError;
            return true;
        }
        const size_t k = chunk_elements(o, c->world);
        if (!o->staged) {
            ad_emu_device_access(true);
            stage_input(c, o, k);
            ad_emu_device_access(false);
            __atomic_store_n(&c->shm->posted[c->rank], next, __ATOMIC_RELEASE);
            o->staged = true;
            continue;
        }
        ad_emu_device_access(true);
        form_output(c, o, k);
        ad_emu_device_access(false);
        c->chunks = next;
        __atomic_store_n(&c->shm->consumed[c->rank], next, __ATOMIC_RELEASE);
        o->staged = false;
        o->done += k;
        if (o->done >= o->count) o->active = false;
    }
    return o->active;
}

static ncclResult_t post(ncclComm *c, op_kind kind, const void *send, void *recv, size_t count,
                         ncclDataType_t dtype, ncclRedOp_t op, int root, cudaStream_t stream) {
    if (!c || !c->shm) return ncclInvalidArgument;
    if (c->async != ncclSuccess) return c->async;
    const size_t esize = type_size(dtype);
    if (!esize) return ncclInvalidArgument;
    const bool reduces = kind == OP_ALLREDUCE || kind == OP_REDUCE_SCATTER;
    if (reduces &&
        ((dtype != ncclFloat32 && dtype != ncclFloat64) || (op != ncclSum && op != ncclAvg))) {
        fprintf(stderr, "emulated NCCL: only float and double sums and averages\n");
        return ncclInvalidArgument;
    }
    if (kind == OP_BROADCAST && (root < 0 || root >= c->world)) return ncclInvalidArgument;
    const size_t world = (size_t)c->world;
    const size_t send_n = kind == OP_REDUCE_SCATTER ? world * count : count;
    const size_t recv_n = kind == OP_ALL_GATHER ? world * count : count;
    const bool sends = kind != OP_BROADCAST || c->rank == root;
    if ((sends && !ad_emu_device_range(send, send_n * esize)) ||
        !ad_emu_device_range(recv, recv_n * esize)) {
        fprintf(stderr, "emulated NCCL: rank %d passed a buffer that is not device memory\n",
                c->rank);
        return ncclInvalidArgument;
    }
    if (!ad_emu_stream_ordered(stream)) {
        fprintf(stderr,
                "emulated NCCL: rank %d posted a collective on a stream that has not waited for "
                "the work pending on the default stream (on a GPU it would read buffers the "
                "pending kernels have not written: record an event there and wait for it)\n",
                c->rank);
        return ncclInvalidUsage;
    }
    if (c->op.active) {
        fprintf(stderr, "emulated NCCL: one collective at a time per communicator\n");
        return ncclInvalidUsage;
    }
    c->op = pending_op{true,  false, kind, (const char *)send, (char *)recv, count, 0, esize,
                       dtype, op,    root};
    if (!count) c->op.active = false;
    if (c->stream != stream) {
        if (c->stream) ad_emu_stream_set_poll(c->stream, NULL, NULL);
        c->stream = stream;
    }
    if (stream) ad_emu_stream_set_poll(stream, progress, c);
    progress(c);
    return ncclSuccess;
}

extern "C" {

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclSystemError: return "unhandled system error (emulated NCCL)";
    case ncclInvalidArgument: return "invalid argument (emulated NCCL)";
    case ncclInvalidUsage: return "invalid usage (emulated NCCL)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    default: return "unhandled error (emulated NCCL)";
    }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "%s /audistill-emu-nccl-%d-%u-%ld", EMU_NCCL_MAGIC,
             (int)getpid(), counter++, (long)ts.tv_nsec);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *out, int world, ncclUniqueId id, int rank) {
    *out = NULL;
    if (world < 1 || world > EMU_NCCL_MAX_RANKS || rank < 0 || rank >= world)
        return ncclInvalidArgument;
    const size_t magic = strlen(EMU_NCCL_MAGIC);
    if (memcmp(id.internal, EMU_NCCL_MAGIC " ", magic + 1) != 0 ||
        !memchr(id.internal, 0, sizeof id.internal)) {
        fprintf(stderr, "emulated NCCL: the unique id is not one ncclGetUniqueId made\n");
        return ncclInvalidArgument;
    }
    const char *name = id.internal + magic + 1;
    const size_t bytes = sizeof(shared_state) + (size_t)world * EMU_NCCL_SLOT_BYTES;
    const int fd = shm_open(name, O_RDWR | O_CREAT, 0600);
    if (fd < 0) return ncclSystemError;
    struct stat st;
    if (fstat(fd, &st) != 0 || ((size_t)st.st_size < bytes && ftruncate(fd, (off_t)bytes) != 0)) {
        close(fd);
        return ncclSystemError;
    }
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return ncclSystemError;
    ncclComm *c = new ncclComm{};
    c->rank = rank, c->world = world, c->shm = (shared_state *)map, c->map_bytes = bytes;
    int expected = 0;
    if (!__atomic_compare_exchange_n(&c->shm->world, &expected, world, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE) &&
        expected != world) {
        fprintf(stderr, "emulated NCCL: rank %d says %d ranks, another said %d\n", rank, world,
                expected);
        munmap(map, bytes);
        delete c;
        return ncclInvalidArgument;
    }
    __atomic_store_n(&c->shm->pids[rank], (int)getpid(), __ATOMIC_RELEASE);
    __atomic_add_fetch(&c->shm->joined, 1, __ATOMIC_ACQ_REL);
    /* NCCL's init blocks until every rank has joined; a peer that died first is an error here,
     * one that never starts hangs it, as on GPUs. */
    while (__atomic_load_n(&c->shm->joined, __ATOMIC_ACQUIRE) < world) {
        for (int q = 0; q < world; q++)
            if (process_gone(__atomic_load_n(&c->shm->pids[q], __ATOMIC_ACQUIRE))) {
                munmap(map, bytes);
                delete c;
                return ncclRemoteError;
            }
        usleep(1000);
    }
    shm_unlink(name); /* every rank has it mapped; the name is no longer needed */
    *out = c;
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *async) {
    if (!c) return ncclInvalidArgument;
    progress(c);
    *async = c->async;
    return ncclSuccess;
}

static void release(ncclComm *c) {
    if (c->stream) ad_emu_stream_set_poll(c->stream, NULL, NULL);
    munmap(c->shm, c->map_bytes);
    delete c;
}

ncclResult_t ncclCommAbort(ncclComm_t c) {
    if (!c) return ncclSuccess;
    __atomic_store_n(&c->shm->aborted, 1, __ATOMIC_RELEASE);
    release(c);
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
    if (!c) return ncclSuccess;
    while (progress(c) && c->async == ncclSuccess)
        usleep(100); /* NCCL finishes what was posted before it frees */
    release(c);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t dtype,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
    return post(c, OP_ALLREDUCE, send, recv, count, dtype, op, 0, stream);
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t dtype,
                           int root, ncclComm_t c, cudaStream_t stream) {
    return post(c, OP_BROADCAST, send, recv, count, dtype, ncclSum, root, stream);
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t dtype,
                               ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
    return post(c, OP_REDUCE_SCATTER, send, recv, recvcount, dtype, op, 0, stream);
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t dtype,
                           ncclComm_t c, cudaStream_t stream) {
    return post(c, OP_ALL_GATHER, send, recv, sendcount, dtype, ncclSum, 0, stream);
}

} // extern "C"
