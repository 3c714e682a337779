/// The rule for a guest's name, which host policy is keyed by and which the shell uses in the
/// names of its kernel objects: checked by the CLI before it attaches and by the host at attach.
public enum GuestName {
    public static let maximumLength = 64
    public static let rule = "a guest name is 1-64 letters, digits, '-', '_' or '.'"

    public static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maximumLength
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }
}
