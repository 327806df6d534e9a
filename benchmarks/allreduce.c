/* Summing distcnn's gradient over ranks, timed in isolation for N floats (default 871,530:
 * `ref`'s parameters), median (min–max) of 7 repetitions of many calls:
 *   - a blocking MPI_Allreduce;
 *   - an in-place MPI_Iallreduce polled with MPI_Test (what distcnn did before its own ring);
 *   - distcnn's ring (Sources/Collective/MPICommunicator.swift): reduce-scatter then all-gather,
 *     P − 1 rounds each of MPI_Irecv + MPI_Isend to the neighbours, polled with MPI_Testall;
 *   - the fastest exchange we could write for ranks on one node, to know what a shared-memory
 *     transport could save (measured, not built; BENCHMARKS.md): each rank copies its buffer into
 *     a window of MPI_Win_allocate_shared, meets the others at a spinning flag barrier, sums its
 *     shard over every rank's copy, meets them again and copies the sums out (double-buffered).
 *
 *   mpicc -O2 benchmarks/allreduce.c -o /tmp/allreduce
 *   mpirun -np 2 --bind-to core /tmp/allreduce [N]
 *   OMPI_MCA_coll_libnbc_iallreduce_algorithm=1 mpirun -np 2 --bind-to core /tmp/allreduce [N]   # ring
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int compare(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

static void check(int code, const char* call) {
    if (code != MPI_SUCCESS) { fprintf(stderr, "allreduce: %s failed (%d)\n", call, code); MPI_Abort(MPI_COMM_WORLD, 1); }
}

/* Rank r's shard of n elements over p ranks (sizes differ by at most one), as shardRange. */
static void shard(int n, int r, int p, int* start, int* count) {
    int base = n / p, extra = n % p;
    *start = r * base + (r < extra ? r : extra);
    *count = base + (r < extra ? 1 : 0);
}

static void exchange(float* out, int outCount, float* in, int inCount, int next, int prev, int tag) {
    MPI_Request requests[2];
    int done = 0;
    check(MPI_Irecv(in, inCount, MPI_FLOAT, prev, tag, MPI_COMM_WORLD, &requests[0]), "MPI_Irecv");
    check(MPI_Isend(out, outCount, MPI_FLOAT, next, tag, MPI_COMM_WORLD, &requests[1]), "MPI_Isend");
    while (!done) check(MPI_Testall(2, requests, &done, MPI_STATUSES_IGNORE), "MPI_Testall");
}

static void ring(float* a, float* scratch, int n, int rank, int size) {
    int next = (rank + 1) % size, prev = (rank + size - 1) % size, os, oc, is, ic;
    for (int s = 0; s < size - 1; s++) {   /* reduce-scatter */
        shard(n, (rank - s - 1 + size) % size, size, &os, &oc);
        shard(n, (rank - s - 2 + 2 * size) % size, size, &is, &ic);
        exchange(a + os, oc, scratch, ic, next, prev, 1);
        for (int i = 0; i < ic; i++) a[is + i] += scratch[i];
    }
    for (int s = 0; s < size - 1; s++) {   /* all-gather */
        shard(n, (rank - s + size) % size, size, &os, &oc);
        shard(n, (rank - s - 1 + size) % size, size, &is, &ic);
        exchange(a + os, oc, a + is, ic, next, prev, 2);
    }
}

/* Rank-ordered flags, one cache line each, in a window every rank of the node maps. */
static volatile long* flags;
static float* slots;          /* 2 parities × size × n floats */
static long shmCalls;

static void arrive(int rank, int size, long value) {
    __atomic_store_n(&flags[rank * 16], value, __ATOMIC_RELEASE);
    for (int r = 0; r < size; r++)
        while (__atomic_load_n(&flags[r * 16], __ATOMIC_ACQUIRE) < value) { }
}

static void shm(float* a, int n, int rank, int size) {
    long k = shmCalls++;
    float* base = slots + (size_t)(k & 1) * size * n;
    int s, c;
    for (int i = 0; i < n; i++) base[(size_t)rank * n + i] = a[i];
    arrive(rank, size, 2 * k + 1);
    shard(n, rank, size, &s, &c);
    for (int i = s; i < s + c; i++) {
        float sum = base[i];
        for (int r = 1; r < size; r++) sum += base[(size_t)r * n + i];
        base[(size_t)rank * n + i] = sum;
    }
    arrive(rank, size, 2 * k + 2);
    for (int r = 0; r < size; r++) {
        shard(n, r, size, &s, &c);
        for (int i = s; i < s + c; i++) a[i] = base[(size_t)r * n + i];
    }
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int n = argc > 1 ? atoi(argv[1]) : 871530;
    if (n <= 0) { if (rank == 0) fprintf(stderr, "allreduce: N must be a positive count of floats\n"); MPI_Abort(MPI_COMM_WORLD, 2); }
    float* a = malloc((size_t)n * sizeof(float));
    float* scratch = malloc(((size_t)n / size + 1) * sizeof(float));
    if (!a || !scratch) { fprintf(stderr, "allreduce: out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
    for (int i = 0; i < n; i++) a[i] = 1e-6f * (float)i;
    MPI_Win window;
    MPI_Aint bytes = rank == 0 ? (MPI_Aint)(size * 16 * sizeof(long) + 64 + 2 * (size_t)size * n * sizeof(float)) : 0;
    char* mine;
    check(MPI_Win_allocate_shared(bytes, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &mine, &window), "MPI_Win_allocate_shared");
    MPI_Aint windowBytes; int unit; char* start;
    check(MPI_Win_shared_query(window, 0, &windowBytes, &unit, &start), "MPI_Win_shared_query");
    flags = (volatile long*)start;
    slots = (float*)(start + size * 16 * sizeof(long) + 64);
    if (rank == 0) for (int r = 0; r < size * 16; r++) flags[r] = 0;
    check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    enum { REPS = 7 };
    double blocking[REPS], polled[REPS], ringed[REPS], shared[REPS];
    int iters = n < 10000 ? 2000 : 40;
    for (int rep = 0; rep < REPS; rep++) {
        check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
        double t0 = MPI_Wtime();
        for (int k = 0; k < iters; k++)
            check(MPI_Allreduce(MPI_IN_PLACE, a, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
        blocking[rep] = (MPI_Wtime() - t0) / iters * 1e3;
        check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
        t0 = MPI_Wtime();
        for (int k = 0; k < iters; k++) {
            MPI_Request request;
            int done = 0;
            check(MPI_Iallreduce(MPI_IN_PLACE, a, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &request), "MPI_Iallreduce");
            while (!done) check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
        }
        polled[rep] = (MPI_Wtime() - t0) / iters * 1e3;
        check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
        t0 = MPI_Wtime();
        for (int k = 0; k < iters; k++) ring(a, scratch, n, rank, size);
        ringed[rep] = (MPI_Wtime() - t0) / iters * 1e3;
        check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
        t0 = MPI_Wtime();
        for (int k = 0; k < iters; k++) shm(a, n, rank, size);
        shared[rep] = (MPI_Wtime() - t0) / iters * 1e3;
    }
    qsort(blocking, REPS, sizeof(double), compare);
    qsort(polled, REPS, sizeof(double), compare);
    qsort(ringed, REPS, sizeof(double), compare);
    qsort(shared, REPS, sizeof(double), compare);
    if (rank == 0)
        printf("N=%d, %d ranks: MPI_Allreduce %.4f ms (%.4f–%.4f), MPI_Iallreduce + MPI_Test %.4f ms (%.4f–%.4f), "
               "ring (Isend/Irecv reduce-scatter + all-gather) %.4f ms (%.4f–%.4f), shared memory %.4f ms (%.4f–%.4f)\n", n, size,
               blocking[REPS / 2], blocking[0], blocking[REPS - 1], polled[REPS / 2], polled[0], polled[REPS - 1],
               ringed[REPS / 2], ringed[0], ringed[REPS - 1], shared[REPS / 2], shared[0], shared[REPS - 1]);
    check(MPI_Win_free(&window), "MPI_Win_free");
    free(a);
    free(scratch);
    MPI_Finalize();
    return 0;
}
