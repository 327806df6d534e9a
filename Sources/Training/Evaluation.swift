import Collective
import Data
import Engine

/// Loss, accuracy and confusion matrix of a model on a dataset.
public struct EvaluationResult: Sendable {
    public var loss: Double          // mean cross-entropy + the L2 term, as Keras reports it
    public var accuracy: Double
    public var count: Int
    /// confusion[true][predicted]
    public var confusion: [[Int]]
}

/// Evaluates in inference mode, each rank on its contiguous shard of the set; the sums
/// `[loss | correct | count | confusion]` travel in one all-reduce.
func evaluate(model: Model, dataset: Dataset, normalizer: Normalizer, batchSize: Int,
              comm: Communicator) throws -> EvaluationResult {
    let classes = model.classes
    let mine = shard(dataset.count, rank: comm.rank, size: comm.size)
    let batchSize = min(batchSize, max(mine.count, 1))
    model.reserveInference(batch: batchSize)
    var sums = [Double](repeating: 0, count: 3 + classes * classes)
    var labels = [Int32](repeating: 0, count: batchSize)
    let context = PassContext(training: false)
    var start = mine.lowerBound
    while start < mine.upperBound {
        let end = min(start + batchSize, mine.upperBound), n = end - start
        normalizer.fill(model.input.pointer, from: dataset, indices: start..<end)
        for j in 0..<n { labels[j] = Int32(dataset.labels[start + j]) }
        let logits = try model.forward(batch: n, context: context)
        let (loss, correct) = labels.withUnsafeBufferPointer {
            SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: $0.baseAddress!, batch: n, classes: classes,
                                                scale: 1, dlogits: nil)
        }
        sums[0] += loss; sums[1] += Double(correct); sums[2] += Double(n)
        for j in 0..<n {
            let row = logits + j * classes
            var arg = 0
            for c in 1..<classes where row[c] > row[arg] { arg = c }
            sums[3 + Int(labels[j]) * classes + arg] += 1
        }
        start = end
    }
    comm.phase = "evaluation all-reduce"
    try comm.allReduceSum(&sums)
    let count = max(sums[2], 1)
    let confusion = (0..<classes).map { t in (0..<classes).map { p in Int(sums[3 + t * classes + p]) } }
    return EvaluationResult(loss: sums[0] / count + model.l2Loss(), accuracy: sums[1] / count,
                            count: Int(sums[2]), confusion: confusion)
}
