#!/usr/bin/env bash
# Emulated vs passthrough, side by side in one run: one sender process to one receiver process
# through a host process (release build), for one frame size. Reports the receiver's verified
# throughput and CPU seconds by role: guests (their threads), host ("npa-host" thread) and
# hardware ("npa-nic-*" threads). Usage: scripts/measure-modes.sh [SIZE] [COUNT] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1514}
COUNT=${2:-1000000}
RATE=${3:-}
swift build -c release --product npa >/dev/null
bash scripts/build-plugins.sh >/dev/null
NPA=.build/release/npa
RATE_ARG=()
[ -n "$RATE" ] && RATE_ARG=(--rate "$RATE")
thread_cpu() {  # pid, comm prefix -> seconds of CPU of that process's threads whose name starts so
    local total=0
    for t in /proc/$1/task/*; do
        if [[ "$(cat "$t/comm")" == $2* ]]; then
            total=$(awk -v s="$total" '{print s + ($14 + $15) / 100}' "$t/stat")
        fi
    done
    echo "$total"
}
for MODE in emulated passthrough; do
    SOCK=$(mktemp -u /tmp/npa-modes-XXXX.sock)
    CONF=$(mktemp /tmp/npa-modes-XXXX.yaml)
    AUTO=false
    [ "$MODE" = passthrough ] && AUTO=true
    printf 'uplink: nic0\nnics:\n  - { name: nic0, model: npa-dring, vfs: 4 }\nauto_passthrough: %s\nplugin_dir: %s\n' "$AUTO" "$PWD/.build/plugins" > "$CONF"
    $NPA host --socket "$SOCK" --config "$CONF" --log-level error &
    HOST=$!
    while [ ! -S "$SOCK" ]; do sleep 0.05; done
    exec 3< <($NPA guest recv --host "$SOCK" --name rx --mac 02:00:00:00:00:02 --count "$COUNT" --timeout 60 --json --until-eof < <(while [ ! -e "$SOCK.done" ]; do sleep 0.1; done))
    SEND=$($NPA guest send --host "$SOCK" --name tx --mac 02:00:00:00:00:01 --to 02:00:00:00:00:02 --count "$COUNT" --size "$SIZE" --flows 2 --wait-peer --json "${RATE_ARG[@]}" | tail -1)
    touch "$SOCK.done"
    RECV=$(cat <&3)
    HOSTCPU=$(thread_cpu $HOST npa-host)
    NICCPU=$(thread_cpu $HOST npa-nic)
    MODESTATUS=$($NPA status --host "$SOCK" --json 2>/dev/null | tr -d '\n ' || true)
    kill $HOST; wait $HOST 2>/dev/null || true
    rm -f "$SOCK.done" "$CONF"
    python3 - "$MODE" "$SEND" "$RECV" "$HOSTCPU" "$NICCPU" <<'PY'
import json, sys
mode, send, recv, host, nic = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3].splitlines()[-1]), float(sys.argv[4]), float(sys.argv[5])
guest = send["cpu_seconds"] + recv["cpu_seconds"]
frames = recv["received"]
print(f"{mode:12s} verified {frames} of {send['sent']} ({recv['mpps']:.3f} Mpps, {recv['gbps']:.2f} Gbit/s), drops {recv['dropped']}, "
      f"CPU s: guests {guest:.3f}, host {host:.2f}, hardware {nic:.2f}; guest+host CPU per Mframe {(guest + host) / max(frames, 1) * 1e6:.3f} s")
PY
done
