import XCTest
import Data

/// Finding the four files in a folder, and pairing images with labels.
final class MNISTFilesTests: XCTestCase {
    private var folder: TemporaryDirectory!

    override func setUpWithError() throws { folder = try TemporaryDirectory() }
    override func tearDown() { folder.remove() }

    /// Writes a complete dataset folder: train (raw) and test (gzipped).
    private func writeDataset(trainCount: Int = 30, testCount: Int = 10) throws {
        let train = syntheticIDX(count: trainCount, seed: 1)
        let test = syntheticIDX(count: testCount, seed: 2)
        try folder.write(MNISTFiles.trainImages, train.images)
        try folder.write(MNISTFiles.trainLabels, train.labels)
        try folder.write(MNISTFiles.testImages + ".gz", gzip(test.images))
        try folder.write(MNISTFiles.testLabels + ".gz", gzip(test.labels))
    }

    func testLoadsRawAndGzippedFiles() throws {
        try writeDataset()
        let (train, test) = try MNISTFiles.load(directory: folder.path)
        XCTAssertEqual(train.count, 30)
        XCTAssertEqual(test.count, 10)
        XCTAssertEqual(train.classes, test.classes)
        XCTAssertEqual(train.labels, Array(syntheticIDX(count: 30, seed: 1).labels[8...]))
        XCTAssertEqual(test.images, Array(syntheticIDX(count: 10, seed: 2).images[16...]))
    }

    /// With both present, the raw file is read (so a stale .gz beside it is ignored).
    func testPrefersRawOverGzip() throws {
        try writeDataset()
        try folder.write(MNISTFiles.trainLabels + ".gz", [0xde, 0xad])
        XCTAssertEqual(MNISTFiles.locate(base: MNISTFiles.trainLabels, in: folder.path),
                       folder.path + "/" + MNISTFiles.trainLabels)
        XCTAssertNoThrow(try MNISTFiles.load(directory: folder.path))
    }

    func testMissingFilesAreListed() throws {
        let empty = assertDataError(try MNISTFiles.load(directory: folder.path)) {
            $0 == .missingFiles(directory: self.folder.path, missing: MNISTFiles.baseNames)
        }
        XCTAssertTrue(empty?.description.contains("no dataset files (expected train-images-idx3-ubyte,") ?? false)

        try folder.write(MNISTFiles.trainImages + ".gz", gzip(syntheticIDX(count: 3).images))
        let error = assertDataError(try MNISTFiles.load(directory: folder.path)) {
            $0 == .missingFiles(directory: self.folder.path,
                                missing: [MNISTFiles.trainLabels, MNISTFiles.testImages, MNISTFiles.testLabels])
        }
        XCTAssertTrue(error?.description.contains("--data") ?? false)
        XCTAssertTrue(error?.description.contains("t10k-labels-idx1-ubyte") ?? false)
        let nowhere = folder.path + "/no-such-folder"
        assertDataError(try MNISTFiles.load(directory: nowhere)) { $0 == .notFound(path: nowhere) }
    }

    func testLabelCountMustMatchImageCount() throws {
        let images = try folder.write("images", syntheticIDX(count: 20).images)
        let labels = try folder.write("labels", syntheticIDX(count: 19).labels)
        let error = assertDataError(try MNISTFiles.loadPair(images: images, labels: labels)) {
            $0 == .countMismatch(images: images, imageCount: 20, labels: labels, labelCount: 19)
        }
        XCTAssertTrue(error?.description.contains("19 labels") ?? false)
    }

    func testLabelOutOfRange() throws {
        let images = try folder.write("images", syntheticIDX(count: 20).images)
        var payload = [UInt8](repeating: 3, count: 20)
        payload[17] = 200
        let labels = try folder.write("labels", idxFile(dimensions: [20], payload: payload))
        assertDataError(try MNISTFiles.loadPair(images: images, labels: labels, classes: 10)) {
            $0 == .labelOutOfRange(path: labels, index: 17, label: 200, classes: 10)
        }
        // Without a class count it is derived: 201 classes.
        XCTAssertEqual(try MNISTFiles.loadPair(images: images, labels: labels).classes, 201)
    }

    /// Test labels must be among the training set's classes.
    func testTestLabelOutsideTrainingClasses() throws {
        try writeDataset()
        let count = 10
        var payload = [UInt8](repeating: 1, count: count)
        payload[4] = 10  // training labels are 0…9
        let path = try folder.write(MNISTFiles.testLabels + ".gz", gzip(idxFile(dimensions: [count], payload: payload)))
        assertDataError(try MNISTFiles.load(directory: folder.path)) {
            $0 == .labelOutOfRange(path: path, index: 4, label: 10, classes: 10)
        }
    }

    /// Classes are at least 2, even when every label is 0.
    func testDerivedClassesAtLeastTwo() throws {
        let images = try folder.write("images", syntheticIDX(count: 4).images)
        let labels = try folder.write("labels", idxFile(dimensions: [4], payload: [0, 0, 0, 0]))
        XCTAssertEqual(try MNISTFiles.loadPair(images: images, labels: labels).classes, 2)
    }

    func testTestImagesMustMatchTrainingShape() throws {
        try writeDataset()
        let path = try folder.write(MNISTFiles.testImages + ".gz", gzip(syntheticIDX(count: 10, height: 32, width: 32).images))
        assertDataError(try MNISTFiles.load(directory: folder.path)) {
            $0 == .shapeMismatch(path: path, shape: [32, 32, 1], expected: [28, 28, 1])
        }
    }
}
