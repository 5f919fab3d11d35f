# Shared by the ffi scripts (sourced, not run). Sets FFI_DIR and defines:
#   ensure_cbindgen  - installs the pinned cbindgen with cargo when it is missing or another version
#   ffi_target_dir   - the Cargo target directory of the ffi crate (standalone or workspace member)
#   ffi_lib_dir      - where the release libsidekick_ffi.{so,a} are: $SIDEKICK_FFI_LIB_DIR if set,
#                      else <target dir>/release

FFI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CBINDGEN_VERSION=0.29.4

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

ensure_cbindgen() {
    if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
        echo "installing cbindgen $CBINDGEN_VERSION (cargo install --locked)" >&2
        cargo install cbindgen --version "$CBINDGEN_VERSION" --locked >&2
    fi
}

ffi_target_dir() {
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        echo "$CARGO_TARGET_DIR"
        return
    fi
    (cd "$FFI_DIR" && cargo metadata --format-version 1 --no-deps) |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

ffi_lib_dir() {
    if [ -n "${SIDEKICK_FFI_LIB_DIR:-}" ]; then
        echo "$SIDEKICK_FFI_LIB_DIR"
    else
        echo "$(ffi_target_dir)/release"
    fi
}

# cbindgen --crate sidekick-ffi, writing the header to $1.
generate_header() {
    ensure_cbindgen
    (cd "$FFI_DIR" && cbindgen --quiet --config cbindgen.toml --crate sidekick-ffi --output "$1")
}
