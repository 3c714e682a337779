/// Why a plugin bundle was refused, naming the bundle, in one line (what `npa plugin verify`,
/// the host's store listing and `npa status` print). Each reason is its own case so tests and
/// callers can tell them apart.
public struct PluginBundleRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable {
        /// The file could not be read at all (a directory, a dangling link, an I/O error): the
        /// system's reason.
        case unreadable(String)
        case malformed(PluginBundle.FormatError)
        case unknownSchema(Int)
        case invalidManifest(String)
        case unsigned
        case untrustedSigner(PluginKeyID)
        case badSignature(PluginKeyID)
        /// The binary's digest is not the one the manifest states.
        case tamperedBinary(manifest: String, actual: String)
        case licence(PluginLicence.Refusal)
        case abiMismatch(bundle: UInt32, expected: UInt32)
        case unknownModel(String)
        /// The manifest does not name the model it was offered for (the shell's check).
        case doesNotDrive(String)
        /// The binary policy (ELF checks) refused the binary; its reason.
        case binary(String)
    }

    /// The bundle's name as the caller knows it (a file name, a store entry).
    public let bundle: String
    public let reason: Reason

    public init(bundle: String, reason: Reason) {
        self.bundle = bundle
        self.reason = reason
    }

    public var description: String { "plugin bundle \(bundle) refused: \(reasonDescription)" }

    public var reasonDescription: String {
        switch reason {
        case .unreadable(let why): "cannot be read: \(why)"
        case .malformed(let e): "malformed: \(e)"
        case .unknownSchema(let v): PluginManifest.Refusal.unknownSchema(v).description
        case .invalidManifest(let why): "invalid manifest: \(why)"
        case .unsigned: "unsigned (no signature block)"
        case .untrustedSigner(let id): "signed by key \(id), which is not trusted"
        case .badSignature(let id): "signature by key \(id) does not verify (manifest or digest altered)"
        case .tamperedBinary(let stated, let actual): "binary SHA-256 \(actual) is not the manifest's \(stated) (binary altered)"
        case .licence(let refusal): refusal.description
        case .abiMismatch(let bundle, let expected): "built for plugin ABI \(bundle), this build runs ABI \(expected)"
        case .unknownModel(let m): "names NIC model '\(m)', which this build does not have"
        case .doesNotDrive(let m): "does not name NIC model '\(m)', the model of the VF it was offered for"
        case .binary(let why): "binary refused: \(why)"
        }
    }
}
