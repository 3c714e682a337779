/// The guest API's view of the host its vNIC is attached to: where it is (`hostSocket`, which a
/// move to another host changes), what the moves did, and whether the host is still there.
extension VirtualNIC {
    /// The control socket of the host the vNIC is attached to now: the one it attached to, or
    /// the one it last moved to.
    public var hostSocket: String { channel.link.socketPath }

    /// Duration of each completed move to another host, in milliseconds (from the DIC to the
    /// destination's answer), and what the last failed one said (nil after a success). Their
    /// steps are in `switchLog`.
    public var moveDurations: [Double] { switcher.record.moveDurations }
    public var lastMoveError: String? { switcher.record.lastMoveError }

    // MARK: The host's presence

    /// Why the host is gone, once the shell saw its control connection close; nil while it is
    /// there. Set by any data-path call or control operation that noticed (no syscall to read).
    public var hostGone: HostGone? { channel.link.gone }

    /// True once the host is gone (one load): what a workload loop checks to stop.
    public var isHostGone: Bool { channel.link.gone != nil }

    /// Looks now (one non-blocking poll of the control socket), for a caller that makes no
    /// data-path calls for a while. Returns why the host is gone, or nil.
    @discardableResult
    public func checkHost() -> HostGone? { channel.link.check() }

    /// Sleeps until the host goes away, `descriptor` (if given) becomes readable, or
    /// `timeoutMilliseconds` passes (negative: no limit). Returns why the host is gone, or nil
    /// (then the descriptor is readable, or the time is up). For a guest that holds its vNIC
    /// while it waits for something else, e.g. `--hold` waiting for standard input to close.
    public func waitForHostGone(timeoutMilliseconds: Int, orReadable descriptor: Int32? = nil) -> HostGone? {
        let link = channel.link
        if let gone = link.gone { return gone }
        let timeout = Int32(clamping: timeoutMilliseconds < 0 ? -1 : timeoutMilliseconds)
        if link.socket.waitForHangUp(timeoutMilliseconds: timeout, orReadable: descriptor) {
            link.markGone("the control connection closed")
        }
        return link.gone
    }
}
