import Foundation
@testable import NPAMigration
import Testing

/// The migration key file: hex text or raw bytes, at least 32 bytes of key material, and
/// refused (with a message naming the file) when empty, short, too long, not a regular file, or
/// accessible by group or others.
@Suite struct MigrationKeyTests {
    /// A fresh directory for this test's files, removed afterwards.
    final class Directory {
        let path = NSTemporaryDirectory() + "npa-migkey-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        init() { try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false) }
        deinit { try? FileManager.default.removeItem(atPath: path) }

        func file(_ name: String, _ bytes: [UInt8], mode: Int = 0o600) -> String {
            let file = path + "/" + name
            _ = FileManager.default.createFile(atPath: file, contents: Data(bytes), attributes: [.posixPermissions: mode])
            try! FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file)
            return file
        }
    }

    static let material: [UInt8] = (0..<32).map { UInt8($0 * 7 + 1) }
    static var hex: String { material.map { String(format: "%02x", $0) }.joined() }

    @Test func hexAndRawFilesHoldingTheSameBytesMakeTheSameKey() throws {
        let dir = Directory()
        let raw = try MigrationKey(contentsOf: dir.file("raw", Self.material))
        let hex = try MigrationKey(contentsOf: dir.file("hex", Array((Self.hex + "\n").utf8)))
        let upper = try MigrationKey(contentsOf: dir.file("upper", Array(Self.hex.uppercased().utf8), mode: 0o400))
        let memory = try MigrationKey(bytes: Self.material)
        for key in [hex, upper, memory] { #expect(key.symmetricKey == raw.symmetricKey) }
        // A longer key is fine; odd-length or non-hex text is raw bytes (here 65 of them).
        let long = try MigrationKey(contentsOf: dir.file("long", Array((Self.hex + Self.hex).utf8)))
        #expect(long.symmetricKey != raw.symmetricKey)
        let odd = try MigrationKey(contentsOf: dir.file("odd", Array((Self.hex + "a").utf8)))
        #expect(odd.symmetricKey.bitCount == 65 * 8)
    }

    @Test func shortEmptyAndOversizeKeysAreRefused() throws {
        let dir = Directory()
        let short = dir.file("short", Array(Self.material.prefix(31)))
        #expect(throws: MigrationKeyError.tooShort(path: short, bytes: 31)) { try MigrationKey(contentsOf: short) }
        // 62 hex digits are 31 bytes, not 62.
        let shortHex = dir.file("short-hex", Array(Self.hex.prefix(62).utf8))
        #expect(throws: MigrationKeyError.tooShort(path: shortHex, bytes: 31)) { try MigrationKey(contentsOf: shortHex) }
        let empty = dir.file("empty", [])
        #expect(throws: MigrationKeyError.empty(path: empty)) { try MigrationKey(contentsOf: empty) }
        let huge = dir.file("huge", Array(repeating: 0x41, count: 5000))
        #expect(throws: MigrationKeyError.tooLong(path: huge, limit: 4096)) { try MigrationKey(contentsOf: huge) }
        #expect(throws: MigrationKeyError.tooShort(path: nil, bytes: 16)) { try MigrationKey(bytes: Array(Self.material.prefix(16))) }
    }

    @Test func keysOthersMayReadAreRefusedAsSSHRefusesPrivateKeys() throws {
        let dir = Directory()
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o610] {
            let path = dir.file("key-\(String(mode, radix: 8))", Self.material, mode: mode)
            #expect(throws: MigrationKeyError.tooOpen(path: path, permissions: UInt32(mode))) { try MigrationKey(contentsOf: path) }
            do {
                _ = try MigrationKey(contentsOf: path)
            } catch {
                #expect(error.description.contains("chmod 600"))
            }
        }
        #expect(throws: MigrationKeyError.notARegularFile(path: dir.path)) { try MigrationKey(contentsOf: dir.path) }
        #expect(throws: MigrationKeyError.self) { try MigrationKey(contentsOf: dir.path + "/missing") }
    }
}
