/// Why a key file could not be read or written, in one line naming the file.
public struct PluginKeyFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ path: String, _ why: String) { description = "\(path): \(why)" }
}
