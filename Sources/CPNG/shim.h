#include <png.h>
#include <string.h>

// libpng's simplified read and write API (png_image) is configured through macros, which Swift
// cannot import; these wrappers make the few that distcnn needs callable.

/// A png_image ready for png_image_begin_read_*: zeroed, with the version the header expects.
static inline void cpng_image_init(png_imagep image) {
    memset(image, 0, sizeof *image);
    image->version = PNG_IMAGE_VERSION;
}

/// Read 16-bit images without gamma information as sRGB, as other image tools do (libpng's
/// default is linear). Set after png_image_begin_read_*.
static inline png_uint_32 cpng_flag_16bit_srgb(void) { return PNG_IMAGE_FLAG_16BIT_sRGB; }

/// 8-bit sRGB gray + alpha, not premultiplied: 2 bytes per pixel.
static inline png_uint_32 cpng_format_gray_alpha(void) { return PNG_FORMAT_GA; }

/// 8-bit sRGB gray: 1 byte per pixel.
static inline png_uint_32 cpng_format_gray(void) { return PNG_FORMAT_GRAY; }

/// 8-bit sRGB RGB: 3 bytes per pixel.
static inline png_uint_32 cpng_format_rgb(void) { return PNG_FORMAT_RGB; }

/// 8-bit sRGB RGB + alpha, not premultiplied: 4 bytes per pixel.
static inline png_uint_32 cpng_format_rgba(void) { return PNG_FORMAT_RGBA; }

/// An upper bound on the PNG that png_image_write_to_memory makes of an image with this
/// width, height and format (the buffer to pass, so the image is compressed only once).
static inline size_t cpng_image_png_size_max(const png_image *image) {
    return PNG_IMAGE_PNG_SIZE_MAX(*image);
}

/// libpng's one-line reason after a failed call.
static inline const char *cpng_image_message(const png_image *image) { return image->message; }

