#!/usr/bin/env bash
# Start-up cost against the endpoint count: time until the sidecar says it listens, and its
# RSS then and 5 s later (every endpoint probed once, start-up trim done; probes on, as by default).
# Endpoints are in 127.99.0.0/16, where nothing listens: every probe is refused at once.
# Usage: benches/startup.sh [binary]   (default: target/release/sidekick)
set -euo pipefail
bin=${1:-target/release/sidekick}
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
printf '%-8s %-10s %-12s %-14s %-12s\n' endpoints listen_ms rss_listen_kB rss_after5s_kB hwm_kB
for spec in 'http://127.99.0.{1...250}:{9000...9003}' \
            'http://127.99.{0...63}.{1...250}:9000' \
            'http://127.99.{0...255}.{0...255}:9000'; do
    case $spec in
        *'{9000...9003}'*) n=1000 ;;
        *'{0...63}'*) n=16000 ;;
        *) n=65536 ;;
    esac
    out=$(mktemp)
    start=$(date +%s%N)
    "$bin" --address 127.0.0.1:0 "$spec" >"$out" 2>&1 &
    pid=$!
    listen_ms=timeout
    # Bounded: at most 30 s.
    for _ in $(seq 1 3000); do
        if grep -q 'listening on' "$out"; then
            listen_ms=$(( ($(date +%s%N) - start) / 1000000 ))
            break
        fi
        sleep 0.01
    done
    r1=$(rss "$pid")
    sleep 5
    r2=$(rss "$pid"); h=$(hwm "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -f "$out"
    printf '%-8s %-10s %-12s %-14s %-12s\n' "$n" "$listen_ms" "$r1" "$r2" "$h"
done
