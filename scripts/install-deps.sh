#!/usr/bin/env bash
# Installs the system tools the root-only tests drive (ping, iperf3, ip, python3, tshark and
# tcpdump reading captures, python3's prometheus_client parsing /metrics).
# Does nothing when they are all present; when not root it only says the install is skipped,
# so CI never fails here (the tests that need the tools skip themselves with a message).
set -euo pipefail
missing=()
for tool in ping iperf3 ip python3 tshark tcpdump; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# Debian's package lands in /usr/bin/python3's path (a pyenv python3 first on PATH does not see it).
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || missing+=("prometheus_client")
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; not root, install skipped (the tests needing them skip)"
    exit 0
fi
echo "install-deps: installing for ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A mirror that cannot be reached must not fail the whole run: say so loudly, and the tests that
# need the tools skip with their own message.
if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends iputils-ping iperf3 iproute2 python3 \
    tshark tcpdump python3-prometheus-client >/dev/null; }; then
    echo "install-deps: apt-get failed; tests needing ${missing[*]} will skip" >&2
fi
