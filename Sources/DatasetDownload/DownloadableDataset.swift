import Data

/// A dataset that `distcnn download` knows: where it is published and what its four files
/// decompress to.
public struct DownloadableDataset: Sendable {
    public var name: String
    /// Base URLs (ending in `/`) that serve `NAME.gz` for each of the four files, tried in order.
    public var mirrors: [String]
    /// SHA-256 of each file's decompressed content, by base name (`train-images-idx3-ubyte`).
    /// The decompressed bytes are pinned, not the `.gz`, because mirrors recompress.
    public var sha256: [String: String]
    /// Bytes each file decompresses to, by base name: nothing larger is decompressed or hashed,
    /// and no larger download is accepted (a gzip bomb is refused after this many bytes).
    public var sizes: [String: Int] = DownloadableDataset.mnistSizes

    /// MNIST's sizes, which Fashion-MNIST shares: 16- and 8-byte IDX headers before 60,000 and
    /// 10,000 images of 28×28 bytes and as many labels.
    public static let mnistSizes = [
        MNISTFiles.trainImages: 16 + 60_000 * 784, MNISTFiles.trainLabels: 8 + 60_000,
        MNISTFiles.testImages: 16 + 10_000 * 784, MNISTFiles.testLabels: 8 + 10_000,
    ]

    public static let mnist = DownloadableDataset(
        name: "mnist",
        mirrors: ["https://storage.googleapis.com/cvdf-datasets/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"],
        sha256: [  // data/mnist/SHA256SUMS.raw
            MNISTFiles.trainImages: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            MNISTFiles.trainLabels: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            MNISTFiles.testImages: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            MNISTFiles.testLabels: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ])

    public static let fashionMNIST = DownloadableDataset(
        name: "fashion-mnist",
        mirrors: ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        sha256: [  // computed from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
            MNISTFiles.trainImages: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            MNISTFiles.trainLabels: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            MNISTFiles.testImages: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            MNISTFiles.testLabels: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ])

    public static let all = [mnist, fashionMNIST]

    public static func named(_ name: String) -> DownloadableDataset? { all.first { $0.name == name } }
}
