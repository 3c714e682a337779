#!/usr/bin/env bash
# Builds the libFuzzer targets in FuzzTesting/ (address sanitizer + coverage) and runs them:
# first every regression input of the target (FuzzTesting/regressions/TARGET/, each replayed 8
# times, since the host is reused across inputs), then coverage-guided fuzzing from the seed
# corpus (FuzzTesting/corpus/TARGET/) into a working corpus under FuzzTesting/.build/.
#
#   scripts/fuzz.sh [TARGET ...] [--runs N | --seconds S] [--no-build] [--scratch-path DIR] [-- LIBFUZZER_FLAGS...]
#
# Targets: control-message host-config vmxnet3-registers vmxnet3-descriptors vf-dring vf-cq device-state tcp-segmentation tcp-coalescing
# migration-records plugin-elf plugin-bundle
# (default: all). --scratch-path builds somewhere other than FuzzTesting/.build (e.g. so that one
# checkout's fuzz build never touches another's). Default --seconds 30 per target. Prints
# executions, exec/s and coverage (cov: edges, ft: features) per target at the end; exits non-zero if any target crashed or
# violated an invariant (the input is saved under FuzzTesting/.build/crashes/: add it to
# FuzzTesting/regressions/TARGET/ once fixed).
set -euo pipefail
cd "$(dirname "$0")/../FuzzTesting"

all=(control-message host-config vmxnet3-registers vmxnet3-descriptors vf-dring vf-cq device-state tcp-segmentation tcp-coalescing
     migration-records plugin-elf plugin-bundle)
targets=() runs="" seconds=30 build=1 extra=() scratch=()
while (($#)); do
    case "$1" in
        --runs) runs="$2"; seconds=""; shift 2 ;;
        --seconds) seconds="$2"; runs=""; shift 2 ;;
        --no-build) build=0; shift ;;
        --scratch-path) scratch=(--scratch-path "$2"); shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) [[ " ${all[*]} " == *" $1 "* ]] || { echo "fuzz.sh: unknown target '$1' (known: ${all[*]})" >&2; exit 2; }
           targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${all[@]}")

if ((build)); then
    mkdir -p .build
    # --sanitize=fuzzer makes SwiftPM link libFuzzer's main; -Xswiftc -sanitize=fuzzer,address
    # (SwiftPM's own flags end in one -sanitize= per sanitizer, and the last one wins) instruments
    # every module for coverage and ASan; -enable-testing lets the harness reach internal hooks.
    if ! swift build "${scratch[@]}" -c release --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing \
        -Xcc -fsanitize=fuzzer-no-link,address > .build/build.log 2>&1; then
        grep -E 'error|warning: unre' .build/build.log | head -20; echo "fuzz.sh: build failed (FuzzTesting/.build/build.log)" >&2; exit 1
    fi
    grep -E '^Build' .build/build.log || true
fi
bin="$(swift build "${scratch[@]}" -c release --show-bin-path)"
export SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}"
mkdir -p .build/crashes .build/logs

summary=() failed=0
for t in "${targets[@]}"; do
    exe="$bin/fuzz-$t"
    [[ -x "$exe" ]] || { echo "fuzz.sh: $exe is not built" >&2; exit 1; }
    regressions=()
    for f in regressions/"$t"/*; do [[ -f "$f" ]] && regressions+=("$f"); done
    if ((${#regressions[@]})); then
        replay=(); for _ in 1 2 3 4 5 6 7 8; do replay+=("${regressions[@]}"); done
        if ! "$exe" "${replay[@]}" > ".build/logs/$t-regressions.log" 2>&1; then
            echo "== $t: a regression input fails again:"; grep -E "INVARIANT|ERROR|Running" ".build/logs/$t-regressions.log" | tail -5 || true
            summary+=("$(printf '%-20s REGRESSION FAILED (see FuzzTesting/.build/logs/%s-regressions.log)' "$t" "$t")")
            failed=1
            continue
        fi
    fi
    mkdir -p ".build/corpus/$t"
    # A plugin image (the seeds are real ones, 5 to 9 KiB) ends with its section headers: a
    # smaller cap would cut every seed before its symbol table.
    max_len=4096; [[ $t == plugin-elf ]] && max_len=16384
    limit=(); [[ -n "$runs" ]] && limit=(-runs="$runs"); [[ -n "$seconds" ]] && limit=(-max_total_time="$seconds")
    echo "== $t: ${#regressions[@]} regression input(s) pass; fuzzing (${limit[*]})"
    log=".build/logs/$t.log"
    status=0
    "$exe" "${limit[@]}" -print_final_stats=1 -artifact_prefix=".build/crashes/$t-" -max_len="$max_len" "${extra[@]}" \
        ".build/corpus/$t" "corpus/$t" > "$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' <<< "$last" | tail -1 || true); ft=$(grep -o 'ft: [0-9]*' <<< "$last" | tail -1 || true)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    if ((status)); then
        failed=1
        grep -E "INVARIANT|ERROR: AddressSanitizer|deadly signal|Test unit written" "$log" | head -4 || true
        summary+=("$(printf '%-20s CRASH after %s execs (%s, %s) — see FuzzTesting/%s' "$t" "${execs:-?}" "$cov" "$ft" "$log")")
    else
        summary+=("$(printf '%-20s %12s execs  %7s exec/s  %-10s %-10s corpus %s' "$t" "$execs" "$rate" "$cov" "$ft" "$(ls ".build/corpus/$t" | wc -l)")")
    fi
done
echo
echo "target               executions    rate       coverage"
printf '%s\n' "${summary[@]}"
exit $failed
