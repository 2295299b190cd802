/* The MPI communicator (see comm.h): deterministic collectives on host buffers built from
 * MPI_Alltoall / MPI_Allgather (each rank sums its slice from every rank's values in rank
 * order), errors returned instead of MPI's default abort so they name the operation and the
 * rank, and a watchdog thread that ends the whole job when a collective waits too long.
 *
 * Why not MPI_Allreduce: MPI does not promise an order for its sums (Open MPI picks reduction
 * algorithms by message size and rank count), so the same run could round differently; the
 * trainer's resume and rank-count tests need sums that depend on the inputs only. Moving the
 * data through an all-to-all and an all-gather costs the same bandwidth as a ring allreduce. */
#include "dist/comm.h"

#include "core/error.h"

#ifndef AUDISTILL_HAVE_MPI

int ad_comm_mpi(ad_comm **out) {
    *out = NULL;
    return ad_fail("this audistill was built without MPI (install libopenmpi-dev and rebuild)");
}

#else

#include <mpi.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/progress.h"

/* Elements per rank and round: bounds the staging memory (2 * world * round elements) and
 * keeps MPI's int counts far from overflow. AUDISTILL_MPI_ROUND lowers it so that tests cross
 * round boundaries with small buffers. */
enum { ROUND = 1 << 22 };

typedef struct {
    ad_comm base;
    MPI_Comm comm;
    bool we_initialized;
    int thread_level;
    char *stage;
    size_t stage_bytes;
    /* watchdog */
    pthread_t thread;
    bool thread_running, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const char *op; /* the collective in progress, NULL between them */
    double since, timeout;
    int64_t round;
} mpi_comm;

static double now_s(void) {
    return ad_now_seconds();
}

static void *watchdog(void *arg) {
    mpi_comm *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        if (m->stop || !m->op || now_s() - m->since <= m->timeout) continue;
        fprintf(stderr,
                "audistill: rank %d of %d: %s has waited %.0f s for the other ranks (limit "
                "AUDISTILL_COMM_TIMEOUT=%.0f s): a rank died or hangs; ending the whole job\n",
                m->base.rank, m->base.world, m->op, now_s() - m->since, m->timeout);
        fflush(stderr);
        /* MPI_Abort from this thread is allowed only at MPI_THREAD_MULTIPLE; either way the
         * launcher sees a rank leave without MPI_Finalize and ends the others. The alarm bounds
         * an abort that itself cannot reach a peer. */
        alarm(30);
        if (m->thread_level == MPI_THREAD_MULTIPLE) MPI_Abort(MPI_COMM_WORLD, 70);
        _exit(70);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static void enter(mpi_comm *m, const char *op) {
    pthread_mutex_lock(&m->mu);
    m->op = op;
    m->since = now_s();
    pthread_mutex_unlock(&m->mu);
}

static void leave(mpi_comm *m) {
    pthread_mutex_lock(&m->mu);
    m->op = NULL;
    pthread_mutex_unlock(&m->mu);
}

static int check(mpi_comm *m, int rc, const char *op) {
    if (rc == MPI_SUCCESS) return AD_OK;
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return ad_fail("MPI %s failed on rank %d of %d: %s (did another rank die?)", op, m->base.rank,
                   m->base.world, msg);
}

static int stage(mpi_comm *m, size_t bytes) {
    if (bytes <= m->stage_bytes) return AD_OK;
    char *s = ad_realloc(m->stage, bytes, "MPI staging buffer");
    if (!s) return AD_ERR;
    m->stage = s, m->stage_bytes = bytes;
    return AD_OK;
}

/* Each rank's slice `per` elements long: out[i] = sum over ranks q of in[q * per + i], in rank
 * order, in double. */
static void sum_slices(const char *in, char *out, int world, int64_t per, bool f64) {
    if (f64) {
        const double *x = (const double *)in;
        double *y = (double *)out;
        for (int64_t i = 0; i < per; i++) {
            double s = 0;
            for (int q = 0; q < world; q++)
                s += x[q * per + i];
            y[i] = s;
        }
    } else {
        const float *x = (const float *)in;
        float *y = (float *)out;
        for (int64_t i = 0; i < per; i++) {
            double s = 0;
            for (int q = 0; q < world; q++)
                s += x[q * per + i];
            y[i] = (float)s;
        }
    }
}

static int allreduce_any(mpi_comm *m, void *buf, int64_t n, bool f64) {
    if (n < 0) return ad_fail("allreduce: negative count %lld", (long long)n);
    const int W = m->base.world, R = m->base.rank;
    const size_t es = f64 ? sizeof(double) : sizeof(float);
    const MPI_Datatype T = f64 ? MPI_DOUBLE : MPI_FLOAT;
    int rc = AD_OK;
    enter(m, "allreduce");
    for (int64_t o = 0; o < n && rc == AD_OK;) {
        const int64_t len = n - o < m->round * W ? n - o : m->round * W;
        const int64_t per = (len + W - 1) / W;
        rc = stage(m, 2 * (size_t)W * (size_t)per * es);
        if (rc < 0) break;
        char *send = m->stage, *recv = m->stage + (size_t)W * (size_t)per * es;
        memcpy(send, (char *)buf + (size_t)o * es, (size_t)len * es);
        memset(send + (size_t)len * es, 0, ((size_t)W * (size_t)per - (size_t)len) * es);
        rc = check(m, MPI_Alltoall(send, (int)per, T, recv, (int)per, T, m->comm), "allreduce");
        if (rc < 0) break;
        sum_slices(recv, send + (size_t)R * (size_t)per * es, W, per, f64);
        rc = check(m, MPI_Allgather(MPI_IN_PLACE, 0, T, send, (int)per, T, m->comm), "allreduce");
        if (rc < 0) break;
        memcpy((char *)buf + (size_t)o * es, send, (size_t)len * es);
        o += len;
    }
    leave(m);
    return rc;
}

static int mpi_allreduce(ad_comm *c, float *buf, int64_t n) {
    return allreduce_any((mpi_comm *)c, buf, n, false);
}

static int mpi_allreduce_f64(ad_comm *c, double *buf, int64_t n) {
    return allreduce_any((mpi_comm *)c, buf, n, true);
}

static int mpi_allreduce_mean(ad_comm *c, float *buf, int64_t n) {
    AD_TRY(allreduce_any((mpi_comm *)c, buf, n, false));
    const float f = (float)(1.0 / c->world);
    for (int64_t i = 0; i < n; i++)
        buf[i] *= f;
    return AD_OK;
}

static int mpi_broadcast(ad_comm *c, void *buf, int64_t bytes, int root) {
    mpi_comm *m = (mpi_comm *)c;
    if (bytes < 0) return ad_fail("broadcast: negative size %lld", (long long)bytes);
    if (root < 0 || root >= c->world)
        return ad_fail("broadcast from rank %d of %d", root, c->world);
    int rc = AD_OK;
    enter(m, "broadcast");
    for (int64_t o = 0; o < bytes && rc == AD_OK;) {
        const int64_t len = bytes - o < (1 << 30) ? bytes - o : (1 << 30);
        rc = check(m, MPI_Bcast((char *)buf + o, (int)len, MPI_BYTE, root, m->comm), "broadcast");
        o += len;
    }
    leave(m);
    return rc;
}

static int mpi_reduce_scatter(ad_comm *c, const float *send, float *recv, int64_t n) {
    mpi_comm *m = (mpi_comm *)c;
    if (n < 0) return ad_fail("reduce-scatter: negative count %lld", (long long)n);
    const int W = c->world;
    int rc = AD_OK;
    enter(m, "reduce-scatter");
    for (int64_t o = 0; o < n && rc == AD_OK;) {
        const int64_t len = n - o < m->round ? n - o : m->round;
        rc = stage(m, 2 * (size_t)W * (size_t)len * sizeof(float));
        if (rc < 0) break;
        float *out = (float *)m->stage, *in = out + (size_t)W * (size_t)len;
        for (int q = 0; q < W; q++)
            memcpy(out + (size_t)q * (size_t)len, send + (size_t)q * (size_t)n + (size_t)o,
                   sizeof(float) * (size_t)len);
        rc = check(m, MPI_Alltoall(out, (int)len, MPI_FLOAT, in, (int)len, MPI_FLOAT, m->comm),
                   "reduce-scatter");
        if (rc < 0) break;
        sum_slices((const char *)in, (char *)(recv + o), W, len, false);
        o += len;
    }
    leave(m);
    return rc;
}

static int mpi_all_gather(ad_comm *c, const float *send, float *recv, int64_t n) {
    mpi_comm *m = (mpi_comm *)c;
    if (n < 0) return ad_fail("all-gather: negative count %lld", (long long)n);
    const int W = c->world;
    int rc = AD_OK;
    enter(m, "all-gather");
    for (int64_t o = 0; o < n && rc == AD_OK;) {
        const int64_t len = n - o < m->round ? n - o : m->round;
        rc = stage(m, (size_t)W * (size_t)len * sizeof(float));
        if (rc < 0) break;
        float *all = (float *)m->stage;
        rc = check(m,
                   MPI_Allgather(send + o, (int)len, MPI_FLOAT, all, (int)len, MPI_FLOAT, m->comm),
                   "all-gather");
        if (rc < 0) break;
        for (int q = 0; q < W; q++)
            memcpy(recv + (size_t)q * (size_t)n + (size_t)o, all + (size_t)q * (size_t)len,
                   sizeof(float) * (size_t)len);
        o += len;
    }
    leave(m);
    return rc;
}

static int mpi_barrier(ad_comm *c) {
    mpi_comm *m = (mpi_comm *)c;
    enter(m, "barrier");
    const int rc = check(m, MPI_Barrier(m->comm), "barrier");
    leave(m);
    return rc;
}

static void mpi_abort(ad_comm *c, int exit_code) {
    fflush(stdout), fflush(stderr);
    MPI_Abort(((mpi_comm *)c)->comm, exit_code ? exit_code : 1);
    _exit(exit_code ? exit_code : 1);
}

static void mpi_destroy(ad_comm *c) {
    mpi_comm *m = (mpi_comm *)c;
    if (!m) return;
    if (m->thread_running) {
        pthread_mutex_lock(&m->mu);
        m->stop = true;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    if (m->comm != MPI_COMM_NULL) MPI_Comm_free(&m->comm);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (m->we_initialized && !finalized) MPI_Finalize();
    free(m->stage);
    free(m);
}

int ad_comm_mpi(ad_comm **out) {
    *out = NULL;
    ad_rank_info info;
    AD_TRY(ad_discover_ranks(&info));
    double timeout;
    AD_TRY(ad_comm_timeout(&timeout));
    mpi_comm *m = ad_calloc(1, sizeof *m, "MPI communicator");
    if (!m) return AD_ERR;
    m->comm = MPI_COMM_NULL;
    m->timeout = timeout;
    m->round = ROUND;
    const char *round = getenv("AUDISTILL_MPI_ROUND");
    if (round && atoll(round) > 0 && atoll(round) < ROUND) m->round = atoll(round);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    int inited = 0, rank = 0, world = 1;
    MPI_Initialized(&inited);
    if (!inited) {
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &m->thread_level) != MPI_SUCCESS) {
            mpi_destroy(&m->base);
            return ad_fail("MPI_Init failed (launched by %s as rank %d of %d)", info.source,
                           info.rank, info.world);
        }
        m->we_initialized = true;
    } else {
        MPI_Query_thread(&m->thread_level);
    }
    /* Errors come back as codes (a message naming the operation) instead of MPI's default
     * abort without context. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (MPI_Comm_dup(MPI_COMM_WORLD, &m->comm) != MPI_SUCCESS) {
        mpi_destroy(&m->base);
        return ad_fail("MPI_Comm_dup failed");
    }
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->comm, &rank);
    MPI_Comm_size(m->comm, &world);
    if (rank != info.rank || world != info.world) {
        mpi_destroy(&m->base);
        return ad_fail("MPI says rank %d of %d but %s says rank %d of %d: launch with mpirun or "
                       "srun (not several independent processes)",
                       rank, world, info.source, info.rank, info.world);
    }
    m->base = (ad_comm){.name = "mpi",
                        .rank = rank,
                        .world = world,
                        .local_rank = info.local_rank,
                        .allreduce_sum = mpi_allreduce,
                        .allreduce_sum_f64 = mpi_allreduce_f64,
                        .allreduce_mean = mpi_allreduce_mean,
                        .broadcast = mpi_broadcast,
                        .reduce_scatter_sum = mpi_reduce_scatter,
                        .all_gather = mpi_all_gather,
                        .barrier = mpi_barrier,
                        .abort = mpi_abort,
                        .destroy = mpi_destroy};
    if (pthread_create(&m->thread, NULL, watchdog, m) != 0) {
        mpi_destroy(&m->base);
        return ad_fail("cannot start the MPI watchdog thread");
    }
    m->thread_running = true;
    ad_log_set_rank(rank, world);
    *out = &m->base;
    return AD_OK;
}

#endif
