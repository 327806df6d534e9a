#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Finds and loads an MNIST-layout folder: the four IDX files under their usual names, each
/// raw or gzipped. MNIST (`data/mnist`) and Fashion-MNIST (Debian's
/// `/usr/share/datasets/fashion-mnist`) both come this way.
public enum MNISTFiles {
    public static let trainImages = "train-images-idx3-ubyte"
    public static let trainLabels = "train-labels-idx1-ubyte"
    public static let testImages = "t10k-images-idx3-ubyte"
    public static let testLabels = "t10k-labels-idx1-ubyte"
    /// The four base names, in the order above.
    public static let baseNames = [trainImages, trainLabels, testImages, testLabels]

    /// Loads the training and test sets from `directory`.
    ///
    /// The number of classes is `classes` when given, else the largest training label + 1
    /// (at least 2); every label, training and test, must be below it. The test images must
    /// have the training images' shape.
    public static func load(directory: String, classes: Int? = nil) throws -> (train: Dataset, test: Dataset) {
        guard isDirectory(directory) else { throw DataError.notFound(path: directory) }
        let found = baseNames.map { locate(base: $0, in: directory) }
        let missing = zip(baseNames, found).filter { $0.1 == nil }.map(\.0)
        guard missing.isEmpty else { throw DataError.missingFiles(directory: directory, missing: missing) }
        let paths = found.map { $0! }

        // The four headers agree before any data is allocated: counts within each pair,
        // image shapes across the two.
        let kinds: [IDXReader.Kind] = [.images, .labels, .images, .labels]
        let dims = try zip(paths, kinds).map { try IDXReader.dimensions(path: $0, kind: $1) }
        try checkCounts(dims[0], paths[0], dims[1], paths[1])
        guard shape(dims[2]) == shape(dims[0]) else {
            throw DataError.shapeMismatch(path: paths[2], shape: shape(dims[2]), expected: shape(dims[0]))
        }
        try checkCounts(dims[2], paths[2], dims[3], paths[3])

        let train = try loadPair(images: paths[0], labels: paths[1], classes: classes)
        let testImages = try IDXReader.readImages(path: paths[2])
        let trainShape = [train.height, train.width, train.channels]
        let testShape = [testImages.height, testImages.width, testImages.channels]
        guard testShape == trainShape else {
            throw DataError.shapeMismatch(path: paths[2], shape: testShape, expected: trainShape)
        }
        let test = try pair(testImages, imagesPath: paths[2], labelsPath: paths[3], classes: train.classes)
        return (train, test)
    }

    /// Loads one image file and its label file as a dataset (classes as in `load`).
    public static func loadPair(images imagesPath: String, labels labelsPath: String,
                                classes: Int? = nil) throws -> Dataset {
        try checkCounts(try IDXReader.dimensions(path: imagesPath, kind: .images), imagesPath,
                        try IDXReader.dimensions(path: labelsPath, kind: .labels), labelsPath)
        return try pair(IDXReader.readImages(path: imagesPath), imagesPath: imagesPath,
                 labelsPath: labelsPath, classes: classes)
    }

    /// Refuses an image file and a label file whose headers declare different counts.
    private static func checkCounts(_ images: [Int], _ imagesPath: String, _ labels: [Int], _ labelsPath: String) throws {
        guard images[0] == labels[0] else {
            throw DataError.countMismatch(images: imagesPath, imageCount: images[0], labels: labelsPath, labelCount: labels[0])
        }
    }

    /// (height, width, channels) of an image file's dimensions.
    private static func shape(_ d: [Int]) -> [Int] { [d[1], d[2], d.count == 4 ? d[3] : 1] }

    /// Reads the labels for `images` and checks that the two agree.
    private static func pair(_ images: IDXImages, imagesPath: String, labelsPath: String,
                             classes: Int?) throws -> Dataset {
        if let classes { precondition((2...256).contains(classes), "classes must be 2…256, not \(classes)") }
        let labels = try IDXReader.readLabels(path: labelsPath)
        guard labels.count == images.count else {
            throw DataError.countMismatch(images: imagesPath, imageCount: images.count,
                                          labels: labelsPath, labelCount: labels.count)
        }
        let classCount = classes ?? max(2, Int(labels.max() ?? 0) + 1)
        if let index = labels.firstIndex(where: { Int($0) >= classCount }) {
            throw DataError.labelOutOfRange(path: labelsPath, index: index, label: Int(labels[index]), classes: classCount)
        }
        return Dataset(images: images.pixels, labels: labels, height: images.height, width: images.width,
                       channels: images.channels, classes: classCount)
    }

    /// The path of `base` in `directory`: the raw file if present, else `base.gz`.
    /// (Raw is preferred because it reads faster; either is validated the same way.)
    /// The file that would be read for `base` in `directory`: raw if present, else `.gz`.
    public static func locate(base: String, in directory: String) -> String? {
        let folder = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        for name in [base, base + ".gz"] {
            let path = folder + "/" + name
            if isRegularFile(path) { return path }
        }
        return nil
    }

    private static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    private static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }
}
