#!/usr/bin/env bash
# Builds each vendor plugin into a freestanding, position-independent image:
#   .build/plugins/npa-<dir>.so
# Plugins/<dir>/*.c is built with clang, each C file to its own object, then linked together (as
# `npa plugin build` does); Plugins/<dir>/*.swift with Embedded Swift. An image may call no OS
# function: its only undefined symbols may be memset, memcpy, memmove (checked here and by the
# tests), and it exports only npa_plugin_main.
# Usage: scripts/build-plugins.sh [OUT [PLUGINS]] (PLUGINS: the directory of plugin directories,
# default Plugins; relative paths are from the repository's root)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-.build/plugins}
PLUGINS=${2:-Plugins}
mkdir -p "$OUT"
CC=${CC:-$(command -v clang || echo /opt/swift/usr/bin/clang)}
SWIFTC=${SWIFTC:-$(command -v swiftc || echo /opt/swift/usr/bin/swiftc)}
ALLOWED="memset memcpy memmove"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo '{ global: npa_plugin_main; local: *; };' > "$WORK/exports.map"
# Embedded Swift imports the ABI headers through this module map.
cat > "$WORK/module.modulemap" <<MAP
module CNPAPluginABI {
    header "$ROOT/Sources/CNPAPluginABI/include/npa_plugin_abi.h"
    header "$ROOT/Sources/CNPAPluginABI/include/npa_nic_models.h"
    header "$ROOT/Sources/CNPAPluginABI/include/npa_plugin_atomics.h"
    header "$ROOT/Sources/CNPAPluginABI/include/npa_plugin_support.h"
    export *
}
MAP
LINK=(-shared -nostdlib -Wl,--gc-sections -Wl,--version-script="$WORK/exports.map" -Wl,-z,norelro)
for dir in "$PLUGINS"/*/; do
    name=$(basename "$dir")
    image="$OUT/npa-$name.so"
    if ls "$dir"*.swift >/dev/null 2>&1; then
        "$SWIFTC" -enable-experimental-feature Embedded -wmo -parse-as-library -O -Xcc -fPIC \
            -Xfrontend -function-sections -Xfrontend -disable-stack-protector \
            -I "$WORK" -module-name "plugin_${name//-/_}" -c "$dir"*.swift -o "$WORK/$name.o"
    else
        # clang -c takes one source with -o: each C file gets its own object, and the objects
        # are joined into one (-r) before the image is linked.
        objects=()
        for source in "$dir"*.c; do
            object="$WORK/$name-$(basename "$source" .c).o"
            "$CC" -O2 -fPIC -ffreestanding -fno-builtin -fno-stack-protector -ffunction-sections \
                -fvisibility=hidden -I Sources/CNPAPluginABI/include -c "$source" -o "$object"
            objects+=("$object")
        done
        "$CC" -r -nostdlib -o "$WORK/$name.o" "${objects[@]}"
    fi
    "$CC" "${LINK[@]}" -o "$image" "$WORK/$name.o"
    for sym in $(nm -D --undefined-only "$image" | awk '{print $2}'); do
        case " $ALLOWED " in
            *" $sym "*) ;;
            *) echo "error: $image needs '$sym', which a plugin may not use" >&2; exit 1 ;;
        esac
    done
    echo "built $image ($(stat -c %s "$image") bytes)"
done
