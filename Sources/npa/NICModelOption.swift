import ArgumentParser
import NPANICModel

/// The CLI's side of the NIC model registry: every `--model` option (bench, soak) is checked
/// here, against `NICModelRegistry`, so an unknown name is refused with the list of known ones.
enum NICModelOption {
    /// The help text of a `--model` option.
    static var help: ArgumentHelp { ArgumentHelp("NIC model: \(UnknownNICModel.known).") }

    static func validate(_ name: String) throws {
        do { _ = try NICModelRegistry.model(named: name) } catch { throw ValidationError("--model: \(error)") }
    }
}
