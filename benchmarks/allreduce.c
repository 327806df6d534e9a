/* The gradient all-reduce of distcnn (Sources/Collective/MPICommunicator.swift: an in-place
 * MPI_Iallreduce polled with MPI_Test) timed in isolation against a blocking MPI_Allreduce, for
 * N floats (default 871,530: `ref`'s parameters). Median (min–max) of 7 repetitions.
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

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int n = argc > 1 ? atoi(argv[1]) : 871530;
    if (n <= 0) { if (rank == 0) fprintf(stderr, "allreduce: N must be a positive count of floats\n"); MPI_Abort(MPI_COMM_WORLD, 2); }
    float* a = malloc((size_t)n * sizeof(float));
    if (!a) { fprintf(stderr, "allreduce: out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
    for (int i = 0; i < n; i++) a[i] = 1e-6f * (float)i;
    enum { REPS = 7 };
    double blocking[REPS], polled[REPS];
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
    }
    qsort(blocking, REPS, sizeof(double), compare);
    qsort(polled, REPS, sizeof(double), compare);
    if (rank == 0)
        printf("N=%d: MPI_Allreduce %.4f ms (%.4f–%.4f), MPI_Iallreduce + MPI_Test %.4f ms (%.4f–%.4f)\n", n,
               blocking[REPS / 2], blocking[0], blocking[REPS - 1], polled[REPS / 2], polled[0], polled[REPS - 1]);
    free(a);
    MPI_Finalize();
    return 0;
}
