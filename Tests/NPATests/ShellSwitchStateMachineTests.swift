import NPAControlProtocol
import NPAShell
import Testing

/// The shell's switch state machine on its own: no sockets, no threads, plain values for what
/// its states own (an offer and a lease are strings, a drained path is a number).
@Suite struct ShellSwitchStateMachineTests {
    typealias Machine = ShellSwitchStateMachine<String, String, Int>

    static let onVF = Machine.Passthrough(lease: "vf")
    static let onVFFaultReported = Machine.Passthrough(lease: "vf", faultReported: true)
    static let destination = ControlMessage.MoveDestination(controlSocket: "/b.sock", token: MoveToken(bytes: Array(0..<16)))

    /// One sample of every state (both flavours where a state carries an optional VF).
    enum StateSample: CaseIterable, Sendable {
        case emulated, awaitingOfferEmulated, awaitingOfferOnVF, loadingPlugin, preparingVF, activatingVF
        case drainingEmulation, passthrough, passthroughFaultReported, rearmingEmulation, beginningSwitchOut
        case drainingVF, finishingSwitchOut, hostGoneEmulated, hostGoneOnVF, moving

        var state: Machine.State {
            switch self {
            case .emulated: .emulated
            case .awaitingOfferEmulated: .awaitingOffer(current: nil)
            case .awaitingOfferOnVF: .awaitingOffer(current: onVFFaultReported)
            case .loadingPlugin: .loadingPlugin
            case .preparingVF: .preparingVF("vf")
            case .activatingVF: .activatingVF("vf")
            case .drainingEmulation: .drainingEmulation("vf")
            case .passthrough: .passthrough(onVF)
            case .passthroughFaultReported: .passthrough(onVFFaultReported)
            case .rearmingEmulation: .rearmingEmulation(onVFFaultReported)
            case .beginningSwitchOut: .beginningSwitchOut(onVFFaultReported)
            case .drainingVF: .drainingVF("vf")
            case .finishingSwitchOut: .finishingSwitchOut
            case .hostGoneEmulated: .hostGone(nil)
            case .hostGoneOnVF: .hostGone(onVF)
            case .moving: .moving(destination)
            }
        }
    }

    /// Feeds `event` with fixed payloads: offer "offer", loaded lease "new", drained 7, reasons
    /// "why" (a failed step) and "dead" (a plugin fault).
    static func feed(_ event: ShellSwitchEvent, to machine: inout Machine) -> Result<Machine.Action, ShellSwitchRefusal> {
        do throws(ShellSwitchRefusal) {
            switch event {
            case .deviceImplementationChange: return .success(try machine.deviceImplementationChange())
            case .noChangeOffered: return .success(try machine.noChangeOffered())
            case .switchInOffered: return .success(try machine.switchInOffered("offer"))
            case .switchOutOffered: return .success(try machine.switchOutOffered())
            case .pluginLoaded: return .success(try machine.pluginLoaded("new"))
            case .vfPrepared: return .success(try machine.vfPrepared())
            case .vfActivated: return .success(try machine.vfActivated())
            case .emulationDrained: return .success(try machine.emulationDrained(7))
            case .emulationRearmed: return .success(try machine.emulationRearmed())
            case .switchOutBegun: return .success(try machine.switchOutBegun())
            case .vfDrained: return .success(try machine.vfDrained(7))
            case .switchOutDone: return .success(try machine.switchOutDone())
            case .stepFailed: return .success(try machine.stepFailed(reason: "why"))
            case .pluginFaulted: return .success(try machine.pluginFaulted(reason: "dead"))
            case .hostGone: return .success(try machine.hostGone())
            case .moveOffered: return .success(try machine.moveOffered(destination))
            case .moveCompleted: return .success(try machine.moveCompleted())
            }
        } catch {
            return .failure(error)
        }
    }

    /// Every legal (state, event) pair with the state it leads to and the action it asks for.
    /// Every pair not listed must be refused.
    static func expected(_ sample: StateSample, _ event: ShellSwitchEvent) -> (Machine.State, Machine.Action)? {
        switch (sample, event) {
        // DIC starts a switch from either stable state.
        case (.emulated, .deviceImplementationChange): (.awaitingOffer(current: nil), .acknowledgeAndQuery)
        case (.passthrough, .deviceImplementationChange): (.awaitingOffer(current: onVF), .acknowledgeAndQuery)
        case (.passthroughFaultReported, .deviceImplementationChange): (.awaitingOffer(current: onVFFaultReported), .acknowledgeAndQuery)
        // The host's answer.
        case (.awaitingOfferEmulated, .noChangeOffered): (.emulated, .stay)
        case (.awaitingOfferOnVF, .noChangeOffered): (.passthrough(onVFFaultReported), .stay)
        case (.awaitingOfferEmulated, .switchInOffered): (.loadingPlugin, .loadPlugin("offer"))
        case (.awaitingOfferOnVF, .switchOutOffered): (.rearmingEmulation(onVFFaultReported), .rearmEmulation)
        case (.awaitingOfferEmulated, .stepFailed): (.emulated, .recordFailure(reason: "why"))
        case (.awaitingOfferOnVF, .stepFailed): (.passthrough(onVFFaultReported), .recordFailure(reason: "why"))
        // Switch-in; until ACTIVATE_VF succeeds a failure goes back to emulation.
        case (.loadingPlugin, .pluginLoaded): (.preparingVF("new"), .prepareVF("new"))
        case (.loadingPlugin, .stepFailed): (.emulated, .abandonSwitchIn(reason: "why", cleanup: .nothing))
        case (.preparingVF, .vfPrepared): (.activatingVF("vf"), .activateVF("vf"))
        case (.preparingVF, .stepFailed): (.emulated, .abandonSwitchIn(reason: "why", cleanup: .reclaimPostedRxBuffers("vf")))
        case (.activatingVF, .vfActivated): (.drainingEmulation("vf"), .drainEmulation)
        case (.activatingVF, .stepFailed): (.emulated, .abandonSwitchIn(reason: "why", cleanup: .drainVF("vf")))
        case (.drainingEmulation, .emulationDrained): (.passthrough(onVF), .completeSwitchIn("vf", adopting: 7))
        // On the VF: a plugin fault is reported once.
        case (.passthrough, .pluginFaulted): (.passthrough(onVFFaultReported), .reportPluginFault(reason: "dead"))
        // Switch-out; until switchOutBegin succeeds a failure stays on the VF.
        case (.rearmingEmulation, .emulationRearmed): (.beginningSwitchOut(onVFFaultReported), .beginSwitchOut)
        case (.rearmingEmulation, .stepFailed): (.passthrough(onVFFaultReported), .recordFailure(reason: "why"))
        case (.beginningSwitchOut, .switchOutBegun): (.drainingVF("vf"), .drainVF("vf"))
        case (.beginningSwitchOut, .stepFailed): (.passthrough(onVFFaultReported), .recordFailure(reason: "why"))
        case (.drainingVF, .vfDrained): (.finishingSwitchOut, .finishSwitchOut(adopting: 7, releasing: "vf"))
        case (.finishingSwitchOut, .switchOutDone): (.emulated, .completeSwitchOut)
        case (.finishingSwitchOut, .stepFailed): (.emulated, .recordFailure(reason: "why"))
        // A move to another host: only an emulated guest takes one; a failure stays on the source.
        case (.awaitingOfferEmulated, .moveOffered): (.moving(destination), .moveToHost(destination))
        case (.moving, .moveCompleted): (.emulated, .completeMove)
        case (.moving, .stepFailed): (.emulated, .abandonMove(reason: "why"))
        // The host's hang-up, between switches.
        case (.emulated, .hostGone): (.hostGone(nil), .none)
        case (.passthrough, .hostGone): (.hostGone(onVF), .none)
        case (.passthroughFaultReported, .hostGone): (.hostGone(onVFFaultReported), .none)
        default: nil
        }
    }

    @Test(arguments: StateSample.allCases, ShellSwitchEvent.allCases)
    func everyEventInEveryStateIsTakenOrRefused(_ sample: StateSample, _ event: ShellSwitchEvent) {
        var machine = Machine(state: sample.state)
        let name = machine.stateName
        let result = Self.feed(event, to: &machine)
        if let (next, action) = Self.expected(sample, event) {
            #expect(result == .success(action))
            #expect(machine.state == next)
        } else {
            #expect(result == .failure(ShellSwitchRefusal(event: event, state: name)))
            #expect(machine.state == sample.state, "a refused event must leave the state as it was")
        }
    }

    @Test func onlyTheHostsHangUpEndsTheMachine() {
        for sample in StateSample.allCases {
            let legal = ShellSwitchEvent.allCases.filter { Self.expected(sample, $0) != nil }
            switch sample {
            case .hostGoneEmulated, .hostGoneOnVF: #expect(legal.isEmpty)
            default: #expect(!legal.isEmpty, "\(sample) has no way out")
            }
        }
    }

    @Test func theDataPathFlipsOnlyWhenASwitchCompletes() {
        var machine = Machine()
        var onVF: [String?] = []
        func step(_ event: ShellSwitchEvent) {
            _ = Self.feed(event, to: &machine)
            onVF.append(machine.dataPathLease)
        }
        for e: ShellSwitchEvent in [
            .deviceImplementationChange, .switchInOffered, .pluginLoaded, .vfPrepared, .vfActivated, .emulationDrained,
        ] { step(e) }
        #expect(onVF == [nil, nil, nil, nil, nil, "new"])
        #expect(machine.stateName == .passthrough)
        onVF = []
        for e: ShellSwitchEvent in [
            .deviceImplementationChange, .switchOutOffered, .emulationRearmed, .switchOutBegun, .vfDrained, .switchOutDone,
        ] { step(e) }
        // The VF path carries the data until it is drained into emulation.
        #expect(onVF == ["new", "new", "new", "new", nil, nil])
        #expect(machine.state == .emulated)
    }

    /// What the shell does with an offer that does not fit: the refusal leaves the state, and
    /// reporting the step as failed ends the switch where the guest was.
    @Test func aSwitchInOfferedOnAVFIsRefusedAndTheGuestStaysOnItsVF() {
        var machine = Machine(state: .passthrough(Self.onVF))
        #expect(throws: Never.self) { try machine.deviceImplementationChange() }
        #expect(throws: ShellSwitchRefusal(event: .switchInOffered, state: .awaitingOffer)) { try machine.switchInOffered("offer") }
        #expect(machine.state == .awaitingOffer(current: Self.onVF))
        #expect(Self.feed(.stepFailed, to: &machine) == .success(.recordFailure(reason: "why")))
        #expect(machine.state == .passthrough(Self.onVF))
    }

    @Test func aPluginFaultIsReportedOnceAndTheMarkSurvivesAFailedSwitchOut() {
        var machine = Machine(state: .passthrough(Self.onVF))
        #expect(machine.mayReportPluginFault)
        #expect(Self.feed(.pluginFaulted, to: &machine) == .success(.reportPluginFault(reason: "dead")))
        #expect(!machine.mayReportPluginFault)
        #expect(Self.feed(.pluginFaulted, to: &machine) == .failure(ShellSwitchRefusal(event: .pluginFaulted, state: .passthrough)))
        for e: ShellSwitchEvent in [.deviceImplementationChange, .switchOutOffered, .stepFailed] { _ = Self.feed(e, to: &machine) }
        #expect(machine.state == .passthrough(Self.onVFFaultReported))
        #expect(!machine.mayReportPluginFault)
    }
}
