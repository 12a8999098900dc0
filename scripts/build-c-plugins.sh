#!/usr/bin/env bash
# Builds dinoflow's WebAssembly guest filter plugins written in C (plugins/filters-c/<name>/*.c):
# proof that the filter contract (plugins/wit/filter.wit) is language-neutral.
#
#   scripts/build-c-plugins.sh        every filter under plugins/filters-c (one folder each)
#   scripts/build-c-plugins.sh NAME   one of them, e.g. `grey`
#
# For each filter: `wit-bindgen c` writes the bindings (filter.h, filter.c, filter_component_type.o)
# into plugins/filters-c/target/<name>/ (generated code is never committed), clang compiles the
# filter's .c files and the bindings for wasm32-wasi, and wasm-ld links them with wasi-libc's libc.a
# (malloc/free and string functions only) into a core module with no entry point that carries the
# component type; it goes to plugins/filters-c/dist/<name>.wasm. The dinoflow host turns such a
# module into a component, and refuses it if it imports anything: this script checks that too.
#
# Toolchain: clang and wasm-ld (Debian's `clang`, `lld`), wasi-libc (Debian's `wasi-libc`, or a
# WASI sysroot named by WASI_SYSROOT, e.g. wasi-sdk's share/wasi-sysroot), python3, and wit-bindgen
# 0.63 in .tools/bin (installed there with `cargo install --locked` when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/plugins/filters-c"
TARGET="$SRC/target"
DIST="$SRC/dist"
WIT="$ROOT/plugins/wit"
WORLD=filter
TOOLS="$ROOT/.tools"
WIT_BINDGEN_VERSION=0.63.0

die() {
    echo "build-c-plugins: error: $*" >&2
    exit 1
}

usage() {
    sed -n '5,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
esac
[[ $# -le 1 ]] || {
    usage >&2
    exit 2
}

# ---- toolchain -----------------------------------------------------------------------------------
first_of() {
    local c
    for c in "$@"; do
        if command -v "$c" >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

CC=${CC_WASM:-$(first_of clang clang-14 || true)}
[[ -n "$CC" ]] || die "clang is missing (Debian packages clang, lld, wasi-libc): run scripts/setup.sh"
LD=${LD_WASM:-$(first_of wasm-ld wasm-ld-14 || true)}
[[ -n "$LD" ]] || die "wasm-ld is missing (Debian package lld): run scripts/setup.sh"
command -v python3 >/dev/null 2>&1 || die "python3 is missing: run scripts/setup.sh"

# wasi-libc: Debian splits it into /usr/include/wasm32-wasi and /usr/lib/wasm32-wasi (clang finds
# the headers by itself); a wasi-sdk style sysroot has include/ and lib/wasm32-wasi below it.
if [[ -n "${WASI_SYSROOT:-}" ]]; then
    SYSROOT_FLAGS=(--sysroot="$WASI_SYSROOT")
    LIBC_DIR="$WASI_SYSROOT/lib/wasm32-wasi"
else
    SYSROOT_FLAGS=()
    LIBC_DIR=/usr/lib/wasm32-wasi
fi
[[ -f "$LIBC_DIR/libc.a" ]] ||
    die "wasi-libc is missing ($LIBC_DIR/libc.a; Debian package wasi-libc, or set WASI_SYSROOT): run scripts/setup.sh"

WIT_BINDGEN="$TOOLS/bin/wit-bindgen"
if [[ ! -x "$WIT_BINDGEN" ]]; then
    command -v cargo >/dev/null 2>&1 || die "cargo is missing, needed to install wit-bindgen: run scripts/setup.sh"
    echo "build-c-plugins: installing wit-bindgen-cli $WIT_BINDGEN_VERSION into ${TOOLS#"$ROOT"/} (a few minutes, once)" >&2
    cargo install wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --locked \
        --no-default-features --features c --root "$TOOLS" ||
        die "cargo install wit-bindgen-cli failed"
fi
have=$("$WIT_BINDGEN" --version | awk '{print $2}')
[[ "$have" == "$WIT_BINDGEN_VERSION" ]] ||
    echo "build-c-plugins: warning: $WIT_BINDGEN is version $have, expected $WIT_BINDGEN_VERSION" >&2

echo "build-c-plugins: $("$CC" --version | head -1), $("$LD" --version | head -1), wit-bindgen $have" >&2

# ---- which filters -------------------------------------------------------------------------------
FILTERS=()
if [[ $# -eq 1 ]]; then
    name=${1%/}
    name=${name##*/}
    [[ -d "$SRC/$name" ]] || die "no filter folder $SRC/$name"
    FILTERS=("$name")
else
    for d in "$SRC"/*/; do
        d=${d%/}
        name=${d##*/}
        [[ $name == target || $name == dist ]] && continue
        compgen -G "$d/*.c" >/dev/null && FILTERS+=("$name")
    done
    [[ ${#FILTERS[@]} -gt 0 ]] || die "no C filters under $SRC"
fi

# Fails unless the core module at $1 has an empty import section (section id 2) and exports the
# world's functions and memory.
check_module() {
    python3 - "$1" <<'EOF'
import sys

path = sys.argv[1]
data = open(path, "rb").read()
if data[:8] != b"\0asm\x01\0\0\0":
    sys.exit(f"{path}: not a core wasm module")

def leb(i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i

def name(i):
    n, i = leb(i)
    return data[i:i + n].decode(), i + n

i, imports, exports, custom = 8, [], [], []
while i < len(data):
    sid = data[i]
    size, i = leb(i + 1)
    end = i + size
    if sid == 0:
        custom.append(name(i)[0])
    elif sid == 2:
        count, j = leb(i)
        for _ in range(count):
            module, j = name(j)
            field, j = name(j)
            imports.append(f"{module}::{field}")
            break  # the first one is enough to refuse the module
    elif sid == 7:
        count, j = leb(i)
        for _ in range(count):
            export, j = name(j)
            j += 1  # kind
            _, j = leb(j)
            exports.append(export)
    i = end

if imports:
    sys.exit(f"{path}: imports {imports[0]}; filter plugins may import nothing (was stdio or another WASI call linked in?)")
missing = [e for e in ("memory", "cabi_realloc", "describe", "configure", "filter") if e not in exports]
if missing:
    sys.exit(f"{path}: does not export {', '.join(missing)}")
if not any(c.startswith("component-type") for c in custom):
    sys.exit(f"{path}: has no component-type custom section")
EOF
}

# ---- build ---------------------------------------------------------------------------------------
CFLAGS=(--target=wasm32-wasi "${SYSROOT_FLAGS[@]}" -O2 -msimd128 -std=c11 -Wall -Wextra
    -ffunction-sections -fdata-sections)
# No entry point (the world's functions are the exports, named by the bindings' export_name
# attributes), no WASI start files; the stack first so that an overflow traps.
LDFLAGS=(--no-entry --gc-sections --stack-first -z stack-size=65536 --strip-debug)

mkdir -p "$DIST"
for name in "${FILTERS[@]}"; do
    gen="$TARGET/$name/bindings"
    obj="$TARGET/$name/obj"
    rm -rf "$gen" "$obj"
    mkdir -p "$gen" "$obj"
    if ! log=$("$WIT_BINDGEN" c "$WIT" --world "$WORLD" --out-dir "$gen" 2>&1); then
        echo "$log" >&2
        die "wit-bindgen c failed for $name"
    fi

    # The generated code is compiled without -Werror (another wit-bindgen may warn); ours with it.
    "$CC" "${CFLAGS[@]}" -I"$gen" -c "$gen/$WORLD.c" -o "$obj/bindings.o"
    objects=("$obj/bindings.o" "$gen/${WORLD}_component_type.o")
    for c in "$SRC/$name"/*.c; do
        o="$obj/src-$(basename "${c%.c}").o"
        "$CC" "${CFLAGS[@]}" -Werror -I"$gen" -I"$SRC/$name" -c "$c" -o "$o"
        objects+=("$o")
    done

    out="$TARGET/$name/$name.wasm"
    "$LD" "${LDFLAGS[@]}" -o "$out" "${objects[@]}" -L"$LIBC_DIR" -lc
    check_module "$out"

    dest="$DIST/$name.wasm"
    cp -f "$out" "$dest.tmp"
    mv -f "$dest.tmp" "$dest"
    size=$(wc -c <"$dest")
    printf '%-16s %8d bytes  %s\n' "$name" "$size" "${dest#"$ROOT"/}"
done
