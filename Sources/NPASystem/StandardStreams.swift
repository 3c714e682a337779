import Glibc

/// The process's standard streams, for the command-line tool: the few kernel calls it makes
/// outside the data path live here, so that only this module calls the kernel. They do not go
/// through `syscall`'s funnel, which traps on EBADF: a closed standard stream is the user's
/// choice (`2>&-`), not our bug, and an error line that cannot be written is given up quietly.
public enum StandardStreams {
    /// Writes all of `bytes` to standard error (retrying interrupted and short writes).
    public static func writeToStandardError(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }

    /// One byte of standard input, waiting for it; nil at end of file or on an error.
    public static func readStandardInputByte() -> UInt8? {
        var byte: UInt8 = 0
        while true {
            let n = Glibc.read(0, &byte, 1)
            if n == 1 { return byte }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }

    /// True once standard input has reached end of file (checked without waiting).
    public static func standardInputClosed() -> Bool {
        var pfd = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&pfd, 1, 0) > 0 else { return false }
        return readStandardInputByte() == nil
    }
}

/// Child processes the command-line tool started (the chaos soak's victims).
public enum ChildProcesses {
    /// Kills the child `pid` at once (SIGKILL); a child already gone is no error.
    public static func kill(_ pid: Int32) {
        _ = Glibc.kill(pid, SIGKILL)
    }
}
