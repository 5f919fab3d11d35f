#!/usr/bin/env bash
# Regenerate include/sidekick.h from the Rust sources with the pinned cbindgen (installed if
# missing), and its copy in the Go module (go/sidekick.h: a module fetched with `go get` holds only
# go/). Commit both: CI fails when a committed header differs (check-header.sh).
set -euo pipefail
# shellcheck source=ffi/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
generate_header "$FFI_DIR/include/sidekick.h"
cp "$FFI_DIR/include/sidekick.h" "$FFI_DIR/go/sidekick.h"
echo "wrote $FFI_DIR/include/sidekick.h and $FFI_DIR/go/sidekick.h"
