/// Labelled images held in memory as the files store them: unsigned bytes, one image after
/// another, each row-major (H, W, C).
public struct Dataset: Sendable {
    /// Number of examples.
    public let count: Int
    public let height: Int
    public let width: Int
    public let channels: Int
    /// Labels are `0 ..< classes`.
    public let classes: Int
    /// (N, H, W, C) row-major pixels, 0…255.
    public let images: [UInt8]
    /// (N) labels.
    public let labels: [UInt8]

    /// Wraps images and labels whose sizes agree; `classes` must exceed every label.
    ///
    /// Data read from files is checked with a `DataError` before it gets here; a mismatch
    /// in this initialiser is a programming error.
    public init(images: [UInt8], labels: [UInt8], height: Int, width: Int, channels: Int = 1, classes: Int) {
        precondition(height > 0 && width > 0 && channels > 0, "image dimensions must be positive")
        precondition((2...256).contains(classes), "a dataset has 2…256 classes, not \(classes)")
        precondition(images.count == labels.count * height * width * channels,
                     "\(images.count) pixels do not make \(labels.count) images of \(height)×\(width)×\(channels)")
        precondition(labels.allSatisfy { Int($0) < classes }, "a label is not below classes (\(classes))")
        self.count = labels.count
        self.height = height
        self.width = width
        self.channels = channels
        self.classes = classes
        self.images = images
        self.labels = labels
    }

    /// Bytes per image: height × width × channels.
    public var imageSize: Int { height * width * channels }

    /// The bytes of image `index`, (H, W, C).
    public func image(_ index: Int) -> ArraySlice<UInt8> {
        precondition(index >= 0 && index < count, "image index \(index) out of 0..<\(count)")
        return images[index * imageSize ..< (index + 1) * imageSize]
    }

    /// The examples in `range`, in order, as a dataset of their own (same shape and classes).
    public func subset(_ range: Range<Int>) -> Dataset {
        precondition(range.lowerBound >= 0 && range.upperBound <= count,
                     "subset \(range) out of 0..<\(count)")
        return Dataset(images: Array(images[range.lowerBound * imageSize ..< range.upperBound * imageSize]),
                       labels: Array(labels[range]),
                       height: height, width: width, channels: channels, classes: classes)
    }
}

/// Splits off the last `count` training examples as a validation set, like Keras's
/// `validation_split` (which takes the tail, before any shuffling): the same examples on
/// every rank and every run. `count` 0 gives an empty validation set.
public func splitValidation(_ train: Dataset, count: Int) throws -> (train: Dataset, validation: Dataset) {
    guard count >= 0, count < train.count else {
        throw DataError.badValidationSplit(requested: count, available: train.count)
    }
    let boundary = train.count - count
    return (train.subset(0 ..< boundary), train.subset(boundary ..< train.count))
}
