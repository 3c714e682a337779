/// The licence rule that the host (before it accepts a bundle into its store) and the shell
/// (before it maps an injected image) both enforce: a plugin runs inside the guest's kernel-like
/// driver and inside the hypervisor's trust, and NPA's authors required it to be GPL, enforced in
/// both places. A manifest names its licence as an SPDX licence expression; it is accepted when the
/// licensee can take the plugin under the GPL:
///
/// - a GPL identifier: `GPL-2.0-only`, `GPL-2.0-or-later`, `GPL-3.0-only`, `GPL-3.0-or-later`
///   (and the deprecated `GPL-2.0`, `GPL-2.0+`, `GPL-3.0`, `GPL-3.0+`), optionally `WITH` an
///   exception from `allowedExceptions`;
/// - an identifier on the GPL-compatible allow-list that may itself be taken under the GPL:
///   the LGPLs (`LGPL-2.1-only`, `LGPL-2.1-or-later`, `LGPL-3.0-only`, `LGPL-3.0-or-later`);
/// - `A OR B`: accepted if either alternative is (the licensee chooses);
/// - `A AND B` (and parentheses): accepted if every part is GPL or permissive and GPL-compatible
///   (`permissiveCompatible`: MIT, BSD-2-Clause, BSD-3-Clause, ISC, Zlib, 0BSD) and at least one
///   part is GPL.
///
/// A permissive licence alone (`MIT`) is refused: compatible with the GPL, but not the GPL, and
/// the rule is that the plugin's source is under it. Pure: no I/O.
public enum PluginLicence {
    public static let gplIdentifiers: Set<String> = [
        "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later",
        "GPL-2.0", "GPL-2.0+", "GPL-3.0", "GPL-3.0+",
    ]
    /// Licences whose code may be conveyed under the GPL itself.
    public static let convertibleToGPL: Set<String> = ["LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only", "LGPL-3.0-or-later"]
    /// Permissive licences whose code may be combined with GPL code (`AND`), not enough alone.
    public static let permissiveCompatible: Set<String> = ["MIT", "BSD-2-Clause", "BSD-3-Clause", "ISC", "Zlib", "0BSD"]
    public static let allowedExceptions: Set<String> = ["Linux-syscall-note", "GCC-exception-2.0", "GCC-exception-3.1"]

    /// Why an expression is refused, in one line.
    public struct Refusal: Error, Equatable, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Checks an SPDX licence expression; throws why it is not accepted.
    public static func check(_ expression: String) throws(Refusal) {
        var parser = Parser(tokens: tokenize(expression))
        guard !parser.tokens.isEmpty else { throw Refusal(description: "no licence given (an SPDX licence expression, e.g. GPL-2.0-only)") }
        let verdict = try parser.expression()
        if let extra = parser.peek { throw Refusal(description: "licence '\(expression)': unexpected '\(extra)'") }
        guard verdict.compatible else {
            throw Refusal(
                description: "licence '\(expression)' is not GPL-compatible: a plugin must be GPL (\(verdict.culprit ?? expression))")
        }
        guard verdict.gpl else {
            throw Refusal(description: "licence '\(expression)' is GPL-compatible but not the GPL: a plugin must be GPL")
        }
    }

    /// What a (sub-)expression allows: combinable with the GPL, and under it.
    struct Verdict {
        var compatible: Bool
        var gpl: Bool
        /// The first identifier that made it incompatible.
        var culprit: String?
    }

    static func tokenize(_ s: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        for c in s {
            if c == "(" || c == ")" || c.isWhitespace {
                if !current.isEmpty { tokens.append(current) }
                current = ""
                if !c.isWhitespace { tokens.append(String(c)) }
            } else {
                current.append(c)
            }
        }
        if !current.isEmpty { tokens.append(current) }
        return tokens
    }

    /// Recursive descent over SPDX's `OR` (loosest), `AND`, `WITH`, parentheses; nesting is bounded.
    struct Parser {
        let tokens: [String]
        var index = 0
        var depth = 0
        var peek: String? { index < tokens.count ? tokens[index] : nil }

        mutating func take() -> String? {
            defer { index += 1 }
            return peek
        }

        mutating func expression() throws(Refusal) -> Verdict {
            var verdict = try conjunction()
            while peek?.uppercased() == "OR" {
                index += 1
                let other = try conjunction()
                // The licensee picks the alternative that is accepted, if one is.
                if !(verdict.compatible && verdict.gpl) { verdict = other.compatible && other.gpl ? other : verdict }
            }
            return verdict
        }

        mutating func conjunction() throws(Refusal) -> Verdict {
            var verdict = try term()
            while peek?.uppercased() == "AND" {
                index += 1
                let other = try term()
                verdict = Verdict(
                    compatible: verdict.compatible && other.compatible, gpl: verdict.gpl || other.gpl,
                    culprit: verdict.culprit ?? other.culprit)
            }
            return verdict
        }

        mutating func term() throws(Refusal) -> Verdict {
            guard let token = take() else { throw Refusal(description: "licence expression ends early") }
            if token == "(" {
                depth += 1
                guard depth <= 16 else { throw Refusal(description: "licence expression nested too deeply") }
                let verdict = try expression()
                guard take() == ")" else { throw Refusal(description: "licence expression: '(' without ')'") }
                depth -= 1
                return verdict
            }
            guard token != ")", !["AND", "OR", "WITH"].contains(token.uppercased()) else {
                throw Refusal(description: "licence expression: '\(token)' where a licence identifier belongs")
            }
            var verdict = PluginLicence.verdict(forIdentifier: token)
            if peek?.uppercased() == "WITH" {
                index += 1
                guard let exception = take() else { throw Refusal(description: "licence expression: WITH without an exception") }
                if !PluginLicence.allowedExceptions.contains(exception) || !PluginLicence.gplIdentifiers.contains(token) {
                    verdict = Verdict(compatible: false, gpl: false, culprit: "\(token) WITH \(exception)")
                }
            }
            return verdict
        }
    }

    static func verdict(forIdentifier id: String) -> Verdict {
        if gplIdentifiers.contains(id) || convertibleToGPL.contains(id) { return Verdict(compatible: true, gpl: true) }
        if permissiveCompatible.contains(id) { return Verdict(compatible: true, gpl: false) }
        return Verdict(compatible: false, gpl: false, culprit: id)
    }
}
