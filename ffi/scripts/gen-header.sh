#!/usr/bin/env bash
# Regenerate include/sidekick.h from the Rust sources with the pinned cbindgen (installed if
# missing). Commit the result: CI fails when the committed header differs (check-header.sh).
set -euo pipefail
# shellcheck source=ffi/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
generate_header "$FFI_DIR/include/sidekick.h"
echo "wrote $FFI_DIR/include/sidekick.h"
