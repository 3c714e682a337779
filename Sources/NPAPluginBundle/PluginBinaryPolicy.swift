/// The rule a plugin binary must pass before the host accepts its bundle and before the shell maps
/// it: an ELF shared object for this machine, under a size limit, importing only what a
/// freestanding plugin may call, and exporting only its entry point. A plugin runs inside the
/// guest's driver with no OS beneath it; an import such as `write` or `malloc` would bind to
/// whatever the shell's process offers, and a second export could shadow a symbol of the shell.
/// `scripts/build-plugins.sh` checks the imports the same way with nm when it builds the in-tree
/// plugins.
///
/// Pure: it reads the bytes it is given (through `ELFSharedObject`), nothing else.
public struct PluginBinaryPolicy: Sendable {
    /// What today's plugins may import: the compiler emits calls to these even in freestanding code.
    public static let defaultAllowedImports: Set<String> = ["memset", "memcpy", "memmove"]
    /// The one symbol the shell looks up (`npa_plugin_main` in `npa_plugin_abi.h`).
    public static let entryPoint = "npa_plugin_main"
    /// Far more than a plugin needs (today's are 5 to 10 KiB); a bound on what the host stores and
    /// injects into every guest.
    public static let defaultMaximumBytes = 4 << 20

    public var allowedImports: Set<String>
    public var maximumBytes: Int
    /// The machine the binary must be for; `ELFSharedObject.Machine.current` unless a test says.
    public var machine: ELFSharedObject.Machine?

    public init(
        allowedImports: Set<String> = defaultAllowedImports, maximumBytes: Int = defaultMaximumBytes,
        machine: ELFSharedObject.Machine? = .current
    ) {
        self.allowedImports = allowedImports
        self.maximumBytes = maximumBytes
        self.machine = machine
    }

    /// Why a binary is refused: one case per rule, each with a one-line reason.
    public enum Refusal: Error, Equatable, Sendable, CustomStringConvertible {
        case tooLarge(bytes: Int, limit: Int)
        case notELF(ELFError)
        case notSharedObject(ELFSharedObject.FileType)
        /// `expected` is nil when this process runs on a machine NPA has no ELF number for.
        case wrongMachine(ELFSharedObject.Machine, expected: ELFSharedObject.Machine?)
        /// A `DT_NEEDED` library: it would be loaded, and its constructors run, in the guest's driver.
        case needsLibrary(String)
        case forbiddenImport(String)
        case unexpectedExport(String)
        case noEntryPoint

        public var description: String {
            switch self {
            case .tooLarge(let bytes, let limit): "the plugin binary is \(bytes) bytes, over the limit of \(limit)"
            case .notELF(let error): "the plugin binary is not a readable ELF shared object: \(error)"
            case .notSharedObject(let type): "the plugin binary is \(type), not ET_DYN (shared object)"
            case .wrongMachine(let machine, let expected):
                "the plugin binary is for \(machine), this machine is \(expected.map(\.description) ?? "one NPA has no plugins for")"
            case .needsLibrary(let name): "the plugin binary needs the library '\(name)'; a plugin is freestanding and loads none"
            case .forbiddenImport(let name):
                "the plugin binary imports '\(name)', which is not on the allow-list of what a plugin may call"
            case .unexpectedExport(let name): "the plugin binary exports '\(name)'; a plugin exports only \(PluginBinaryPolicy.entryPoint)"
            case .noEntryPoint: "the plugin binary does not export \(PluginBinaryPolicy.entryPoint)"
            }
        }
    }

    /// Checks a binary against every rule; throws the first it breaks.
    public func check(_ bytes: [UInt8]) throws(Refusal) {
        // The size first: nothing else is read from a binary over the limit.
        guard bytes.count <= maximumBytes else { throw .tooLarge(bytes: bytes.count, limit: maximumBytes) }
        let image: ELFSharedObject
        do throws(ELFError) { image = try ELFSharedObject(bytes: bytes) } catch { throw .notELF(error) }
        guard image.fileType == .sharedObject else { throw .notSharedObject(image.fileType) }
        guard let machine, image.machine == machine else { throw .wrongMachine(image.machine, expected: machine) }
        if let library = image.neededLibraries.first { throw .needsLibrary(library) }
        var exportsEntry = false
        for symbol in image.dynamicSymbols {
            if !symbol.isDefined {
                // Whatever its binding (a weak import still binds if the process has the symbol).
                guard allowedImports.contains(symbol.name) else { throw .forbiddenImport(symbol.name) }
            } else if Self.isExport(symbol) {
                guard symbol.name == Self.entryPoint, !exportsEntry else { throw .unexpectedExport(symbol.name) }
                exportsEntry = true
            }
        }
        guard exportsEntry else { throw .noEntryPoint }
    }

    /// A definition another module can bind to. Section and file symbols name no code or data;
    /// hidden and internal ones are not visible outside the image. Any binding but local counts
    /// (`STB_GNU_UNIQUE` binds globally too), and any kind but section and file (an IFUNC export
    /// would run code at link time).
    static func isExport(_ symbol: ELFDynamicSymbol) -> Bool {
        guard symbol.binding != .local else { return false }
        guard symbol.visibility == .default || symbol.visibility == .protected else { return false }
        return symbol.kind != .section && symbol.kind != .file
    }
}
