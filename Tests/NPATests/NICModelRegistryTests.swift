import ArgumentParser
import Foundation
import NPAHost
import NPANICModel
import NPATestSupport
import Testing

@testable import npa

/// The NIC model registry is the one list of VF models: every model in it can be built and has a
/// plugin image, and every place that takes a model name — the configuration parser, the host,
/// the CLI — refuses one it does not hold, naming the known ones, instead of using a default.
@Suite struct NICModelRegistryTests {
    @Test func everyRegisteredModelBuildsANICAndHasItsPluginImage() throws {
        #expect(Set(NICModelRegistry.names).count == NICModelRegistry.models.count)
        let images = try PluginImages.directory()
        for model in NICModelRegistry.models {
            #expect(try NICModelRegistry.model(named: model.name) == model)
            let nic = try SoftNIC(name: "r", model: model, vfCount: 1)
            #expect(nic.model == model)
            #expect(!model.pluginImages.isEmpty)
            #expect(model.pluginImages.contains { FileManager.default.fileExists(atPath: images.appendingPathComponent("\($0).so").path) })
        }
    }

    @Test func anUnknownModelIsAnErrorThatListsTheKnownOnes() {
        #expect(throws: UnknownNICModel.self) { try NICModelRegistry.model(named: "e1000") }
        let message = UnknownNICModel(name: "e1000").description
        for name in NICModelRegistry.names { #expect(message.contains(name)) }
        #expect(message.contains("'e1000'"))
    }

    @Test func theConfigurationParserRefusesAnUnknownModel() {
        do {
            _ = try HostConfiguration.parse(yaml: "nics:\n  - { name: n, model: npa-e1000, vfs: 2 }\n", file: "host.yaml")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == "host.yaml:2: \(UnknownNICModel(name: "npa-e1000"))")
        }
    }

    /// A configuration built in code skips the parser; the host still refuses the name.
    @Test func theHostRefusesAnUnknownModelInsteadOfUsingADefault() {
        var config = HostConfiguration()
        config.nics = [.init(name: "nic0", model: "npa-e1000", vfs: 2)]
        #expect(throws: UnknownNICModel.self) { _ = try TestHost(configuration: config) }
    }

    @Test(arguments: [["bench", "--model", "npa-e1000"], ["soak", "--model", "npa-e1000"]])
    func theCLIRefusesAnUnknownModelWithTheKnownList(_ arguments: [String]) {
        do {
            _ = try NPA.parseAsRoot(arguments)
            Issue.record("expected an error")
        } catch {
            let message = NPA.message(for: error)
            #expect(message.contains("npa-e1000"))
            for name in NICModelRegistry.names { #expect(message.contains(name)) }
        }
    }

    @Test(arguments: NICModelRegistry.names)
    func theCLIAcceptsEveryRegisteredModel(_ name: String) throws {
        _ = try NPA.parseAsRoot(["bench", "--model", name])
        _ = try NPA.parseAsRoot(["soak", "--model", name])
    }
}
