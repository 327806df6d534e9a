/// What is wrong with a model spec, one line each.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case shape(String)
    case field(layer: Int, type: String, message: String)
    case unknownLayer(layer: Int, type: String)
    case spec(String)

    public var description: String {
        switch self {
        case .shape(let m): return "impossible shape: \(m)"
        case .field(let i, let t, let m): return "layer \(i) (\(t)): \(m)"
        case .unknownLayer(let i, let t):
            return "layer \(i): unknown type '\(t)' (known: conv2d, dense, batchnorm, maxpool2d, flatten, dropout, relu, elu, lrn)"
        case .spec(let m): return m
        }
    }
}
