import CPNG

/// PNG encoding for small images (report thumbnails), through libpng's simplified write API:
/// 8 bits per sample, deflate-compressed with libpng's own filter choice.
public enum PNG {
    /// PNG bytes of an 8-bit image, `pixels` (H, W, C) row-major with C = 1 (gray),
    /// 2 (gray + alpha), 3 (RGB) or 4 (RGBA); alpha is not premultiplied.
    public static func encode(pixels: some Collection<UInt8>, height: Int, width: Int, channels: Int = 1) -> [UInt8] {
        precondition(height > 0 && width > 0 && pixels.count == height * width * channels,
                     "PNG.encode: \(pixels.count) bytes are not \(height)×\(width)×\(channels)")
        var image = png_image()
        cpng_image_init(&image)
        image.width = png_uint_32(width)
        image.height = png_uint_32(height)
        switch channels {
        case 1: image.format = cpng_format_gray()
        case 2: image.format = cpng_format_gray_alpha()
        case 3: image.format = cpng_format_rgb()
        case 4: image.format = cpng_format_rgba()
        default: preconditionFailure("PNG.encode: \(channels) channels")
        }
        let samples = Array(pixels)  // (H, W, C)
        var png = [UInt8](repeating: 0, count: cpng_image_png_size_max(&image))
        var size = png.count
        let ok = png.withUnsafeMutableBytes { out in
            samples.withUnsafeBytes { png_image_write_to_memory(&image, out.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
        }
        // With the dimensions and format checked above, libpng fails only when out of memory.
        precondition(ok != 0, "PNG.encode: libpng: \(String(cString: cpng_image_message(&image)))")
        png.removeSubrange(size...)
        return png
    }
}
