import ArgumentParser
import Training

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "(not yet available)")
    func run() throws { throw ValidationError("not yet available") }
}
