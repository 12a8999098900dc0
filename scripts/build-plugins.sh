#!/usr/bin/env bash
# Builds dinoflow's WebAssembly guest filter plugins (design.md §6, toolchain.md "Building
# WebAssembly guests here").
#
#   scripts/build-plugins.sh         every guest of the plugins/filters workspace
#   scripts/build-plugins.sh DIR     one guest crate (a member of plugins/filters, or a standalone
#                                    crate such as one made by `dinoflow plugin new NAME`)
#
# Each result is a core wasm module carrying its component type (the host turns it into a component
# with wit-component), copied to plugins/filters/dist/<crate_name>.wasm (dashes become underscores).
# Cargo's target folder is plugins/filters/target. Override either with DINOFLOW_PLUGIN_DIST /
# DINOFLOW_PLUGIN_TARGET_DIR.
#
# Toolchain: rustup's standard `wasm32-unknown-unknown` target when it is installed; otherwise
# Debian's rustc-web/cargo-web/rust-web-src, which build the standard library from source
# (-Zbuild-std) and link with rust-lld. This script installs nothing.
#
# The modules are built with the `simd128` target feature (wasmtime enables wasm SIMD by default),
# so that the filters' loops over columns vectorise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILTERS="$ROOT/plugins/filters"
TARGET_DIR="${DINOFLOW_PLUGIN_TARGET_DIR:-$FILTERS/target}"
DIST="${DINOFLOW_PLUGIN_DIST:-$FILTERS/dist}"
TRIPLE=wasm32-unknown-unknown

die() {
    echo "build-plugins: error: $*" >&2
    exit 1
}

usage() {
    sed -n '5,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# The library name cargo gives a crate's artifact: [lib] name, else [package] name, dashes as
# underscores.
crate_name() {
    awk '
        /^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]]/, "", section) }
        /^[[:space:]]*name[[:space:]]*=/ {
            value = $0
            sub(/^[^=]*=[[:space:]]*"/, "", value)
            sub(/".*$/, "", value)
            if (section == "[package]" && pkg == "") pkg = value
            if (section == "[lib]" && lib == "") lib = value
        }
        END { name = (lib != "" ? lib : pkg); gsub(/-/, "_", name); print name }
    ' "$1/Cargo.toml"
}

package_name() {
    awk '
        /^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]]/, "", section) }
        section == "[package]" && /^[[:space:]]*name[[:space:]]*=/ {
            value = $0; sub(/^[^=]*=[[:space:]]*"/, "", value); sub(/".*$/, "", value)
            print value; exit
        }
    ' "$1/Cargo.toml"
}

is_guest() {
    [[ -f "$1/Cargo.toml" ]] && grep -Eq '^[[:space:]]*crate-type[[:space:]]*=.*"cdylib"' "$1/Cargo.toml"
}

# ---- arguments -----------------------------------------------------------------------------------
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

GUESTS=()
if [[ $# -eq 1 ]]; then
    [[ -f "$1/Cargo.toml" ]] || die "$1 has no Cargo.toml"
    DIR=$(cd "$1" && pwd)
    is_guest "$DIR" || die "$DIR is not a guest crate (its Cargo.toml has no crate-type = [\"cdylib\"])"
    GUESTS=("$DIR")
    MANIFEST="$DIR/Cargo.toml"
    SCOPE=()
else
    DIR="$FILTERS"
    for d in "$FILTERS"/*/; do
        d=${d%/}
        [[ $(basename "$d") == template ]] && continue
        is_guest "$d" && GUESTS+=("$d")
    done
    [[ ${#GUESTS[@]} -gt 0 ]] || die "no guest crates under $FILTERS"
    MANIFEST="$FILTERS/Cargo.toml"
    SCOPE=(--workspace)
fi

# ---- toolchain -----------------------------------------------------------------------------------
cd "$DIR"
CARGO_ARGS=(build --release --target "$TRIPLE" --manifest-path "$MANIFEST" --target-dir "$TARGET_DIR" "${SCOPE[@]}")
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS:--C target-feature=+simd128}"

installed=""
if command -v rustup >/dev/null 2>&1; then
    installed=$(rustup target list --installed 2>/dev/null || true)
fi

if grep -qx "$TRIPLE" <<<"$installed"; then
    echo "build-plugins: rustup's $TRIPLE target ($(rustc --version))" >&2
    BUILD=(cargo "${CARGO_ARGS[@]}")
else
    # Debian's rustc-web: the standard library is built from rust-web-src.
    [[ -x /usr/bin/cargo && -x /usr/bin/rustc ]] ||
        die "neither rustup's $TRIPLE target nor Debian's rustc-web/cargo-web is installed: run scripts/setup.sh"
    [[ -f "$(/usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library/Cargo.lock" ]] ||
        die "Debian's rust-web-src (the standard library's source) is missing: run scripts/setup.sh"
    # rust-lld: rustup's (computed with the rustc first on PATH, before /usr/bin goes first), else
    # one on PATH.
    LLD=""
    if command -v rustc >/dev/null 2>&1; then
        host=$(rustc -vV | sed -n 's/^host: //p')
        cand="$(rustc --print sysroot)/lib/rustlib/$host/bin/rust-lld"
        [[ -x "$cand" ]] && LLD=$cand
    fi
    if [[ -z "$LLD" ]]; then
        for cand in rust-lld wasm-ld; do
            cand=$(command -v "$cand" || true)
            if [[ -n "$cand" && -x "$cand" ]]; then
                LLD=$cand
                break
            fi
        done
    fi
    [[ -n "$LLD" ]] || die "no rust-lld or wasm-ld linker found: run scripts/setup.sh"
    echo "build-plugins: Debian's $(/usr/bin/rustc --version | cut -d' ' -f1-2) with -Zbuild-std, linker $LLD" >&2
    BUILD=(env "PATH=/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=$LLD"
        /usr/bin/cargo "${CARGO_ARGS[@]}" -Zbuild-std=std,panic_abort)
fi

# ---- build and copy ------------------------------------------------------------------------------
"${BUILD[@]}"

mkdir -p "$DIST"
for g in "${GUESTS[@]}"; do
    name=$(crate_name "$g")
    [[ -n "$name" ]] || die "no package name in $g/Cargo.toml"
    out="$TARGET_DIR/$TRIPLE/release/$name.wasm"
    [[ -f "$out" ]] || die "$out was not built (is $(basename "$g") a member of $MANIFEST?)"
    dest="$DIST/$name.wasm"
    cp -f "$out" "$dest.tmp"
    mv -f "$dest.tmp" "$dest"
    size=$(wc -c <"$dest")
    printf '%-16s %8d bytes  %s\n' "$(package_name "$g")" "$size" "${dest#"$ROOT"/}"
done
