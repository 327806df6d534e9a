import XCTest
import Data

/// Subsets and the deterministic train/validation split.
final class DatasetTests: XCTestCase {
    /// Ten 2×3 images; image i is filled with the value i, and its label is i % 4.
    private func numbered(_ count: Int = 10) -> Dataset {
        Dataset(images: (0..<count).flatMap { [UInt8](repeating: UInt8($0), count: 6) },
                labels: (0..<count).map { UInt8($0 % 4) },
                height: 2, width: 3, classes: 4)
    }

    func testSubset() {
        let part = numbered().subset(3..<6)
        XCTAssertEqual(part.count, 3)
        XCTAssertEqual([part.height, part.width, part.channels, part.classes], [2, 3, 1, 4])
        XCTAssertEqual(part.labels, [3, 0, 1])
        XCTAssertEqual(Array(part.image(0)), [UInt8](repeating: 3, count: 6))
        XCTAssertEqual(Array(part.image(2)), [UInt8](repeating: 5, count: 6))
        XCTAssertEqual(numbered().subset(4..<4).count, 0)
    }

    func testSplitTakesTheLastExamples() throws {
        let (train, validation) = try splitValidation(numbered(), count: 3)
        XCTAssertEqual(train.count, 7)
        XCTAssertEqual(validation.count, 3)
        XCTAssertEqual(train.images, Array(numbered().images[0..<42]))
        XCTAssertEqual(validation.images, Array(numbered().images[42...]))
        XCTAssertEqual(validation.labels, [3, 0, 1])
        XCTAssertEqual(validation.classes, 4)
    }

    func testSplitOfZeroGivesEmptyValidation() throws {
        let (train, validation) = try splitValidation(numbered(), count: 0)
        XCTAssertEqual(train.count, 10)
        XCTAssertEqual(train.images, numbered().images)
        XCTAssertEqual(validation.count, 0)
        XCTAssertTrue(validation.images.isEmpty)
    }

    func testSplitMustLeaveTrainingData() {
        for count in [10, 11, -1] {
            let error = assertDataError(try splitValidation(numbered(), count: count)) {
                $0 == .badValidationSplit(requested: count, available: 10)
            }
            XCTAssertTrue(error?.description.contains("--validation-split") ?? false)
        }
        XCTAssertNoThrow(try splitValidation(numbered(), count: 9))
    }
}
