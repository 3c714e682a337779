#!/usr/bin/env bash
# Measures the emulated path between two guests (separate processes) for a frame size:
# one sender at full speed, one receiver; prints the receiver's verified throughput and the
# CPU seconds of host, sender and receiver. Usage: scripts/measure-emulated.sh [SIZE] [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1514}
COUNT=${2:-2000000}
swift build -c release --product npa >/dev/null
NPA=.build/release/npa
SOCK=$(mktemp -u /tmp/npa-measure-XXXX.sock)
$NPA host --socket "$SOCK" --log-level error &
HOST=$!
trap 'kill $HOST 2>/dev/null || true' EXIT
while [ ! -S "$SOCK" ]; do sleep 0.05; done
cpu() { awk '{print ($14+$15)/100}' /proc/$1/stat; }
H0=$(cpu $HOST)
exec 3< <($NPA guest recv --host "$SOCK" --name rx --mac 02:00:00:00:00:02 --count "$COUNT" --timeout 120 --json --until-eof < <(while kill -0 $HOST 2>/dev/null && [ ! -e "$SOCK.done" ]; do sleep 0.1; done))
$NPA guest send --host "$SOCK" --name tx --mac 02:00:00:00:00:01 --to 02:00:00:00:00:02 --count "$COUNT" --size "$SIZE" --flows 4 --wait-peer --json > "$SOCK.send"
touch "$SOCK.done"
RECV=$(cat <&3)
H1=$(cpu $HOST)
echo "send: $(cat "$SOCK.send")"
echo "recv: $RECV"
echo "host engine CPU seconds: $(echo "$H1 - $H0" | bc -l)"
rm -f "$SOCK.send" "$SOCK.done"
