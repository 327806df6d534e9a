import Foundation
import Collective
import Data
import Engine

/// A test example the model got wrong: its index in the data set, true and predicted class.
public struct Misclassification: Codable, Sendable, Equatable {
    public var index: Int, label: Int, predicted: Int
    /// Softmax probability of `predicted`.
    public var confidence: Double
    public init(index: Int, label: Int, predicted: Int, confidence: Double) {
        self.index = index; self.label = label; self.predicted = predicted; self.confidence = confidence
    }
}

/// Loss, accuracy and confusion matrix of a model on a dataset.
public struct EvaluationResult: Sendable {
    public var loss: Double          // mean cross-entropy + the L2 term, as Keras reports it
    public var accuracy: Double
    public var count: Int
    /// confusion[true][predicted]
    public var confusion: [[Int]]
    /// The most confident mistakes, when asked for (`mistakes:` > 0), the same on every rank.
    public var mistakes: [Misclassification] = []
}

/// Evaluates in inference mode. The set is cut into micro-batches of the model's size and each
/// rank takes whole ones (`microBatchShare`), running them in batches of up to `batchSize`; each
/// micro-batch's loss is summed apart and the sums are added in micro-batch order over ranks,
/// so the figures are the same bits on any number of ranks and threads. Counts (correct, the
/// confusion matrix) are exact integers. With `mistakes:` > 0 the same pass keeps the most
/// confident wrong predictions (for report.html), gathered after it.
public func evaluate(model: Model, dataset: Dataset, normalizer: Normalizer, batchSize: Int,
                     comm: Communicator, mistakes limit: Int = 0) throws -> EvaluationResult {
    let classes = model.classes, micro = model.microBatch
    let mine = microBatchShare(of: dataset.count, microBatch: micro, part: comm.rank, parts: comm.size)
    // Whole micro-batches per forward, so each one's position in its GEMMs is its own.
    let batchSize = max(micro, min(batchSize, max(mine.count, 1)) / micro * micro)
    model.reserveInference(batch: batchSize)
    var counts = [Double](repeating: 0, count: 2 + classes * classes)   // [correct | count | confusion]
    var lossRows: [Double] = []
    lossRows.reserveCapacity((mine.count + micro - 1) / micro)
    var labels = [Int32](repeating: 0, count: batchSize)
    let context = PassContext(training: false)
    var mistakes: [Misclassification] = []
    var start = mine.lowerBound
    while start < mine.upperBound {
        let end = min(start + batchSize, mine.upperBound), n = end - start
        normalizer.fill(model.input.pointer, from: dataset, indices: start..<end)
        for j in 0..<n { labels[j] = Int32(dataset.labels[start + j]) }
        let logits = try model.forward(batch: n, context: context)
        labels.withUnsafeBufferPointer { labels in
            for k in stride(from: 0, to: n, by: micro) {
                let m = min(micro, n - k)
                let (loss, correct) = SoftmaxCrossEntropy.forwardBackward(
                    logits: logits + k * classes, labels: labels.baseAddress! + k, batch: m, classes: classes,
                    scale: 1, dlogits: nil)
                lossRows.append(loss)
                counts[0] += Double(correct)
            }
        }
        counts[1] += Double(n)
        for j in 0..<n {
            let row = logits + j * classes
            var arg = 0
            for c in 1..<classes where row[c] > row[arg] { arg = c }
            counts[2 + Int(labels[j]) * classes + arg] += 1
            if limit > 0 && arg != Int(labels[j]) {
                var sum = 0.0
                for c in 0..<classes { sum += exp(Double(row[c] - row[arg])) }
                mistakes.append(.init(index: start + j, label: Int(labels[j]), predicted: arg, confidence: 1 / sum))
            }
        }
        start = end
    }
    comm.phase = "evaluation all-reduce"
    try comm.allReduceSum(&counts)   // integers below 2^53: exact in any order
    var loss = [0.0]
    try lossRows.withUnsafeBufferPointer { rows in
        try loss.withUnsafeMutableBufferPointer {
            try CommunicatorReducer(comm).sumInOrder(rows, width: 1, into: $0, phase: "evaluation loss sum")
        }
    }
    let count = max(counts[1], 1)
    let confusion = (0..<classes).map { t in (0..<classes).map { p in Int(counts[2 + t * classes + p]) } }
    var result = EvaluationResult(loss: reportedLoss(loss[0] / count, of: model), accuracy: counts[0] / count,
                                  count: Int(counts[1]), confusion: confusion)
    if limit > 0 { result.mistakes = try mostConfident(mistakes, limit: limit, comm: comm) }
    return result
}

/// The `limit` most confident of every rank's mistakes (ties by dataset index), gathered so
/// that each rank returns the same list.
func mostConfident(_ mine: [Misclassification], limit: Int, comm: Communicator) throws -> [Misclassification] {
    func top(_ list: [Misclassification]) -> [Misclassification] {
        Array(list.sorted { ($0.confidence, -$0.index) > ($1.confidence, -$1.index) }.prefix(limit))
    }
    let local = top(mine)
    guard comm.size > 1 else { return local }
    comm.phase = "report mistakes all-gather"
    let all = try comm.allGather(Array(try JSONEncoder().encode(local)))
    return top(try all.flatMap { try JSONDecoder().decode([Misclassification].self, from: Data($0)) })
}

/// The loss as Keras reports it, for training and evaluation alike: the mean cross-entropy plus
/// the L2 penalty of the weights now (its gradient is added in the step, `Model.addL2Gradients`).
func reportedLoss(_ meanCrossEntropy: Double, of model: Model) -> Double {
    meanCrossEntropy + model.l2Loss()
}
