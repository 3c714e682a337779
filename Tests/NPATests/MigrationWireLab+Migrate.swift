import NPAControlProtocol
import NPATestSupport

extension MigrationWireLab {
    /// Asks `from` to migrate guest `name` to `to` and turns `stream` until the migration
    /// finishes (or the stream's deadline passes), reading the source's record every eighth turn:
    /// a control round trip every turn would slow the stream. Returns the last record read.
    func migrate<Stream: TurningStream>(
        _ name: String, from: TestHost, to: TestHost, streaming stream: inout Stream
    ) throws -> StatusReport.Migration? {
        let id = try from.admin.migrate(name: name, to: address(of: to))
        var record: StatusReport.Migration?
        var polls = 0
        _ = stream.run { _ in
            polls += 1
            guard polls % 8 == 0 else { return false }
            record = try? from.admin.migration(id: id)
            return record?.isFinished == true
        }
        return record
    }

    /// Asks `from` to migrate guest `name` to `to` and waits (generously) until the migration
    /// finishes, for a test whose traffic runs in processes of its own. Returns the last record read.
    func migrate(_ name: String, from: TestHost, to: TestHost) throws -> StatusReport.Migration? {
        let id = try from.admin.migrate(name: name, to: address(of: to))
        var record: StatusReport.Migration?
        _ = try eventually(timeoutMilliseconds: 120_000) {
            record = try from.admin.migration(id: id)
            return record?.isFinished == true
        }
        return record
    }
}
