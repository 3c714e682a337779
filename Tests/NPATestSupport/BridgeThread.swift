import Foundation
import NPASystem
import NPAWorkload

/// A stop request shared between a test and its bridge threads.
package final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    package init() {}
    package func set() { lock.withLock { stopped = true } }
    package var isSet: Bool { lock.withLock { stopped } }
}

/// One `TAPBridge` running on its own thread until its stop flag is set. The bridge (and its
/// vNIC) belong to that thread while it runs: the test reads them only after `join`.
package final class BridgeThread: @unchecked Sendable {
    package let bridge: TAPBridge
    package private(set) var error: (any Error)?
    /// Why `run` returned, once it did without throwing.
    package private(set) var ending: TAPBridge.Ending?
    private var thread: pthread_t?

    /// - Parameter stopCheckMilliseconds: how long the idle bridge sleeps between looks at
    ///   `stop`; a test that proves the bridge wakes for events sets it far beyond its waits.
    package init(bridge: TAPBridge, stop: StopFlag, stopCheckMilliseconds: Int = TAPBridge.stopCheckMilliseconds) {
        self.bridge = bridge
        thread = EngineThread.start(name: "npa-tap-bridge") { [self] in
            do {
                ending = try bridge.run(stopCheckMilliseconds: stopCheckMilliseconds, shouldStop: { stop.isSet })
            } catch {
                self.error = error
            }
        }
    }

    package func join() {
        if let thread { EngineThread.join(thread) }
        thread = nil
    }
}
