#!/usr/bin/env bash
# Every test of the C API and its Go and Java consumers, from a fresh Debian machine:
#
#   bash ffi/test.sh              # everything
#   bash ffi/test.sh c go         # the build and header check, then only the parts named
#
# Parts: c (Rust unit tests, the C test under valgrind, the C example, the C and Rust
# benchmarks), go (the build step, go vet, go test, BenchmarkPickDone, a user's module built
# outside the repository), java (mvn install: tests and the jar carrying the native library; a
# user's project built outside the repository against that jar). The release build of
# the ffi crate and the header check always run first. Missing tools (gcc, valgrind, python3,
# cbindgen, Go, a JDK and Maven) are installed. Every backend started here listens on 127.0.0.1
# and is stopped by PID on exit. Exits non-zero if anything failed.
#
# The library is found through `cargo metadata` (ffi/target standalone, target/ as a workspace
# member) unless SIDEKICK_FFI_LIB_DIR names the directory holding libsidekick_ffi.{so,a}.
set -euo pipefail

# shellcheck source=ffi/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/common.sh"
cd "$FFI_DIR"

PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(c go java)
wants() {
    local p
    for p in "${PARTS[@]}"; do [ "$p" = "$1" ] && return 0; done
    return 1
}
for p in "${PARTS[@]}"; do
    case "$p" in c | go | java) ;; *) echo "unknown part '$p' (c, go, java)" >&2; exit 2 ;; esac
done

section() { printf '\n==== ffi: %s ====\n' "$*"; }
start=$SECONDS

# ----- processes and temporary files -----

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PIDS=()
# Parts run in subshells, each with this as its EXIT trap: what a part starts, it stops.
stop_started() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# Start tests/server.py (name, then its options); sets PORT to the port it listens on.
start_backend() {
    local file="$WORK/port.$1"
    python3 "$FFI_DIR/tests/server.py" "$file" "${@:2}" >"$WORK/server.$1.log" 2>&1 &
    PIDS+=($!)
    local i
    for i in $(seq 100); do
        [ -s "$file" ] && break
        sleep 0.1
    done
    [ -s "$file" ] || { echo "backend $1 did not start" >&2; cat "$WORK/server.$1.log" >&2; return 1; }
    PORT="$(cat "$file")"
}

# A port where nothing listens (bound once, then released).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ----- installing what is missing -----

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "need root to run: $*" >&2
        return 1
    fi
}
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || { echo "missing: $* (and no apt-get)" >&2; return 1; }
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

command -v cc >/dev/null 2>&1 && command -v gcc >/dev/null 2>&1 || apt_install build-essential
command -v python3 >/dev/null 2>&1 || apt_install python3
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install Rust (rustup) first, e.g. with .ci/test" >&2
    exit 1
fi
if wants c && ! command -v valgrind >/dev/null 2>&1; then apt_install valgrind; fi
if wants go; then
    [ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
    command -v go >/dev/null 2>&1 || apt_install golang-go
fi
if wants java; then
    command -v javac >/dev/null 2>&1 || apt_install default-jdk-headless
    command -v mvn >/dev/null 2>&1 || apt_install maven
fi

# ----- build -----

section "cargo build --release (sidekick-ffi)"
# Standalone (not yet a workspace member): start from the engine's lock file, so the versions
# match what the engine is tested with.
if [ ! -f "$FFI_DIR/Cargo.lock" ] && [ -f "$FFI_DIR/../Cargo.lock" ] &&
    [ "$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["workspace_root"])')" = "$FFI_DIR" ]; then
    cp "$FFI_DIR/../Cargo.lock" "$FFI_DIR/Cargo.lock"
fi
cargo build --release
LIB_DIR="$(ffi_lib_dir)"
echo "library: $LIB_DIR/libsidekick_ffi.{so,a}"
[ -f "$LIB_DIR/libsidekick_ffi.so" ] && [ -f "$LIB_DIR/libsidekick_ffi.a" ] ||
    { echo "libsidekick_ffi.so/.a not found in $LIB_DIR" >&2; exit 1; }

section "header: include/sidekick.h matches cbindgen $CBINDGEN_VERSION"
bash "$FFI_DIR/scripts/check-header.sh"

section "unsafe code only in src/ffi.rs"
if grep -nE '\bunsafe\b *(\{|impl|fn)' src/*.rs | grep -v '^src/ffi.rs:'; then
    echo "unsafe code outside src/ffi.rs (see above)" >&2
    exit 1
fi
echo "ok"

FAILED=()
run_part() { # name, function: a failing part does not stop the others
    local rc
    # A subshell keeps `set -e` in force inside the part (it would not be under `||`).
    set +e
    (
        set -e
        trap stop_started EXIT
        "$2"
    )
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        FAILED+=("$1")
        echo "ffi part $1 FAILED (exit $rc)"
    fi
}

BUILD="$WORK/build"
mkdir -p "$BUILD"
CFLAGS=(-std=gnu11 -Wall -Wextra -Werror -I"$FFI_DIR/include")
STATIC_LIBS=(-l:libsidekick_ffi.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)

# Run "$@" under valgrind, every leak an error: the program's output goes to $WORK/NAME.out (its
# lines other than "ok ..." are shown), valgrind's log to $WORK/NAME.valgrind.log (its leak and
# error summary is shown; all of it when the run fails). Non-zero, naming WHAT, on failure.
under_valgrind() {
    local name=$1 what=$2 rc=0
    shift 2
    timeout 600 valgrind --error-exitcode=1 --leak-check=full \
        --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
        --log-file="$WORK/$name.valgrind.log" "$@" >"$WORK/$name.out" || rc=$?
    grep -v '^ok ' "$WORK/$name.out" || true
    grep -E 'definitely lost|indirectly lost|possibly lost|still reachable|suppressed:|ERROR SUMMARY' \
        "$WORK/$name.valgrind.log" | sed 's/^==[0-9]*== */valgrind: /'
    if [ "$rc" -ne 0 ]; then
        cat "$WORK/$name.valgrind.log"
        echo "$what failed under valgrind (exit $rc)" >&2
        return 1
    fi
}

part_c() {
    section "rust: cargo test --release --lib (sidekick-ffi)"
    cargo test --release --lib

    section "C: test_sidekick under valgrind"
    gcc "${CFLAGS[@]}" -g -O1 tests/c/test_sidekick.c -o "$BUILD/test_sidekick" \
        -L"$LIB_DIR" -lsidekick_ffi -Wl,-rpath,"$LIB_DIR" -lpthread
    start_backend 1
    local p1=$PORT
    start_backend 2
    local p2=$PORT
    start_backend reset --reset
    local reset=$PORT
    local dead
    dead="$(free_port)"
    under_valgrind test_sidekick "C test" "$BUILD/test_sidekick" "$p1" "$p2" "$dead" "$reset"

    section "C: test_attempts (the shared attempt-policy vectors) under valgrind"
    gcc "${CFLAGS[@]}" -g -O1 tests/c/test_attempts.c -o "$BUILD/test_attempts" \
        -L"$LIB_DIR" -lsidekick_ffi -Wl,-rpath,"$LIB_DIR"
    under_valgrind test_attempts "C attempt-policy vectors" \
        "$BUILD/test_attempts" "$FFI_DIR/../tests/vectors/attempt_policy.txt"

    section "C: examples/c/pick.c"
    gcc "${CFLAGS[@]}" -O2 examples/c/pick.c -o "$BUILD/pick" \
        -L"$LIB_DIR" -lsidekick_ffi -Wl,-rpath,"$LIB_DIR"
    "$BUILD/pick" "http://127.0.0.1:$p1,http://127.0.0.1:$p2" "http://127.0.0.1:$dead"

    section "bench: pick + finish, ns per pair (C ABI from C, and the Rust API)"
    gcc "${CFLAGS[@]}" -O2 bench/bench.c -o "$BUILD/bench" -L"$LIB_DIR" "${STATIC_LIBS[@]}"
    "$BUILD/bench" 2000000
    local exe
    exe="$(cargo build --release --bench pick_finish --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pick_finish" and m.get("executable"):
        print(m["executable"])')"
    "$exe" 2000000
}

part_go() {
    # As the README's Go section tells a user: the one build step puts the static library into
    # the module (go/lib/<GOOS>_<GOARCH>/); nothing else tells cgo where it is.
    section "Go: the build step (scripts/build-go-lib.sh)"
    local t=$SECONDS
    bash "$FFI_DIR/scripts/build-go-lib.sh"
    unset CGO_LDFLAGS
    export CGO_ENABLED=1

    section "Go: go vet, go test (cgo, static library)"
    cd "$FFI_DIR/go"
    go version
    go vet ./...
    local rc=0
    go test -count=1 -v ./... >"$WORK/go-test.log" 2>&1 || rc=$?
    grep -vE '^=== (RUN|PAUSE|CONT)' "$WORK/go-test.log" || true
    [ "$rc" -eq 0 ] || { echo "go test failed (exit $rc)" >&2; return 1; }
    echo "go test: $(grep -c '^--- PASS' "$WORK/go-test.log") passed, $(grep -c '^--- FAIL' "$WORK/go-test.log") failed"

    section "bench: go test -bench PickDone (C ABI from Go)"
    go test -run '^$' -bench . -benchtime 200000x ./...

    section "Go: a user's module outside the repository (README, Go section)"
    # go mod init, a replace (no registry serves the module here), go get, the build step,
    # go build; GOPROXY=off: the module comes from the replace and nothing from the network.
    local consumer="$WORK/go-consumer" module=github.com/sidekick-lb/sidekick/ffi/go
    mkdir -p "$consumer"
    cp "$FFI_DIR/tests/consumer/go/main.go" "$consumer/"
    (
        cd "$consumer"
        export GOPROXY=off GOFLAGS=
        go mod init example.com/consumer
        go mod edit -replace "$module=$FFI_DIR/go"
        go get "$module"
        bash "$FFI_DIR/scripts/build-go-lib.sh"
        go build -o consumer .
    )
    start_backend go1
    local p1=$PORT
    start_backend go2
    local p2=$PORT
    (cd "$WORK" && "$consumer/consumer" "http://127.0.0.1:$p1,http://127.0.0.1:$p2")
    echo "Go part took $((SECONDS - t)) s"
}

part_java() {
    local t=$SECONDS
    section "Java: mvn -B install (JNA; tests, the jar with the native library, ~/.m2)"
    cd "$FFI_DIR/java"
    java -version 2>&1 | head -1
    mvn -q -B -Dstyle.color=never install -Dsidekick.lib.dir="$LIB_DIR"
    cat target/surefire-reports/*.txt | grep -E 'Tests run'
    local version jar
    version="$(sed -n '0,/<artifactId>sidekick-jna<\/artifactId>/d; /<version>/{s|.*<version>\(.*\)</version>.*|\1|p;q;}' pom.xml)"
    jar="target/sidekick-jna-$version.jar"
    [ -f "$jar" ] || { echo "mvn package made no $jar" >&2; return 1; }
    jar tf "$jar" | grep -x 'linux-x86-64/libsidekick_ffi.so' ||
        { echo "$jar does not carry linux-x86-64/libsidekick_ffi.so" >&2; return 1; }

    section "Java: a user's project outside the repository, with only the sidekick-jna dependency"
    # Its classpath is the artifact from the local repository and JNA; no library path, no
    # LD_LIBRARY_PATH: JNA must load the library from the jar (its load log says from where).
    local consumer="$WORK/java-consumer"
    cp -r "$FFI_DIR/tests/consumer/java" "$consumer"
    start_backend java1
    local p1=$PORT
    start_backend java2
    local p2=$PORT
    (
        cd "$consumer"
        unset LD_LIBRARY_PATH
        mvn -B -ntp -Dstyle.color=never -Dsidekick.version="$version" \
            -Dsites="http://127.0.0.1:$p1,http://127.0.0.1:$p2" compile exec:exec
    ) >"$WORK/java-consumer.log" 2>&1 || { cat "$WORK/java-consumer.log"; echo "the Java consumer failed" >&2; return 1; }
    grep -E '20 GETs through BalancedClient' "$WORK/java-consumer.log"
    grep -E "Found library resource at jar:file:.*/sidekick-jna-$version\.jar!/linux-x86-64/libsidekick_ffi\.so" \
        "$WORK/java-consumer.log" || {
        grep -iE 'jna|library' "$WORK/java-consumer.log"
        echo "JNA did not load libsidekick_ffi.so from the sidekick-jna jar (log above)" >&2
        return 1
    }
    echo "Java part took $((SECONDS - t)) s"
}

wants c && run_part c part_c
wants go && run_part go part_go
wants java && run_part java part_java

section "summary"
echo "parts: ${PARTS[*]}; failed: ${FAILED[*]:-none}; took $((SECONDS - start)) s"
[ ${#FAILED[@]} -eq 0 ]
