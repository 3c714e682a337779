import NPAControlProtocol

/// Checkpoint and restore of one vNIC on this host: the device is stopped, saved, encoded,
/// decoded (as strictly as a migration stream from another host would be) and restored into a
/// new `EmulatedDevice` on the same guest memory, doorbell, interrupt eventfds, register page and
/// vswitch port, which then takes the old one's place everywhere the host refers to it.
///
/// The seam migration builds on: there the bytes go to another host. Runs on the host's thread
/// between data-path passes, so no pass sees the device half-swapped.
extension HostDaemon {
    /// Why a checkpoint was refused. A refusal changes nothing: the device carries on.
    enum CheckpointRefusal: Error, CustomStringConvertible {
        case noSuchDevice(String)
        /// Only an emulated vNIC with no switch under way is saved (the VF's state is not device
        /// emulation's); migration switches out first.
        case switchingState(String)
        case state(DeviceStateError)

        var description: String {
            switch self {
            case .noSuchDevice(let name): "no vNIC named '\(name)'"
            case .switchingState(let reason): "cannot checkpoint: \(reason)"
            case .state(let error): "checkpoint failed: \(error)"
            }
        }
    }

    /// Checkpoints the vNIC of guest `name` and swaps in the restored device. Returns it.
    @discardableResult
    func checkpointAndRestore(named name: String) throws(CheckpointRefusal) -> EmulatedDevice {
        guard let device = dataPath.device(named: name) else { throw .noSuchDevice(name) }
        return try checkpointAndRestore(device)
    }

    @discardableResult
    func checkpointAndRestore(_ device: EmulatedDevice) throws(CheckpointRefusal) -> EmulatedDevice {
        guard dataPath.devices.contains(where: { $0 === device }) else { throw .noSuchDevice(device.name) }
        if let reason = unsavableReason(device) { throw .switchingState(reason) }
        guard server.departures[device.name] == nil else { throw .switchingState("vNIC '\(device.name)' is leaving this host") }
        device.stop()
        let restored: EmulatedDevice
        do {
            let saved = device.save()
            try saved.validate()
            let decoded = try DeviceState(decoding: saved.encoded())
            restored = try EmulatedDevice(
                restoring: decoded, handles: device.handles, policy: server.policies.policy(forGuest: decoded.name),
                maxQueues: configuration.maxQueuesPerVNIC, vswitch: dataPath.vswitch, admission: admission, logger: logger)
        } catch {
            device.resume()
            logger.warning("checkpoint of vNIC '\(device.name)' refused: \(error)")
            throw .state(error)
        }
        // Host tuning, this host's switch history and a running capture are not device state: they stay here.
        restored.receiverStallLimitNanoseconds = device.receiverStallLimitNanoseconds
        restored.switchStallLimitNanoseconds = device.switchStallLimitNanoseconds
        restored.switching = device.switching
        restored.events = device.events
        restored.setCapture(device.capture)
        dataPath.replace(device, with: restored)
        server.rebind(device, to: restored)
        logger.info("vNIC '\(device.name)' checkpointed and restored")
        return restored
    }
}

extension HostDaemon {
    /// Why `device` cannot be saved now, nil if it can: only an emulated vNIC with no switch
    /// under way is (the VF's state is not device emulation's). Checkpoints and departures ask.
    func unsavableReason(_ device: EmulatedDevice) -> String? {
        if device.switching.isPassthrough { return "vNIC '\(device.name)' is in passthrough" }
        if device.switching.state != .emulated || device.awaitingSwitchOut { return "vNIC '\(device.name)' has a switch under way" }
        return nil
    }
}
