/* The NCCL communicator (see comm.h): collectives on CUDA buffers of GPU local_rank, one
 * stream per communicator, every operation complete when it returns. Waiting polls the stream
 * and NCCL's asynchronous error state instead of blocking in cudaStreamSynchronize, so a peer
 * that died or hangs ends in ncclCommAbort and an error naming the operation after
 * AUDISTILL_COMM_TIMEOUT seconds, never in a silent hang.
 *
 * The communicator's stream is a non-blocking one, so every operation first makes it wait for
 * the work already queued on the legacy default stream (where the backend's kernels run, e.g.
 * the backward pass writing the gradients a sum reads): an event recorded there and waited for,
 * no host synchronisation.
 *
 * allreduce_mean is NCCL's ncclAvg (rounding as NCCL computes it, not the sum times
 * (float)(1/world) of the host communicators); sums are NCCL's float sums in its ring or tree
 * order, fixed for a given topology and NCCL version. */
#include "dist/comm.h"

#include "core/error.h"

#ifndef AUDISTILL_HAVE_NCCL

int ad_comm_nccl(ad_comm *bootstrap, const char *id_file, ad_comm **out) {
    (void)bootstrap, (void)id_file;
    *out = NULL;
    return ad_fail("this audistill was built without NCCL (needs CUDA and NCCL at build time)");
}

#else

#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/progress.h"
#include "io/file.h"

typedef struct {
    ad_comm base;
    ncclComm_t nccl;
    cudaStream_t stream;
    ad_comm *bootstrap; /* not owned */
    float *scratch;     /* one device float for the barrier without a bootstrap */
    cudaEvent_t queued; /* recorded on the default stream before each operation */
    double timeout;
} nccl_comm;

static int nccl_check(nccl_comm *m, ncclResult_t r, const char *op) {
    if (r == ncclSuccess) return AD_OK;
    return ad_fail("NCCL %s failed on rank %d of %d: %s", op, m->base.rank, m->base.world,
                   ncclGetErrorString(r));
}

/* Until the stream has finished the operation, NCCL reports an error, or the time runs out. */
static int finish(nccl_comm *m, ncclResult_t launched, const char *op) {
    AD_TRY(nccl_check(m, launched, op));
    const double t0 = ad_now_seconds();
    for (long spins = 0;; spins++) {
        const cudaError_t e = cudaStreamQuery(m->stream);
        if (e == cudaSuccess) return AD_OK;
        if (e != cudaErrorNotReady)
            return ad_fail("NCCL %s on rank %d: CUDA error %s", op, m->base.rank,
                           cudaGetErrorString(e));
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(m->nccl, &async);
        if (async != ncclSuccess) {
            ncclCommAbort(m->nccl);
            m->nccl = NULL;
            return ad_fail("NCCL %s failed on rank %d of %d: %s (did another rank die?)", op,
                           m->base.rank, m->base.world, ncclGetErrorString(async));
        }
        if ((spins & 1023) == 0 && ad_now_seconds() - t0 > m->timeout) {
            ncclCommAbort(m->nccl);
            m->nccl = NULL;
            return ad_fail("NCCL %s on rank %d of %d waited %.0f s for the other ranks (limit "
                           "AUDISTILL_COMM_TIMEOUT): a rank died or hangs",
                           op, m->base.rank, m->base.world, ad_now_seconds() - t0);
        }
        sched_yield();
    }
}

/* Whether the operation may start: the communicator is alive, the count sane, and the stream
 * ordered after the work queued on the default stream. */
static int usable(nccl_comm *m, int64_t n, const char *op) {
    if (!m->nccl)
        return ad_fail("NCCL %s on rank %d: the communicator was aborted by an earlier error", op,
                       m->base.rank);
    if (n < 0) return ad_fail("NCCL %s: negative count %lld", op, (long long)n);
    cudaError_t e = cudaEventRecord(m->queued, cudaStreamLegacy);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(m->stream, m->queued, 0);
    return e == cudaSuccess ? AD_OK
                            : ad_fail("NCCL %s on rank %d: cannot order its stream after the "
                                      "default stream (%s)",
                                      op, m->base.rank, cudaGetErrorString(e));
}

static int nccl_allreduce(ad_comm *c, float *buf, int64_t n) {
    nccl_comm *m = (nccl_comm *)c;
    AD_TRY(usable(m, n, "allreduce"));
    return finish(m, ncclAllReduce(buf, buf, (size_t)n, ncclFloat, ncclSum, m->nccl, m->stream),
                  "allreduce");
}

static int nccl_allreduce_f64(ad_comm *c, double *buf, int64_t n) {
    nccl_comm *m = (nccl_comm *)c;
    AD_TRY(usable(m, n, "allreduce"));
    return finish(m, ncclAllReduce(buf, buf, (size_t)n, ncclDouble, ncclSum, m->nccl, m->stream),
                  "allreduce");
}

static int nccl_allreduce_mean(ad_comm *c, float *buf, int64_t n) {
    nccl_comm *m = (nccl_comm *)c;
    AD_TRY(usable(m, n, "allreduce"));
    return finish(m, ncclAllReduce(buf, buf, (size_t)n, ncclFloat, ncclAvg, m->nccl, m->stream),
                  "allreduce (mean)");
}

static int nccl_broadcast(ad_comm *c, void *buf, int64_t bytes, int root) {
    nccl_comm *m = (nccl_comm *)c;
    AD_TRY(usable(m, bytes, "broadcast"));
    if (root < 0 || root >= c->world)
        return ad_fail("broadcast from rank %d of %d", root, c->world);
    return finish(m, ncclBroadcast(buf, buf, (size_t)bytes, ncclUint8, root, m->nccl, m->stream),
                  "broadcast");
}

static int nccl_reduce_scatter(ad_comm *c, const float *send, float *recv, int64_t n) {
    nccl_comm *m = (nccl_comm *)c;
    AD_TRY(usable(m, n, "reduce-scatter"));
    return finish(m,
                  ncclReduceScatter(send, recv, (size_t)n, ncclFloat, ncclSum, m->nccl, m->stream),
                  "reduce-scatter");
}

static int nccl_all_gather(ad_comm *c, const float *send, float *recv, int64_t n) {
    nccl_comm *m = (nccl_comm *)c;
    AD_TRY(usable(m, n, "all-gather"));
    return finish(m, ncclAllGather(send, recv, (size_t)n, ncclFloat, m->nccl, m->stream),
                  "all-gather");
}

static int nccl_barrier(ad_comm *c) {
    nccl_comm *m = (nccl_comm *)c;
    if (m->bootstrap) return m->bootstrap->barrier(m->bootstrap);
    return nccl_allreduce(c, m->scratch, 1);
}

static void nccl_abort(ad_comm *c, int exit_code) {
    nccl_comm *m = (nccl_comm *)c;
    if (m->nccl) ncclCommAbort(m->nccl);
    m->nccl = NULL;
    if (m->bootstrap) m->bootstrap->abort(m->bootstrap, exit_code);
    fflush(stdout), fflush(stderr);
    _exit(exit_code ? exit_code : 1);
}

static void nccl_destroy(ad_comm *c) {
    nccl_comm *m = (nccl_comm *)c;
    if (!m) return;
    if (m->nccl) ncclCommDestroy(m->nccl);
    if (m->stream) cudaStreamDestroy(m->stream);
    if (m->scratch) cudaFree(m->scratch);
    if (m->queued) cudaEventDestroy(m->queued);
    free(m);
}

/* Rank 0 writes the id atomically; the others wait until it is there. The path must be unique
 * to the job (a stale file from an earlier job would pair ranks with a dead one). */
static int id_through_file(const char *path, int rank, double timeout, ncclUniqueId *id) {
    if (rank == 0) return ad_write_file_atomic(path, id, sizeof *id);
    const double t0 = ad_now_seconds();
    while (!ad_path_exists(path)) {
        if (ad_now_seconds() - t0 > timeout)
            return ad_fail("rank %d: no NCCL id in %s after %.0f s (is it on a filesystem every "
                           "node sees? did rank 0 start?)",
                           rank, path, timeout);
        usleep(50000);
    }
    char *data = NULL;
    size_t size = 0;
    AD_TRY(ad_read_file(path, sizeof *id, &data, &size));
    const bool ok = size == sizeof *id;
    if (ok) memcpy(id, data, sizeof *id);
    free(data);
    return ok ? AD_OK
              : ad_fail("%s holds %zu bytes, not an NCCL id (%zu bytes)", path, size, sizeof *id);
}

int ad_comm_nccl(ad_comm *bootstrap, const char *id_file, ad_comm **out) {
    *out = NULL;
    ad_rank_info info;
    if (bootstrap)
        info = (ad_rank_info){bootstrap->rank, bootstrap->world, bootstrap->local_rank,
                              bootstrap->name};
    else
        AD_TRY(ad_discover_ranks(&info));
    if (!bootstrap && !id_file && info.world > 1)
        return ad_fail("NCCL over %d ranks needs a bootstrap communicator or an id file",
                       info.world);
    double timeout;
    AD_TRY(ad_comm_timeout(&timeout));
    int gpus = 0;
    cudaError_t ce = cudaGetDeviceCount(&gpus);
    if (ce != cudaSuccess)
        return ad_fail("rank %d: no CUDA device (%s)", info.rank, cudaGetErrorString(ce));
    if (info.local_rank >= gpus)
        return ad_fail("rank %d has local rank %d but its node has %d GPU(s): start at most one "
                       "rank per GPU",
                       info.rank, info.local_rank, gpus);
    if ((ce = cudaSetDevice(info.local_rank)) != cudaSuccess)
        return ad_fail("rank %d: cannot use GPU %d (%s)", info.rank, info.local_rank,
                       cudaGetErrorString(ce));
    nccl_comm *m = ad_calloc(1, sizeof *m, "NCCL communicator");
    if (!m) return AD_ERR;
    m->base = (ad_comm){.name = "nccl",
                        .rank = info.rank,
                        .world = info.world,
                        .local_rank = info.local_rank,
                        .allreduce_sum = nccl_allreduce,
                        .allreduce_sum_f64 = nccl_allreduce_f64,
                        .allreduce_mean = nccl_allreduce_mean,
                        .broadcast = nccl_broadcast,
                        .reduce_scatter_sum = nccl_reduce_scatter,
                        .all_gather = nccl_all_gather,
                        .barrier = nccl_barrier,
                        .abort = nccl_abort,
                        .destroy = nccl_destroy};
    m->bootstrap = bootstrap;
    m->timeout = timeout;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    int rc = AD_OK;
    if (info.rank == 0) rc = nccl_check(m, ncclGetUniqueId(&id), "unique id");
    if (rc == AD_OK && bootstrap)
        rc = bootstrap->broadcast(bootstrap, &id, sizeof id, 0);
    else if (rc == AD_OK && id_file)
        rc = id_through_file(id_file, info.rank, timeout, &id);
    if (rc == AD_OK)
        rc = nccl_check(m, ncclCommInitRank(&m->nccl, info.world, id, info.rank), "init");
    if (rc == AD_OK &&
        (ce = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)) != cudaSuccess)
        rc =
            ad_fail("rank %d: cannot create a CUDA stream (%s)", info.rank, cudaGetErrorString(ce));
    if (rc == AD_OK &&
        (ce = cudaEventCreateWithFlags(&m->queued, cudaEventDisableTiming)) != cudaSuccess)
        rc = ad_fail("rank %d: cannot create a CUDA event (%s)", info.rank, cudaGetErrorString(ce));
    if (rc == AD_OK && (ce = cudaMalloc((void **)&m->scratch, sizeof(float))) != cudaSuccess)
        rc = ad_fail("rank %d: cudaMalloc (%s)", info.rank, cudaGetErrorString(ce));
    if (rc == AD_OK && (ce = cudaMemset(m->scratch, 0, sizeof(float))) != cudaSuccess)
        rc = ad_fail("rank %d: cudaMemset (%s)", info.rank, cudaGetErrorString(ce));
    if (rc < 0) {
        nccl_destroy(&m->base);
        return AD_ERR;
    }
    *out = &m->base;
    return AD_OK;
}

#endif
