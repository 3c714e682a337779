extension PluginBundleVerifier {
    /// The verifier the host's plugin store and the shell both use: every check of the bundle,
    /// then `policy` (the ELF rule: a shared object for this machine importing only what the
    /// ABI allows and exporting only the entry point) on the authenticated binary.
    public static func enforcing(
        trust: PluginTrustStore, expectedABI: UInt32, knownModels: Set<String>?, requiredModel: String? = nil,
        policy: PluginBinaryPolicy = .init(), maxSize: Int = PluginBundle.defaultMaxSize
    ) -> PluginBundleVerifier {
        PluginBundleVerifier(
            trust: trust, expectedABI: expectedABI, knownModels: knownModels, requiredModel: requiredModel, maxSize: maxSize,
            binaryCheck: { binary in try policy.check([UInt8](binary)) })
    }
}
