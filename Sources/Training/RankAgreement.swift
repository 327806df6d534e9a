import Collective

extension Communicator {
    /// Gathers every rank's `bytes` under `phase` and returns them as text with the first rank
    /// whose bytes differ from rank 0's, or nil when all agree (or this is the only rank).
    func firstRankDiffering(from bytes: [UInt8], phase: String) throws -> (rank: Int, all: [String])? {
        guard size > 1 else { return nil }
        self.phase = phase
        let all = try allGather(bytes)
        guard let r = all.firstIndex(where: { $0 != all[0] }) else { return nil }
        return (r, all.map { String(decoding: $0, as: UTF8.self) })
    }
}
