#!/usr/bin/env bash
# Builds each vendor plugin into a freestanding, position-independent image:
#   .build/plugins/<name>.so
# An image may call no OS function: its only undefined symbols may be memset, memcpy, memmove
# (checked here and by the tests). Usage: scripts/build-plugins.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.build/plugins}
mkdir -p "$OUT"
CC=${CC:-$(command -v clang || echo /opt/swift/usr/bin/clang)}
ALLOWED="memset memcpy memmove"
for dir in Plugins/*/; do
    name=$(basename "$dir")
    src=$(ls "$dir"*.c | head -1)
    image="$OUT/npa-$name.so"
    "$CC" -O2 -fPIC -ffreestanding -fno-builtin -fno-stack-protector -fvisibility=hidden \
        -nostdlib -shared -Wl,--no-undefined-version -Wl,-z,norelro \
        -I Sources/CNPAPluginABI/include -o "$image" "$src"
    for sym in $(nm -D --undefined-only "$image" | awk '{print $2}'); do
        case " $ALLOWED " in
            *" $sym "*) ;;
            *) echo "error: $image needs '$sym', which a plugin may not use" >&2; exit 1 ;;
        esac
    done
    echo "built $image ($(stat -c %s "$image") bytes)"
done
