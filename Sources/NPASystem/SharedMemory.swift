import CNPAShim
import Glibc
import SystemPackage

/// A memfd mapped shared into this process: guest RAM, or a device register page.
/// Owns both the descriptor and the mapping; both are released when the value is freed.
/// It may be read and written from any thread; synchronisation is the user's business
/// (rings use `SharedWord`'s acquire/release accessors).
public final class SharedMemory: @unchecked Sendable {
    public let fd: FileDescriptor
    public let base: UnsafeMutableRawPointer
    public let size: Int

    /// Creates a new zero-filled memfd of `size` bytes and maps it.
    public init(name: String, size: Int) throws {
        precondition(size > 0)
        let raw = try syscall("memfd_create") { cnpa_memfd_create(name, CNPA_MFD_CLOEXEC) }
        let fd = FileDescriptor(rawValue: raw)
        do {
            _ = try syscall("ftruncate") { ftruncate(raw, off_t(size)) }
            self.base = try SharedMemory.map(fd: raw, size: size)
        } catch {
            try? fd.close()
            throw error
        }
        self.fd = fd
        self.size = size
    }

    /// Maps a memfd received from a peer. Takes ownership of `fd`. The size is read from the fd
    /// itself (never trusted from a message) and must be at least `minimumSize`.
    public init(adopting fd: FileDescriptor, minimumSize: Int = 1, maximumSize: Int = 1 << 36) throws {
        do {
            var st = stat()
            _ = try syscall("fstat") { fstat(fd.rawValue, &st) }
            let size = Int(st.st_size)
            guard size >= minimumSize, size <= maximumSize else {
                throw SystemCallError("memory region of \(size) bytes", .invalidArgument)
            }
            self.base = try SharedMemory.map(fd: fd.rawValue, size: size)
            self.size = size
        } catch {
            try? fd.close()
            throw error
        }
        self.fd = fd
    }

    /// Inaccessible address space on each side of every mapping: a stray access just past a
    /// guest's region (a ring index one lap too far, a length that overruns) faults instead of
    /// reading or corrupting whatever the kernel mapped next to it. Address space only, no memory.
    public static let guardBytes = 2 << 20

    private static func map(fd: Int32, size: Int) throws -> UnsafeMutableRawPointer {
        let reserved = mmap(nil, size + 2 * guardBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let reserved, reserved != MAP_FAILED else {
            throw SystemCallError("mmap", Errno(rawValue: Glibc.errno))
        }
        // SAFETY: the fixed mapping replaces the middle of our own reservation, nothing else.
        let p = mmap(reserved + guardBytes, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
        guard let p, p != MAP_FAILED else {
            let e = Glibc.errno
            munmap(reserved, size + 2 * guardBytes)
            throw SystemCallError("mmap", Errno(rawValue: e))
        }
        return p
    }

    deinit {
        munmap(base - Self.guardBytes, size + 2 * Self.guardBytes)
        try? fd.close()
    }
}
