#include <zlib.h>

// zlib's init functions are macros (they pass ZLIB_VERSION and sizeof(z_stream)),
// which Swift cannot import; these wrappers make them callable.

/// inflateInit2 for a gzip-wrapped stream only (windowBits 15 + 16): checks the gzip
/// header, the CRC-32 and the length in the trailer.
static inline int czlib_inflate_init_gzip(z_streamp stream) {
    return inflateInit2(stream, 15 + 16);
}

/// deflateInit2 writing a gzip-wrapped stream (used by tests to make .gz fixtures).
static inline int czlib_deflate_init_gzip(z_streamp stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}
