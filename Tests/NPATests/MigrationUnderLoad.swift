import Testing

/// The migration tests that stream thousands of frames a second over TAP wires, one at a time:
/// run side by side on two shared cores they starve each other's hosts and guests, and what
/// they measure (every frame once, in order) is then the machine's overload, not migration's.
@Suite(.serialized) enum MigrationUnderLoad {}
