import CVMXNET3Mirror
import NPARingFormats
import Testing

@Suite struct RingFormatTests {
    @Test func driverSharedOffsetsMatchTheLinuxLayout() {
        typealias DS = M_DriverShared
        #expect(MemoryLayout<DS>.size == Int(VMXNET3.DriverShared.size))
        #expect(MemoryLayout<DS>.offset(of: \DS.magic) == Int(VMXNET3.DriverShared.magic))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.misc.driverInfo.version) == Int(VMXNET3.DriverShared.driverVersion))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.misc.queueDescPA) == Int(VMXNET3.DriverShared.queueDescPA))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.misc.queueDescLen) == Int(VMXNET3.DriverShared.queueDescLength))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.misc.mtu) == Int(VMXNET3.DriverShared.mtu))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.misc.maxNumRxSG) == Int(VMXNET3.DriverShared.maxRxSG))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.misc.numTxQueues) == Int(VMXNET3.DriverShared.numTxQueues))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.misc.numRxQueues) == Int(VMXNET3.DriverShared.numRxQueues))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.intrConf.autoMask) == Int(VMXNET3.DriverShared.intrAutoMask))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.intrConf.numIntrs) == Int(VMXNET3.DriverShared.numInterrupts))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.intrConf.eventIntrIdx) == Int(VMXNET3.DriverShared.eventInterruptIndex))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.intrConf.intrCtrl) == Int(VMXNET3.DriverShared.intrCtrl))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.rxFilterConf.rxMode) == Int(VMXNET3.DriverShared.rxMode))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.rxFilterConf.mfTableLen) == Int(VMXNET3.DriverShared.multicastTableLength))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.rxFilterConf.mfTablePA) == Int(VMXNET3.DriverShared.multicastTablePA))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.rxFilterConf.vfTable) == Int(VMXNET3.DriverShared.vlanTable))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.rssConfDesc) == Int(VMXNET3.DriverShared.rssConfDesc))
        #expect(MemoryLayout<DS>.offset(of: \DS.devRead.pluginConfDesc) == Int(VMXNET3.DriverShared.pluginConfDesc))
        #expect(MemoryLayout<DS>.offset(of: \DS.ecr) == Int(VMXNET3.DriverShared.ecr))
    }

    @Test func queueDescriptorOffsetsMatchTheLinuxLayout() {
        typealias T = M_TxQueueDesc
        typealias R = M_RxQueueDesc
        #expect(MemoryLayout<T>.size == Int(VMXNET3.queueDescriptorSize))
        #expect(MemoryLayout<T>.offset(of: \T.ctrl.txThreshold) == Int(VMXNET3.TxQueueDesc.txThreshold))
        #expect(MemoryLayout<T>.offset(of: \T.conf.txRingBasePA) == Int(VMXNET3.TxQueueDesc.txRingBasePA))
        #expect(MemoryLayout<T>.offset(of: \T.conf.compRingBasePA) == Int(VMXNET3.TxQueueDesc.compRingBasePA))
        #expect(MemoryLayout<T>.offset(of: \T.conf.txRingSize) == Int(VMXNET3.TxQueueDesc.txRingSize))
        #expect(MemoryLayout<T>.offset(of: \T.conf.compRingSize) == Int(VMXNET3.TxQueueDesc.compRingSize))
        #expect(MemoryLayout<T>.offset(of: \T.conf.intrIdx) == Int(VMXNET3.TxQueueDesc.intrIdx))
        #expect(MemoryLayout<T>.offset(of: \T.status.stopped) == Int(VMXNET3.TxQueueDesc.stopped))
        #expect(MemoryLayout<T>.offset(of: \T.status.error) == Int(VMXNET3.TxQueueDesc.error))
        #expect(MemoryLayout<T>.offset(of: \T.stats) == Int(VMXNET3.TxQueueDesc.stats))
        #expect(MemoryLayout<R>.size == Int(VMXNET3.queueDescriptorSize))
        #expect(MemoryLayout<R>.offset(of: \R.conf.rxRingBasePA) == Int(VMXNET3.RxQueueDesc.rxRingBasePA0))
        #expect(MemoryLayout<R>.offset(of: \R.conf.compRingBasePA) == Int(VMXNET3.RxQueueDesc.compRingBasePA))
        #expect(MemoryLayout<R>.offset(of: \R.conf.rxRingSize) == Int(VMXNET3.RxQueueDesc.rxRingSize0))
        #expect(MemoryLayout<R>.offset(of: \R.conf.compRingSize) == Int(VMXNET3.RxQueueDesc.compRingSize))
        #expect(MemoryLayout<R>.offset(of: \R.conf.intrIdx) == Int(VMXNET3.RxQueueDesc.intrIdx))
        #expect(MemoryLayout<R>.offset(of: \R.stats) == Int(VMXNET3.RxQueueDesc.stats))
    }

    @Test func txDescriptorBitsAreWhereLinuxPutsThem() {
        let d = VMXNET3Descriptor.Tx(
            address: 0x1234, length: 1514, generation: 1, endOfPacket: true, completionRequested: true, vlanInsert: true, vlanTCI: 0xABC)
        #expect(d.dword2 == 1514 | 1 << 14)
        #expect(d.dword3 == 1 << 12 | 1 << 13 | 1 << 15 | 0xABC << 16)
        #expect(VMXNET3Descriptor.Tx(dword2: d.dword2, dword3: d.dword3, address: 0x1234) == d)
        // A length field of 0 means 16 KiB.
        #expect(VMXNET3Descriptor.Tx(dword2: 0, dword3: 0, address: 0).length == 16384)
        let c = VMXNET3Descriptor.txCompletion(eopIndex: 0x1FFF, generation: 1)
        #expect(c.dword0 == 0xFFF)
        #expect(c.dword3 == 1 << 31)
    }

    @Test func rxCompletionRoundTripsEveryField() {
        let c = VMXNET3Descriptor.RxCompletion(
            descriptorIndex: 4095, ringID: 3, rssType: 2, rssHash: 0xDEAD_BEEF, length: 9018, error: true, vlanStripped: true,
            vlanTCI: 0x123, generation: 1)
        #expect(VMXNET3Descriptor.RxCompletion(dwords: c.dwords) == c)
        #expect(c.dwords.0 & (1 << 14 | 1 << 15) == 1 << 14 | 1 << 15)  // SOP and EOP
        #expect((c.dwords.3 >> 24) & 0x7F == 3)  // RXCOMP type
        #expect(VMXNET3Descriptor.rxDescriptorDword2(length: 2048, generation: 1) == 2048 | 1 << 31)
    }

    @Test func guestMemoryRejectsEveryOutOfRangeAccess() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
        defer { raw.deallocate() }
        let gm = GuestMemory(base: raw, size: 4096)
        #expect(gm.pointer(gpa: 0, length: 4096) != nil)
        #expect(gm.pointer(gpa: 4096, length: 0) != nil)
        #expect(gm.pointer(gpa: 4096, length: 1) == nil)
        #expect(gm.pointer(gpa: 1, length: 4096) == nil)
        #expect(gm.pointer(gpa: UInt64.max, length: 2) == nil)
        #expect(gm.pointer(gpa: 16, length: UInt64.max - 8) == nil)
        #expect(gm.loadU32(gpa: 4094) == nil)
        #expect(gm.loadU64(gpa: 4) == nil)  // misaligned
        #expect(gm.storeU64(gpa: 4088, 7))
        #expect(gm.loadU64(gpa: 4088) == 7)
    }

    @Test func flowHashKeepsAFlowTogetherAndSpreadsFlows() {
        var frame = [UInt8](repeating: 0, count: 64)
        frame[12] = 0x08; frame[13] = 0x00; frame[14] = 0x45; frame[23] = 17
        var queues = Set<UInt32>()
        for port in 0..<64 {
            frame[34] = UInt8(port)
            let h1 = frame.withUnsafeBytes { EthernetFrame.flowHash($0.baseAddress!, length: 64) }
            frame[50] = UInt8(port)  // payload bytes do not change the flow
            let h2 = frame.withUnsafeBytes { EthernetFrame.flowHash($0.baseAddress!, length: 64) }
            #expect(h1 == h2)
            queues.insert(h1 % 4)
        }
        #expect(queues.count == 4)
    }
}
