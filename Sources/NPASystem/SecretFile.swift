import Glibc
import SystemPackage

/// A file holding a secret (the migration key), read together with the facts a caller needs to
/// judge it — its permission bits and type come from `fstat` on the descriptor that was read, so
/// the file checked is the file read. Touches only that file; the rules (which modes to refuse)
/// are the caller's.
public struct SecretFile: Sendable {
    /// At most `maximumBytes + 1` bytes of the file: one more than allowed says it is too long.
    public let bytes: [UInt8]
    /// The permission bits (`st_mode & 0o7777`).
    public let permissions: mode_t
    public let isRegularFile: Bool

    /// Opens and reads `path` (following symbolic links, as ssh does for its keys). Throws
    /// `SystemCallError` when it cannot be opened or read.
    public static func read(path: String, maximumBytes: Int) throws -> SecretFile {
        let fd = try syscall("open(\(path))") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var st = stat()
        _ = try syscall("fstat(\(path))") { fstat(fd, &st) }
        let isRegular = st.st_mode & S_IFMT == S_IFREG
        var bytes: [UInt8] = []
        if isRegular {
            var buffer = [UInt8](repeating: 0, count: maximumBytes + 1)
            var filled = 0
            while filled < buffer.count {
                let n = try syscall("read(\(path))") {
                    buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, $0.count - filled) }
                }
                if n == 0 { break }
                filled += n
            }
            bytes = Array(buffer[0..<filled])
        }
        return SecretFile(bytes: bytes, permissions: st.st_mode & 0o7777, isRegularFile: isRegular)
    }
}
