/// Why the host could not set up migration at start: a key file it may not use, a listen
/// address it cannot take, or a listener without a key. One line, printed by `npa host`.
public struct MigrationSetupError: Error, CustomStringConvertible, Sendable {
    public let description: String
}
