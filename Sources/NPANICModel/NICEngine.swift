import CNPAPluginABI
import Foundation
import NPASystem

/// The NIC's engine: its passes over the VFs' TX queues and the thread that runs them. A pass
/// takes the NIC's lock once; the model's ring code (`VFModelEngine`) runs inside it,
/// specialised per model (`runPass(_:)` is generic; `runPass()` enters it once per pass).
extension SoftNIC {
    /// One engine pass over every enabled VF's TX queues; returns frames processed.
    @discardableResult
    public func runPass() -> Int { engine.runPass(on: self) }

    func runPass<Model: VFModelEngine>(_: Model.Type) -> Int {
        lock.lock()
        defer { lock.unlock() }
        heldBack = false
        var work = 0
        for ref in vfRefs {
            work += ref._withUnsafeGuaranteedRef { vf in
                guard vf.enabled else { return 0 }
                var n = 0
                for q in 0..<vf.txQueueCount {
                    n += Model.pullTransmitQueue(self, vf, q)
                }
                return n
            }
        }
        publishAndInterrupt(Model.self)
        return work
    }

    /// Starts the engine on its own thread ("npa-nic-<name>", accounted as hardware). It polls
    /// while there is work and sleeps, with each VF page saying so, after `idlePasses` empty passes.
    public func start(idlePasses: Int = 256) {
        guard thread == nil else { return }
        stopFlag.pointee = 0
        let flag = stopFlag
        thread = EngineThread.start(name: "npa-nic-\(name)") { [self] in
            let epoll = try! Epoll()
            try! epoll.add(wake.fd, tag: UInt64.max)
            for vf in vfs { try! epoll.add(vf.kick.fd, tag: UInt64(vf.index)) }
            // A TAP wire: its descriptor (readable) and its outbound queue's wake-up (the PF
            // driver queued frames while the engine slept).
            var wireWatched = false
            if let wire {
                try! epoll.add(wire.device.fd, tag: Self.wireTag)
                try! epoll.add(wire.outbound.wake.fd, tag: Self.wireOutboundTag)
                wireWatched = true
            }
            var idle = 0
            while SharedWord.loadRelaxed(flag) == 0 {
                let work = runPass() + serviceWire()
                if wireWatched, let wire, wire.isDown {
                    // Deleted under us: its descriptor would report an error forever.
                    epoll.remove(wire.device.fd)
                    wireWatched = false
                }
                if work > 0 { idle = 0; continue }
                if heldBack || wire?.pendingCount ?? 0 > 0 {
                    // A sender waits for a receiver's buffers: let the receiver's vCPU run.
                    EngineThread.yieldProcessor()
                    continue
                }
                idle += 1
                if idle < idlePasses { CPU.relax(); continue }
                for vf in vfs { vf.write(NPA_VF_REG_ENGINE_SLEEPING, 1) }
                wire?.outbound.setConsumerSleeping(true)
                MemoryFence.sequentiallyConsistent()
                if runPass() == 0 && wire?.outbound.isEmpty != false {
                    let asleepAt = Clock.monotonicNanoseconds()
                    defer { noteSleep(since: asleepAt) }
                    for tag in (try? epoll.wait(timeoutMilliseconds: 100)) ?? [] {
                        if tag == UInt64.max {
                            wake.drain()
                        } else if tag == Self.wireTag {
                            wire?.markReadable()
                        } else if tag == Self.wireOutboundTag {
                            wire?.outbound.wake.drain()
                        } else {
                            vfs[Int(tag)].kick.drain()
                        }
                    }
                }
                wire?.outbound.setConsumerSleeping(false)
                for vf in vfs { vf.write(NPA_VF_REG_ENGINE_SLEEPING, 0) }
                idle = 0
            }
        }
    }

    /// Times the engine slept in epoll for want of work (each ended by a wake-up: a kick, a
    /// frame for the wire, or its 100 ms timeout), and the nanoseconds it slept.
    public var engineSleeps: UInt64 { SharedWord.loadRelaxedU64(engineActivity) }
    public var engineSleepNanoseconds: UInt64 { SharedWord.loadRelaxedU64(engineActivity + 1) }
    /// CPU time the engine thread used so far, polling included (0 before it starts).
    public var engineCPUNanoseconds: UInt64 { thread.map(EngineThread.cpuNanoseconds(of:)) ?? 0 }

    /// Engine thread only (the single writer of both slots).
    private func noteSleep(since asleepAt: UInt64) {
        SharedWord.storeRelaxedU64(engineActivity, engineActivity.pointee &+ 1)
        SharedWord.storeRelaxedU64(engineActivity + 1, engineActivity[1] &+ (Clock.monotonicNanoseconds() &- asleepAt))
    }

    static let wireTag = UInt64.max - 1
    static let wireOutboundTag = UInt64.max - 2

    public func stop() {
        guard let t = thread else { return }
        SharedWord.storeRelaxed(stopFlag, 1)
        wake.signal()
        EngineThread.join(t)
        thread = nil
    }

    /// End of a pass: publish each RX head that moved (once per pass, not per frame), then
    /// raise the interrupts the pass earned.
    func publishAndInterrupt<Model: VFModelEngine>(_: Model.Type) {
        for ref in vfRefs {
            ref._withUnsafeGuaranteedRef { vf in
                guard vf.pendingInterrupt else { return }
                Model.publishReceiveHeads(of: vf)
            }
        }
        MemoryFence.sequentiallyConsistent()
        for ref in vfRefs {
            ref._withUnsafeGuaranteedRef { vf in
                guard vf.pendingInterrupt else { return }
                vf.pendingInterrupt = false
                if vf.read(NPA_VF_REG_INTR_MASK) == 0 {
                    vf.write(NPA_VF_REG_INTR_MASK, 1)
                    vf.interrupt?.signal()
                    vf.counters.interrupts &+= 1
                }
            }
        }
    }
}
