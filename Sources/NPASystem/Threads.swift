import CNPAShim
import Glibc

/// Dedicated pthreads for data-path engines: named (so their CPU is attributable by role) and
/// never on Swift Concurrency's cooperative pool, whose threads may hop and must not block.
public enum EngineThread {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts `body` on a new joinable thread named `name`; returns the pthread handle.
    public static func start(name: String, _ body: @escaping () -> Void) -> pthread_t {
        let box = Unmanaged.passRetained(
            Box {
                cnpa_set_thread_name(name)
                body()
            })
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, nil,
            { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                box.body()
                return nil
            }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return thread
    }

    public static func join(_ thread: pthread_t) {
        pthread_join(thread, nil)
    }

    public static func setCurrentName(_ name: String) { cnpa_set_thread_name(name) }
}

extension EngineThread {
    /// CPU time another thread of this process has consumed, in nanoseconds (0 if unknown).
    public static func cpuNanoseconds(of thread: pthread_t) -> UInt64 {
        var clock = clockid_t()
        guard pthread_getcpuclockid(thread, &clock) == 0 else { return 0 }
        var ts = timespec()
        guard clock_gettime(clock, &ts) == 0 else { return 0 }
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

extension EngineThread {
    /// Pins `thread` to one CPU (for benchmarks that place roles on cores).
    public static func pin(_ thread: pthread_t, toCPU cpu: Int) throws {
        _ = try shimCall("pthread_setaffinity_np(cpu \(cpu))") { cnpa_pin_thread_to_cpu(thread, Int32(cpu)) }
    }
}

extension EngineThread {
    /// Gives this core to another runnable thread (sched_yield(2), one system call): for an engine
    /// whose work waits on a thread that may share its core (a receiver with no free buffer), only
    /// while that wait lasts, never per frame.
    public static func yieldProcessor() { sched_yield() }

    /// Sleeps the calling thread for about `microseconds`: pacing, never synchronisation. A signal
    /// may end it early; callers re-check their schedule anyway.
    public static func sleep(microseconds: UInt32) { usleep(microseconds) }
}
