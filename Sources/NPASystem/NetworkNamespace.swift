import CNPAShim

/// Runs code with the calling thread inside another network namespace, e.g. to open a TAP
/// device there: the descriptors and sockets it opens stay bound to that namespace after the
/// thread returns to its own. Touches only the calling thread's namespace, for the duration.
public enum NetworkNamespace {
    /// The path `ip netns add NAME` creates for a named namespace.
    public static func path(ofNamed name: String) -> String { "/var/run/netns/" + name }

    /// Enters the namespace at `path`, runs `body`, and returns to the thread's own namespace
    /// (also when `body` throws). Returning cannot fail short of a kernel bug: it traps then,
    /// since the thread would carry on in the wrong namespace.
    public static func run<T>(in path: String, _ body: () throws -> T) throws -> T {
        let previous = try shimCall("setns(\(path))") { cnpa_netns_enter(path) }
        defer { precondition(cnpa_netns_return(previous) == 0, "could not return to this thread's network namespace") }
        return try body()
    }
}
