#!/usr/bin/env bash
# The Python bindings' whole check, on a fresh Debian machine with Python >= 3.9, pip and cargo:
#
#   bash python/test.sh            # build + install with pip, pytest, benchmark
#   bash python/test.sh -k fork    # extra arguments go to pytest
#
# 1. a virtualenv (python/.venv, or $SIDEKICK_VENV);
# 2. `pip install ./python`: a PEP 517 build in pip's isolated environment, maturin comes from
#    PyPI through the build requirements (no maturin preinstalled);
# 3. the test dependencies from PyPI (pytest, pytest-timeout, requests, httpx, boto3, mypy);
# 4. mypy.stubtest (the .pyi against the compiled module) and mypy on the package;
# 5. s3s-fs 0.14.1 into ~/.cargo/bin when missing (cargo install, about 2 minutes once);
# 6. pytest (exit code 5, "no tests ran", counts as a failure);
# 7. the benchmark: per-request overhead of sidekick.requests over plain requests.
#
# Exits non-zero when any step fails. Everything it starts listens on 127.0.0.1 and is stopped
# by PID (the pytest fixtures and the benchmark do it, also on failure).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SIDEKICK_VENV:-$HERE/.venv}"
PYTHON="${PYTHON:-python3}"

section() { printf '\n==== %s ====\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "need root to run: $*" >&2; return 1
    fi
}

start=$SECONDS

section "toolchain"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v "$PYTHON" >/dev/null 2>&1 || { echo "$PYTHON is required" >&2; exit 1; }
"$PYTHON" --version
cargo --version

section "virtualenv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 ships venv's pip separately.
        rm -rf "$VENV"
        ver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "python${ver}-venv" \
            || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
        "$PYTHON" -m venv "$VENV"
    fi
fi
VPY="$VENV/bin/python"
"$VPY" -m pip --version

section "pip install ./python"
t0=$SECONDS
# --force-reinstall: the version does not change between local builds.
"$VPY" -m pip install --disable-pip-version-check --force-reinstall --no-deps "$HERE"
echo "built and installed in $((SECONDS - t0)) s"
"$VPY" -c 'import sidekick; print("sidekick", sidekick.__version__, "from", sidekick.__file__)'

section "test dependencies"
"$VPY" -m pip install --disable-pip-version-check -q \
    "pytest>=7" "pytest-timeout>=2" "requests>=2.28" "httpx>=0.24" "boto3>=1.26" "mypy>=1.10"

section "stubs and types: mypy.stubtest, mypy"
# The .pyi must match the compiled module; the pure-Python half must type-check against it.
(cd "$VENV" && "$VPY" -m mypy.stubtest sidekick._sidekick)
(cd "$VENV" && "$VPY" -m mypy --ignore-missing-imports -p sidekick)

section "s3s-fs"
if command -v s3s-fs >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/s3s-fs" ]; then
    echo "found: $(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
else
    # 0.17 needs a newer rustc than the project's; 0.14.1 builds with it.
    cargo install s3s-fs --version 0.14.1 --locked --features binary
fi
export PATH="$HOME/.cargo/bin:$PATH"

section "pytest"
set +e
(cd "$HERE" && SIDEKICK_REQUIRE_S3S=1 "$VPY" -m pytest -q -p no:cacheprovider tests "$@")
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
elif [ "$rc" -ne 0 ]; then
    echo "pytest failed (exit $rc)" >&2
    exit "$rc"
fi

section "benchmark: sidekick.requests vs plain requests, one backend"
"$VPY" "$HERE/bench/bench_requests.py"

section "done in $((SECONDS - start)) s"
