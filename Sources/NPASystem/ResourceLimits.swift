import Glibc

/// The process's limit on open descriptors (RLIMIT_NOFILE). A host holds several descriptors
/// per guest, so it starts by raising its soft limit to the hard limit (the common soft default,
/// 1024, would end it after a few hundred guests).
public enum ResourceLimits {
    /// The current (soft, hard) limit on open descriptors.
    public static func openFiles() throws -> (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        _ = try syscall("getrlimit(RLIMIT_NOFILE)") { getrlimit(resource, &limit) }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Raises the soft limit to the hard limit; returns the new soft limit.
    @discardableResult
    public static func raiseOpenFilesToHardLimit() throws -> UInt64 {
        let (soft, hard) = try openFiles()
        guard soft < hard else { return soft }
        try setOpenFiles(soft: hard)
        return hard
    }

    /// Sets the soft limit (at most the hard limit). Lowering it is how tests run a host out of
    /// descriptors without opening a thousand connections.
    public static func setOpenFiles(soft: UInt64) throws {
        var limit = rlimit()
        _ = try syscall("getrlimit(RLIMIT_NOFILE)") { getrlimit(resource, &limit) }
        limit.rlim_cur = rlim_t(min(soft, UInt64(limit.rlim_max)))
        _ = try syscall("setrlimit(RLIMIT_NOFILE)") { setrlimit(resource, &limit) }
    }

    private static var resource: __rlimit_resource_t { __rlimit_resource_t(RLIMIT_NOFILE.rawValue) }
}
