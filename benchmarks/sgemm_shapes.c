/* The sgemm calls of distcnn's shifted convolution (Sources/Engine/Conv2D+Shifted.swift) for
 * the three big `ref` layers, timed in isolation on one thread, to choose the BLAS library by
 * measurement. GFLOP/s count only the convolution's useful products (2·out·in·9·H·W per image),
 * so the k−1 computed-and-dropped columns per row show up as lost efficiency.
 *
 *   OpenBLAS: cc -O2 benchmarks/sgemm_shapes.c -o /tmp/sgemm-openblas -lopenblas && /tmp/sgemm-openblas
 *   BLIS:     cc -O2 -DUSE_BLIS -I/usr/include/x86_64-linux-gnu/blis-openmp benchmarks/sgemm_shapes.c \
 *               -o /tmp/sgemm-blis -L/usr/lib/x86_64-linux-gnu/blis-openmp -lblis \
 *               -Wl,-rpath,/usr/lib/x86_64-linux-gnu/blis-openmp && BLIS_NUM_THREADS=1 /tmp/sgemm-blis
 */
#ifdef USE_BLIS
#include <blis.h>
#define SET_ONE_THREAD() bli_thread_set_num_threads(1)
#define LIBRARY "BLIS"
#else
#include <cblas.h>
#define SET_ONE_THREAD() openblas_set_num_threads(1)
#define LIBRARY "OpenBLAS"
#endif
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *filled(size_t n) {
    float *p = calloc(n, sizeof(float));
    if (!p) { perror("calloc"); exit(1); }
    for (size_t i = 0; i < n; i++) p[i] = rand() / (float)RAND_MAX - 0.5f;
    return p;
}

/* One 3×3 `same` layer: in → out channels on an H×W image; best of 5 runs of `reps` images. */
static void layer(int cin, int cout, int h, int w) {
    const int wp = w + 2, plane = (h + 2) * wp + 2, grid = h * wp, reps = 300;
    float *x = filled((size_t)cin * plane), *dz = filled((size_t)cout * plane);
    float *wt = filled((size_t)9 * cout * cin), *dw = filled((size_t)9 * cout * cin);
    float *y = filled((size_t)cout * grid), *dx = filled((size_t)cin * grid);
    const double flop = 2.0 * cout * cin * 9 * h * w * reps;
    double best[3] = {1e9, 1e9, 1e9};
    for (int round = 0; round < 5; round++) {
        double t = now();
        for (int r = 0; r < reps; r++)
            for (int k = 0; k < 9; k++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, grid, cin, 1, wt + k * cout * cin, cin,
                            x + (k / 3) * wp + k % 3, plane, k ? 1 : 0, y, grid);
        t = now() - t; if (t < best[0]) best[0] = t;
        t = now();
        for (int r = 0; r < reps; r++)
            for (int k = 0; k < 9; k++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cout, cin, grid, 1, dz + wp + 1, plane,
                            x + (k / 3) * wp + k % 3, plane, 1, dw + k * cout * cin, cin);
        t = now() - t; if (t < best[1]) best[1] = t;
        t = now();
        for (int r = 0; r < reps; r++)
            for (int k = 0; k < 9; k++)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cin, grid, cout, 1, wt + k * cout * cin, cin,
                            dz + (2 - k / 3) * wp + 2 - k % 3, plane, k ? 1 : 0, dx, grid);
        t = now() - t; if (t < best[2]) best[2] = t;
    }
    printf("%-8s %2d->%2d %2dx%2d  forward %6.1f  dW %6.1f  dX %6.1f GFLOP/s\n", LIBRARY, cin, cout, h, w,
           flop / best[0] / 1e9, flop / best[1] / 1e9, flop / best[2] / 1e9);
    free(x); free(dz); free(wt); free(dw); free(y); free(dx);
}

int main(void) {
    SET_ONE_THREAD();
    layer(32, 32, 28, 28);
    layer(32, 64, 14, 14);
    layer(64, 64, 14, 14);
    return 0;
}
