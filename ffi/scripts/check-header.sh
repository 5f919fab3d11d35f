#!/usr/bin/env bash
# Fail (exit 1) when include/sidekick.h is not what the pinned cbindgen generates from the sources:
# the committed header must never drift from the code. Fix with scripts/gen-header.sh.
set -euo pipefail
# shellcheck source=ffi/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
generate_header "$tmp/sidekick.h"
if ! diff -u "$FFI_DIR/include/sidekick.h" "$tmp/sidekick.h"; then
    echo "include/sidekick.h is stale: run ffi/scripts/gen-header.sh and commit the result" >&2
    exit 1
fi
echo "include/sidekick.h is up to date (cbindgen $CBINDGEN_VERSION)"
