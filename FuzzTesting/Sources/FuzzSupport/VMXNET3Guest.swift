import NPAControlProtocol
import SystemPackage
import NPARingFormats
import NPASystem

/// A guest as the fuzz targets play it: its memory (a memfd), doorbell and interrupt eventfds,
/// and a control connection to an in-process host that the caller steps (`pump`). It is a fake
/// vmxnet3 driver writing descriptors straight into guest memory: well-behaved when the targets
/// use `send`/`receive`, hostile when they write the rings themselves.
///
/// Fixed layout (GPAs): DriverShared 0x1000, queue table 0x2000, multicast table 0x3000,
/// TX queue q: ring 0x10000 + q * 0x20000, completion ring + 0x10000 (each up to 4096 entries);
/// RX queue q: ring 0x50000 + q * 0x30000, completion ring + 0x10000 (up to 8192 entries);
/// buffers from 0xC0000, 2 KiB each.
public final class VMXNET3Guest {
    public static let memoryBytes = 2 << 20
    public static let driverShared: UInt64 = 0x1000
    public static let queueTable: UInt64 = 0x2000
    public static let multicastTable: UInt64 = 0x3000
    public static let bufferBase: UInt64 = 0xC0000
    public static let bufferSize: UInt64 = 2048
    public static func txRing(_ q: Int) -> UInt64 { 0x10000 + UInt64(q) * 0x20000 }
    public static func txComp(_ q: Int) -> UInt64 { txRing(q) + 0x10000 }
    public static func rxRing(_ q: Int) -> UInt64 { 0x50000 + UInt64(q) * 0x30000 }
    public static func rxComp(_ q: Int) -> UInt64 { rxRing(q) + 0x10000 }

    public let name: String
    public let region: SharedMemory
    public let memory: GuestMemory
    public let doorbell: EventNotifier
    public let interrupt: EventNotifier
    public let socket: SeqPacketSocket
    public private(set) var mac: MACAddress
    public private(set) var registerPage: SharedMemory?
    private let pump: () -> Void

    // The well-behaved driver's cursors (one TX and one RX queue).
    public private(set) var ringSize: UInt32 = 64
    var txNext: UInt32 = 0
    var txGen: UInt32 = 1
    var txCompNext: UInt32 = 0
    var txCompGen: UInt32 = 1
    var txInFlight: UInt32 = 0
    var rxCompNext: UInt32 = 0
    var rxCompGen: UInt32 = 1
    var rxSlotGen: [UInt32] = []

    public init(name: String, mac: MACAddress, hostSocket: String, pump: @escaping () -> Void) throws {
        self.name = name
        self.mac = mac
        self.pump = pump
        region = try SharedMemory(name: "fuzz-\(name)", size: Self.memoryBytes)
        memory = GuestMemory(base: region.base, size: region.size)
        doorbell = try EventNotifier()
        interrupt = try EventNotifier()
        socket = try SeqPacketSocket.connect(path: hostSocket)
        socket.setNonBlocking()
        let reply = try request(
            .attach(.init(name: name, mac: mac, interruptVectors: 1)), descriptors: [region.fd, doorbell.fd, interrupt.fd])
        guard case .attached(let a) = reply.message, let page = reply.descriptors.first else {
            fatalError("attach of \(name) failed: \(reply.message)")
        }
        self.mac = a.mac
        registerPage = try SharedMemory(adopting: page)
    }

    /// Sends one control message, steps the host until it answered, returns the answer.
    public func request(_ message: ControlMessage, descriptors: [FileDescriptor] = []) throws -> (
        message: ControlMessage, descriptors: [FileDescriptor]
    ) {
        try socket.send(message.encode(), descriptors: descriptors)
        for _ in 0..<16 {
            pump()
            if let (bytes, fds) = try? socket.receive() {
                return (try ControlMessage.parse(bytes), fds)
            }
        }
        fatalError("INVARIANT VIOLATED: the host did not answer \(message) from \(name)")
    }

    /// A BAR1 register write through the control channel, as a guest's driver makes it.
    @discardableResult
    public func writeRegister(_ offset: UInt32, _ value: UInt32) throws -> (status: UInt32, value: UInt32, message: String) {
        let reply = try request(.registerWrite(bar: 1, offset: offset, value: value)).message
        guard case .registerResult(let s, let v, let m) = reply else {
            fatalError("INVARIANT VIOLATED: register write answered with \(reply)")
        }
        return (s, v, m)
    }

    public func readRegister(_ offset: UInt32) throws -> (status: UInt32, value: UInt32) {
        let reply = try request(.registerRead(bar: 1, offset: offset)).message
        guard case .registerResult(let s, let v, _) = reply else { fatalError("INVARIANT VIOLATED: register read answered with \(reply)") }
        return (s, v)
    }

    // MARK: Programming the device the way a correct driver does

    /// Writes a valid DriverShared and queue table: `tx` TX and `rx` RX queues of `ringSize`
    /// entries at the fixed layout, completion rings as large, one interrupt, MTU `mtu`.
    public func writeSharedArea(tx: Int = 1, rx: Int = 1, ringSize: UInt32, rxCompSize: UInt32? = nil, mtu: UInt32 = 1500) {
        let ds = Self.driverShared
        memory.pointer(gpa: ds, length: 0x3000)!.initializeMemory(as: UInt8.self, repeating: 0, count: 0x3000)
        memory.storeU32(gpa: ds, VMXNET3.driverSharedMagic)
        memory.storeU32(gpa: ds + VMXNET3.DriverShared.mtu, mtu)
        memory.pointer(gpa: ds + VMXNET3.DriverShared.numTxQueues, length: 1)!.storeBytes(of: UInt8(tx), as: UInt8.self)
        memory.pointer(gpa: ds + VMXNET3.DriverShared.numRxQueues, length: 1)!.storeBytes(of: UInt8(rx), as: UInt8.self)
        memory.pointer(gpa: ds + VMXNET3.DriverShared.numInterrupts, length: 1)!.storeBytes(of: UInt8(1), as: UInt8.self)
        memory.pointer(gpa: ds + VMXNET3.DriverShared.intrAutoMask, length: 1)!.storeBytes(of: UInt8(1), as: UInt8.self)
        memory.storeU64(gpa: ds + VMXNET3.DriverShared.queueDescPA, Self.queueTable)
        memory.storeU32(gpa: ds + VMXNET3.DriverShared.rxMode, VMXNET3.RxMode([.unicast, .broadcast]).rawValue)
        memory.storeU32(gpa: ds + VMXNET3.DriverShared.vlanTable, 1)
        for q in 0..<tx {
            let d = Self.queueTable + UInt64(q) * 256
            memory.storeU64(gpa: d + VMXNET3.TxQueueDesc.txRingBasePA, Self.txRing(q))
            memory.storeU64(gpa: d + VMXNET3.TxQueueDesc.compRingBasePA, Self.txComp(q))
            memory.storeU32(gpa: d + VMXNET3.TxQueueDesc.txRingSize, ringSize)
            memory.storeU32(gpa: d + VMXNET3.TxQueueDesc.compRingSize, ringSize)
        }
        for q in 0..<rx {
            let d = Self.queueTable + UInt64(tx + q) * 256
            memory.storeU64(gpa: d + VMXNET3.RxQueueDesc.rxRingBasePA0, Self.rxRing(q))
            memory.storeU64(gpa: d + VMXNET3.RxQueueDesc.compRingBasePA, Self.rxComp(q))
            memory.storeU32(gpa: d + VMXNET3.RxQueueDesc.rxRingSize0, ringSize)
            memory.storeU32(gpa: d + VMXNET3.RxQueueDesc.compRingSize, rxCompSize ?? ringSize)
        }
    }

    /// Sets up one TX and one RX queue of `ringSize`, posts every RX buffer and activates.
    public func activateWellBehaved(ringSize: UInt32 = 64) throws {
        self.ringSize = ringSize
        writeSharedArea(ringSize: ringSize)
        zeroRing(Self.txRing(0), ringSize)
        rxSlotGen = [UInt32](repeating: 1, count: Int(ringSize))
        for i in 0..<Int(ringSize) { postRx(slot: i) }
        txNext = 0; txGen = 1; txCompNext = 0; txCompGen = 1; txInFlight = 0
        rxCompNext = 0; rxCompGen = 1
        try writeRegister(VMXNET3.Register.dsal.rawValue, UInt32(truncatingIfNeeded: Self.driverShared))
        try writeRegister(VMXNET3.Register.dsah.rawValue, 0)
        let r = try writeRegister(VMXNET3.Register.cmd.rawValue, VMXNET3.Command.activateDevice.rawValue)
        guard r.status == 0 else { fatalError("activate of \(name) refused: \(r.message)") }
    }

    public func zeroRing(_ gpa: UInt64, _ entries: UInt32) {
        memory.pointer(gpa: gpa, length: UInt64(entries) * 16)!.initializeMemory(as: UInt8.self, repeating: 0, count: Int(entries) * 16)
    }

    private func postRx(slot i: Int) {
        let d = Self.rxRing(0) + UInt64(i) * 16
        memory.storeU64(gpa: d, Self.bufferBase + UInt64(i) * Self.bufferSize)
        memory.storeU32(gpa: d + 12, 0)
        cnpaStoreRelease(d + 8, VMXNET3Descriptor.rxDescriptorDword2(length: UInt32(Self.bufferSize), generation: rxSlotGen[i]))
    }

    private func cnpaStoreRelease(_ gpa: UInt64, _ value: UInt32) {
        // The harness and the device run on one thread: a plain store is ordered enough.
        memory.storeU32(gpa: gpa, value)
    }

    /// Queues one frame on TX queue 0 (buffers for TX live in the upper half of the buffer area).
    /// Returns false if the ring is full.
    @discardableResult
    public func send(_ frame: [UInt8]) -> Bool {
        reclaimTx()
        guard txInFlight < ringSize - 1 else { return false }
        let buffer = Self.bufferBase + 0x20000 + UInt64(txNext) * Self.bufferSize
        frame.withUnsafeBytes {
            memory.pointer(gpa: buffer, length: UInt64($0.count))!.copyMemory(from: $0.baseAddress!, byteCount: $0.count)
        }
        let d = Self.txRing(0) + UInt64(txNext) * 16
        let desc = VMXNET3Descriptor.Tx(address: buffer, length: UInt32(frame.count), generation: txGen, endOfPacket: true)
        memory.storeU64(gpa: d, buffer)
        memory.storeU32(gpa: d + 12, desc.dword3)
        cnpaStoreRelease(d + 8, desc.dword2)
        txNext += 1
        if txNext == ringSize { txNext = 0; txGen ^= 1 }
        txInFlight += 1
        return true
    }

    /// Takes the TX completions the device wrote.
    public func reclaimTx() {
        while true {
            let c = Self.txComp(0) + UInt64(txCompNext) * 16
            guard let dw3 = memory.loadU32(gpa: c + 12), dw3 >> 31 == txCompGen else { return }
            invariant(txInFlight > 0, "\(name): a TX completion for nothing in flight")
            txInFlight -= 1
            txCompNext += 1
            if txCompNext == ringSize { txCompNext = 0; txCompGen ^= 1 }
        }
    }

    /// Receives what the device completed on RX queue 0, re-posting each buffer.
    public func receive(_ body: ([UInt8]) -> Void) {
        while true {
            let c = Self.rxComp(0) + UInt64(rxCompNext) * 16
            guard let dw3 = memory.loadU32(gpa: c + 12), dw3 >> 31 == rxCompGen else { return }
            let completion = VMXNET3Descriptor.RxCompletion(
                dwords: (memory.loadU32(gpa: c)!, memory.loadU32(gpa: c + 4)!, memory.loadU32(gpa: c + 8)!, dw3))
            let slot = Int(completion.descriptorIndex)
            invariant(slot < Int(ringSize) && completion.ringID == 0, "\(name): RX completion for slot \(slot) ring \(completion.ringID)")
            if !completion.error {
                let buffer = Self.bufferBase + UInt64(slot) * Self.bufferSize
                let p = memory.pointer(gpa: buffer, length: UInt64(completion.length))!
                body(Array(UnsafeRawBufferPointer(start: p, count: Int(completion.length))))
            }
            rxSlotGen[slot] ^= 1
            postRx(slot: slot)
            rxCompNext += 1
            if rxCompNext == ringSize { rxCompNext = 0; rxCompGen ^= 1 }
        }
    }
}

/// An Ethernet frame: destination, source, optional 802.1Q tag, EtherType 0x88B5, payload.
public func ethernetFrame(to dst: MACAddress, from src: MACAddress, vlan: UInt16? = nil, payloadBytes: Int = 46, fill: UInt8 = 0xAB)
    -> [UInt8]
{
    var f = dst.bytes + src.bytes
    if let vlan { f += [0x81, 0x00, UInt8(vlan >> 8), UInt8(vlan & 0xFF)] }
    return f + [0x88, 0xB5] + [UInt8](repeating: fill, count: payloadBytes)
}
