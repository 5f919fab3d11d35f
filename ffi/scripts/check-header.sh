#!/usr/bin/env bash
# Fail (exit 1) when include/sidekick.h, or its copy in the Go module (go/sidekick.h), is not what
# the pinned cbindgen generates from the sources: the committed headers must never drift from the
# code. Fix with scripts/gen-header.sh.
set -euo pipefail
# shellcheck source=ffi/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
generate_header "$tmp/sidekick.h"
rc=0
for committed in include/sidekick.h go/sidekick.h; do
    if ! diff -u "$FFI_DIR/$committed" "$tmp/sidekick.h"; then
        echo "$committed is stale: run ffi/scripts/gen-header.sh and commit the result" >&2
        rc=1
    fi
done
[ "$rc" -eq 0 ] && echo "include/sidekick.h and go/sidekick.h are up to date (cbindgen $CBINDGEN_VERSION)"
exit "$rc"
