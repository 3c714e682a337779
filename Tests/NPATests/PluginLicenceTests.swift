import NPAPluginBundle
import Testing

/// The GPL rule on plugin licences (SPDX expressions), as the host and the shell apply it.
struct PluginLicenceTests {
    @Test(arguments: [
        "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later", "GPL-2.0+",
        "GPL-2.0-only WITH Linux-syscall-note", "LGPL-2.1-or-later",
        "GPL-2.0-only OR MIT", "MIT OR GPL-3.0-or-later", "Proprietary OR GPL-2.0-only",
        "GPL-2.0-only AND MIT", "(MIT AND BSD-3-Clause) AND GPL-2.0-or-later", "( GPL-2.0-only )",
    ])
    func gplExpressionsAreAccepted(_ expression: String) throws {
        try PluginLicence.check(expression)
    }

    @Test(arguments: [
        ("MIT", "GPL-compatible but not the GPL"),
        ("BSD-3-Clause AND MIT", "GPL-compatible but not the GPL"),
        ("Proprietary", "not GPL-compatible"),
        ("GPL-2.0-only AND Proprietary", "not GPL-compatible"),
        ("GPL-2.0-only WITH Some-exception", "not GPL-compatible"),
        ("MIT WITH Linux-syscall-note", "not GPL-compatible"),
        ("", "no licence given"),
        ("GPL-2.0-only AND", "ends early"),
        ("(GPL-2.0-only", "without ')'"),
        ("GPL-2.0-only)", "unexpected ')'"),
        ("OR GPL-2.0-only", "where a licence identifier belongs"),
        ("GPL-2.0-only WITH", "WITH without an exception"),
        ("gpl-2.0-only", "not GPL-compatible"),
    ])
    func everythingElseIsRefusedWithAReason(_ expression: String, _ reason: String) {
        #expect(
            performing: { try PluginLicence.check(expression) },
            throws: { error in
                "\(error)".contains(reason)
            })
    }

    @Test func nestingIsBounded() {
        let deep = String(repeating: "(", count: 40) + "GPL-2.0-only" + String(repeating: ")", count: 40)
        #expect(throws: PluginLicence.Refusal.self) { try PluginLicence.check(deep) }
    }
}
