#!/usr/bin/env bash
# Installs the system tools the root-only network tests drive (ping, iperf3, ip, python3).
# Does nothing when they are all present; when not root it only says the install is skipped,
# so CI never fails here (the tests that need the tools skip themselves with a message).
set -euo pipefail
missing=()
for tool in ping iperf3 ip python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; not root, install skipped (the tests needing them skip)"
    exit 0
fi
echo "install-deps: installing for ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A mirror that cannot be reached must not fail the whole run: say so loudly, and the tests that
# need the tools skip with their own message.
if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends iputils-ping iperf3 iproute2 python3 >/dev/null; }; then
    echo "install-deps: apt-get failed; tests needing ${missing[*]} will skip" >&2
fi
