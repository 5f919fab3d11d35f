#!/usr/bin/env bash
# The one build step of the Go module: build the static C ABI library (release) and put it inside
# the module, at go/lib/<GOOS>_<GOARCH>/libsidekick_ffi.a, where the package's cgo flags for that
# platform look (go/lib_<GOOS>_<GOARCH>.go). Run it from anywhere in a checkout:
#
#   bash ffi/scripts/build-go-lib.sh
#
# Needs cargo and a C compiler; Go only to name the platform (uname is used without it). The
# library is not committed: 31 MB for linux/amd64 without debug sections (43 MB as cargo leaves it)
# and it changes with every change to the engine (ffi/README.md, Go section). CARGO_TARGET_DIR is
# honoured; SIDEKICK_FFI_LIB_DIR names an already built library directory to copy from instead.
set -euo pipefail
# shellcheck source=ffi/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if command -v go >/dev/null 2>&1; then
    platform="$(go env GOOS)_$(go env GOARCH)"
else
    case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) platform=linux_amd64 ;;
    Linux/aarch64) platform=linux_arm64 ;;
    *) platform="$(uname -s)/$(uname -m)" ;;
    esac
fi
if [ ! -f "$FFI_DIR/go/lib_${platform}.go" ]; then
    echo "the Go module has no prebuilt-library slot for $platform (go/lib_${platform}.go);" \
        "supported: $(cd "$FFI_DIR/go" && ls lib_*.go | sed 's/^lib_//; s/\.go$//' | tr '\n' ' ')" >&2
    echo "elsewhere, build the library with cargo and link it with CGO_LDFLAGS=-L<dir>" >&2
    exit 1
fi

if [ -z "${SIDEKICK_FFI_LIB_DIR:-}" ]; then
    echo "cargo build --release -p sidekick-ffi --lib" >&2
    (cd "$FFI_DIR" && cargo build --release -p sidekick-ffi --lib)
fi
src="$(ffi_lib_dir)/libsidekick_ffi.a"
[ -f "$src" ] || { echo "no static library at $src" >&2; exit 1; }

dest_dir="$FFI_DIR/go/lib/$platform"
mkdir -p "$dest_dir"
# Written next to the destination, then renamed: a failed copy never leaves a truncated archive
# for the linker.
tmp="$(mktemp "$dest_dir/.libsidekick_ffi.a.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cp "$src" "$tmp"
# Debug sections are not needed to link and are most of the archive's size.
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$tmp"
fi
chmod 644 "$tmp"
mv -f "$tmp" "$dest_dir/libsidekick_ffi.a"
trap - EXIT
echo "$dest_dir/libsidekick_ffi.a ($(du -h "$dest_dir/libsidekick_ffi.a" | cut -f1))"
