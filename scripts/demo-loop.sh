#!/usr/bin/env bash
# Runs `npa demo` N times (default 100) and says how many runs lost anything, how many failed,
# and the slowest run. The proof that the demo loses nothing and never stalls:
#   scripts/demo-loop.sh 100 [extra demo options, e.g. --no-switch]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-100}
shift || true
swift build -c release --product npa >/dev/null
bash scripts/build-plugins.sh >/dev/null
NPA=.build/release/npa
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
failed=0
slowest=0
for i in $(seq 1 "$RUNS"); do
    start=$(date +%s%N)
    status=0
    "$NPA" demo --json "$@" >"$OUT/run.json" 2>"$OUT/run.err" || status=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    (( ms > slowest )) && slowest=$ms
    if [ "$status" != 0 ]; then
        failed=$((failed + 1))
        echo "run $i: exit $status after ${ms} ms: $(tail -1 "$OUT/run.err")"
    fi
done
echo "npa demo $*: $RUNS runs, $failed not verified or failed, slowest ${slowest} ms"
[ "$failed" = 0 ]
