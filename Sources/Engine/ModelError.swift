/// What is wrong with a model spec, one line each.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case shape(String)
    case field(layer: Int, type: LayerSpec.Kind, message: String)
    case spec(String)

    public var description: String {
        switch self {
        case .shape(let m): return "impossible shape: \(m)"
        case .field(let i, let t, let m): return "layer \(i) (\(t)): \(m)"
        case .spec(let m): return m
        }
    }
}
