#!/usr/bin/env bash
# The Python bindings' whole check, the way a user gets them: from the built wheel, on a machine
# without Rust. Needs Python >= 3.9 with venv and pip, and cargo (to build, never to test):
#
#   bash python/test.sh            # wheel + sdist, audit, fresh venv, stubs, pytest, benchmark
#   bash python/test.sh -k fork    # extra arguments go to pytest
#
# 1. a build virtualenv (python/.venv-build, or $SIDEKICK_BUILD_VENV; kept between runs) with
#    maturin (the pyproject's build requirement), auditwheel and ziglang (zig) from PyPI;
# 2. `maturin build --release --zig --compatibility manylinux2014`: the one abi3 wheel, linked by
#    zig against glibc 2.17's symbols so that it installs on any Linux with glibc >= 2.17 (a
#    plain build would need the build machine's glibc: 2.34 on Debian 12); built once and used by
#    every step below; `auditwheel show` checks that the wheel satisfies its platform tag;
# 3. `maturin sdist`, then the same `maturin build` in a temporary directory where the sdist is
#    unpacked: the sdist carries everything it needs (the engine crate it depends on too). Both
#    builds share the cargo target directory (CARGO_TARGET_DIR, default the workspace's target/),
#    so the sdist's build reuses the wheel's compiled dependencies. (`pip wheel` of the sdist
#    does the same build in pip's isolated environment, where maturin sets zig up differently:
#    cargo compiled every dependency again, 504 s on a busy 2-core machine);
# 4. a fresh virtualenv (temporary) where pip installs the wheel and the test dependencies;
# 5. everything below runs with PATH=<venv>/bin:/usr/bin:/bin from an empty directory: cargo and
#    rustc must not be reachable, and `sidekick` must import from the venv's site-packages;
# 6. mypy.stubtest (the .pyi against the compiled module) and mypy on the installed package;
# 7. s3s-fs 0.14.1 into ~/.cargo/bin when missing (cargo install, about 2 minutes once);
# 8. pytest on python/tests against the installed wheel (exit code 5, "no tests ran", fails);
# 9. the benchmark: per-request overhead of sidekick.requests over plain requests.
#
# Exits non-zero when any step fails. Everything it starts listens on 127.0.0.1 and is stopped
# by PID (the pytest fixtures and the benchmark do it, also on failure).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD_VENV="${SIDEKICK_BUILD_VENV:-$HERE/.venv-build}"
PYTHON="${PYTHON:-python3}"
# The pyproject's build requirement: the same maturin builds the wheel here and in pip.
MATURIN_REQ="$(sed -n 's/^requires = \["\(maturin[^"]*\)"\]$/\1/p' "$HERE/pyproject.toml")"

section() { printf '\n==== python: %s ====\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "need root to run: $*" >&2; return 1
    fi
}

# A virtualenv at $1 (Debian's python3 ships venv's pip separately: installed when missing).
make_venv() {
    if "$PYTHON" -m venv "$1" 2>/dev/null; then return 0; fi
    rm -rf "$1"
    local ver
    ver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "python${ver}-venv" \
        || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
    "$PYTHON" -m venv "$1"
}

start=$SECONDS
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
[ -n "$MATURIN_REQ" ] || { echo "no maturin build requirement found in $HERE/pyproject.toml" >&2; exit 1; }

section "toolchain"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is required to build the wheel (https://rustup.rs)" >&2; exit 1; }
command -v "$PYTHON" >/dev/null 2>&1 || { echo "$PYTHON is required" >&2; exit 1; }
"$PYTHON" --version
cargo --version
# One target directory for every build of the extension (the in-tree wheel, the sdist's wheel).
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    CARGO_TARGET_DIR="$(cd "$HERE" && cargo metadata --format-version 1 --no-deps |
        "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
fi
export CARGO_TARGET_DIR
echo "cargo target directory: $CARGO_TARGET_DIR"

section "build virtualenv $BUILD_VENV ($MATURIN_REQ, auditwheel, ziglang)"
[ -x "$BUILD_VENV/bin/python" ] || make_venv "$BUILD_VENV"
BPY="$BUILD_VENV/bin/python"
"$BPY" -m pip install --disable-pip-version-check -q "$MATURIN_REQ" "auditwheel>=6" "ziglang==0.17.1"
"$BUILD_VENV/bin/maturin" --version
# zig on PATH for maturin, here and inside pip's isolated build of the sdist.
ZIG_DIR="$("$BPY" -c 'import os, ziglang; print(os.path.dirname(ziglang.__file__))')"
export PATH="$ZIG_DIR:$PATH"
echo "zig $(zig version)"
# The platform the wheel is built for: glibc 2.17 (manylinux2014), as old as Rust's std supports.
WHEEL_ARGS=(--zig --compatibility manylinux2014)

section "wheel: maturin build --release ${WHEEL_ARGS[*]}"
t0=$SECONDS
(cd "$HERE" && "$BUILD_VENV/bin/maturin" build --release "${WHEEL_ARGS[@]}" --out "$WORK/wheel")
shopt -s nullglob
wheels=("$WORK"/wheel/*.whl)
shopt -u nullglob
[ "${#wheels[@]}" -eq 1 ] || { echo "expected one wheel, found: ${wheels[*]:-none}" >&2; exit 1; }
WHEEL="${wheels[0]}"
echo "built $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1)) in $((SECONDS - t0)) s"

section "wheel: abi3 tag and auditwheel show"
"$BPY" "$HERE/scripts/check_wheel.py" "$WHEEL" "$BUILD_VENV/bin/auditwheel"

section "sdist: maturin sdist, then maturin build of the unpacked sdist"
t0=$SECONDS
(cd "$HERE" && "$BUILD_VENV/bin/maturin" sdist --out "$WORK/sdist")
shopt -s nullglob
sdists=("$WORK"/sdist/*.tar.gz)
shopt -u nullglob
[ "${#sdists[@]}" -eq 1 ] || { echo "expected one sdist, found: ${sdists[*]:-none}" >&2; exit 1; }
echo "sdist $(basename "${sdists[0]}") ($(du -h "${sdists[0]}" | cut -f1))"
# Nothing from this checkout but the shared target directory is used.
mkdir -p "$WORK/unpacked"
tar -xzf "${sdists[0]}" -C "$WORK/unpacked"
unpacked=("$WORK"/unpacked/*/)
[ "${#unpacked[@]}" -eq 1 ] && [ -f "${unpacked[0]}pyproject.toml" ] ||
    { echo "the sdist does not unpack to one directory with a pyproject.toml" >&2; exit 1; }
(cd "${unpacked[0]}" && "$BUILD_VENV/bin/maturin" build --release "${WHEEL_ARGS[@]}" --out "$WORK/from-sdist")
shopt -s nullglob
built=("$WORK"/from-sdist/*.whl)
shopt -u nullglob
[ "${#built[@]}" -eq 1 ] || { echo "the sdist built no wheel" >&2; exit 1; }
from_sdist="$(basename "${built[0]}")"
[ "$from_sdist" = "$(basename "$WHEEL")" ] ||
    { echo "the sdist built $from_sdist, the tree $(basename "$WHEEL")" >&2; exit 1; }
echo "the sdist builds $from_sdist in $((SECONDS - t0)) s"

section "s3s-fs"
if command -v s3s-fs >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/s3s-fs" ]; then
    echo "found: $(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
else
    # 0.17 needs a newer rustc than the project's; 0.14.1 builds with it.
    cargo install s3s-fs --version 0.14.1 --locked --features binary
fi

section "a fresh virtualenv with the wheel"
t0=$SECONDS
VENV="$WORK/venv"
make_venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install --disable-pip-version-check -q "$WHEEL" \
    "pytest>=7" "pytest-timeout>=2" "requests>=2.28" "httpx>=0.24" "boto3>=1.26" "mypy>=1.10"
echo "installed in $((SECONDS - t0)) s"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"

# What a user's machine has: the venv, the system's tools, no Rust, no PYTHONPATH, and an empty
# working directory (so `import sidekick` cannot find python/pysrc). s3s-fs is found by the tests
# in ~/.cargo/bin without PATH.
RUN="$WORK/run"
mkdir -p "$RUN"
as_user() {
    (cd "$RUN" && env -u PYTHONPATH -u PYTHONHOME -u CARGO_TARGET_DIR -u VIRTUAL_ENV \
        PATH="$VENV/bin:/usr/bin:/bin" SIDEKICK_EXPECT_INSTALLED_IN="$SITE" "$@")
}
if as_user sh -c 'command -v cargo || command -v rustc'; then
    echo "cargo or rustc is reachable on the test PATH (above): the test would not show the wheel works without Rust" >&2
    exit 1
fi
as_user python -c 'import os, sidekick
f = sidekick.__file__
site = os.environ["SIDEKICK_EXPECT_INSTALLED_IN"]
assert os.path.realpath(f).startswith(os.path.realpath(site) + os.sep), f"sidekick imported from {f}, not from {site}"
print("sidekick", sidekick.__version__, "from", f, "(no cargo, no rustc on PATH)")'

section "stubs and types: mypy.stubtest, mypy (installed package)"
# The .pyi must match the compiled module; the pure-Python half must type-check against it.
as_user python -m mypy.stubtest sidekick._sidekick
as_user python -m mypy --ignore-missing-imports -p sidekick

section "pytest (against the installed wheel)"
set +e
as_user env SIDEKICK_REQUIRE_S3S=1 python -m pytest -q -p no:cacheprovider \
    -c "$HERE/pyproject.toml" --rootdir "$HERE" "$HERE/tests" "$@"
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
as_user python "$HERE/bench/bench_requests.py"

section "done in $((SECONDS - start)) s"
