/// Where a host listens by default, and the one rule that places its admin socket beside its
/// control socket (the host, `npa status`, `npa vnic` and the tests all derive it here).
public enum HostSocketPath {
    /// The guests' control socket unless `--socket` says otherwise.
    public static let defaultControl = "/tmp/npa.sock"

    /// The admin socket of a host whose control socket is `controlPath`: the same path with
    /// `.admin` appended (`/tmp/npa.sock` → `/tmp/npa.sock.admin`), so one `--socket` names both.
    public static func admin(forControl controlPath: String) -> String { controlPath + ".admin" }
}
