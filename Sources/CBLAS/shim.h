#include <cblas.h>
// OpenBLAS extensions (declared in openblas_config.h / cblas.h on Debian).
