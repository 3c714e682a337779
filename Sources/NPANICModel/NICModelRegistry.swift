/// One VF model of the software NIC, as the registry knows it: its name (in host.yaml, on the
/// command line, in switch offers), the plugin images that drive it, and its engine. Two models
/// are the same model if they have the same name.
public struct NICModel: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    /// What kind of hardware the model plays, for help texts.
    public let summary: String
    /// Plugin names that drive this model's VFs, preferred first: among the accepted bundles
    /// whose manifests name this model, the host's plugin store injects the first of these
    /// names (else the first bundle by file name).
    public let pluginImages: [String]
    /// The engine a NIC of this model runs (`SoftNIC` stores it once, at creation).
    let engine: any VFModelEngine.Type

    init(name: String, summary: String, pluginImages: [String], engine: any VFModelEngine.Type) {
        self.name = name
        self.summary = summary
        self.pluginImages = pluginImages
        self.engine = engine
    }

    public var description: String { name }
    public static func == (a: NICModel, b: NICModel) -> Bool { a.name == b.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }
}

extension NICModel {
    /// Descriptor rings, tail doorbell, descriptor-done write-back (82599 VF style).
    public static let dring = NICModel(
        name: "npa-dring", summary: "descriptor rings, tail doorbell, descriptor-done write-back (82599 VF style)",
        pluginImages: ["npa-dring"], engine: DescriptorRingEngine.self)
    /// Submission and completion queues with a phase bit (ENA / mlx5 style).
    public static let cq = NICModel(
        name: "npa-cq", summary: "submission and completion queues with a phase bit (ENA / mlx5 style)",
        pluginImages: ["npa-cq-swift", "npa-cq"], engine: CompletionQueueEngine.self)
}

/// The one list of VF models: the host's configuration parser, the host, the CLI (bench, soak,
/// chaos soak, demo), the benchmarks and the tests all ask it, so a model named nowhere here is
/// refused everywhere with the list of those that exist, never replaced by a default.
///
/// A new model is a folder beside `DescriptorRing/` and `CompletionQueue/` (its engine, codec
/// and queue configuration), a plugin under Plugins/, and its entry here.
public enum NICModelRegistry {
    public static let models: [NICModel] = [.dring, .cq]

    public static var names: [String] { models.map(\.name) }

    /// The model called `name`, or an error that lists the known ones.
    public static func model(named name: String) throws(UnknownNICModel) -> NICModel {
        guard let model = models.first(where: { $0.name == name }) else { throw UnknownNICModel(name: name) }
        return model
    }
}

/// A model name the registry does not know.
public struct UnknownNICModel: Error, CustomStringConvertible, Sendable {
    public let name: String

    public init(name: String) { self.name = name }

    public var description: String { "NIC model must be \(Self.known), not '\(name)'" }

    /// "a, b or c".
    public static var known: String {
        let names = NICModelRegistry.names
        return names.count < 2 ? names.joined() : names.dropLast().joined(separator: ", ") + " or " + names.last!
    }
}
