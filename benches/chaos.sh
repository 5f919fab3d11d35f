#!/usr/bin/env bash
# Chaos scenario: the sidecar, nginx and haproxy (and MinIO's Go sidekick when SIDEKICK_GO names
# its binary) in front of the same 4 backends, each under the same load while the network link to
# ONE backend goes bad: added latency, then packet loss, then a partition. Prints, per LB and
# fault, the requests served, the requests that failed and the p99 latency, as a table.
#
# Everything runs in network namespaces this script makes and removes (`ip netns`, veth pairs,
# addresses in 10.77.0.0/16 that exist only inside them): one namespace for the LB and the load
# generator, one per backend. Faults are applied on backend 4's side of its link with
# `tc netem` when the kernel has it; without sch_netem (some VM kernels), latency becomes a
# congested link (`tc tbf`: 20 Mbit/s, up to 50 ms of queue) and loss and partition become
# nftables drop rules (random 10 %, then 100 %), and the table says so.
#
#   sudo bash benches/chaos.sh                      # ours, nginx, haproxy; 20 s per fault
#   SIDEKICK_GO=/path/to/sidekick PHASE_SECS=30 bash benches/chaos.sh
#   LBS="ours haproxy" PHASE_SECS=5 CONNS=8 bash benches/chaos.sh   # a quick look
#
# Needs root, ip, tc, nft, nginx, haproxy, wrk (installed with apt-get when missing) and the
# release `sidekick` binary (built when OURS_BIN is not set and it is missing). The nginx,
# haproxy and wrk configuration templates are read at run time from the shared benchmark
# harness (SHARED_BENCH, default shared/bench beside the checkout or its parent folder). Heavy: run it on a
# quiet machine. Every process it starts is stopped by PID, and every namespace is removed on
# exit (trap), also on Ctrl-C.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${SHARED_BENCH:-}" ]; then
    # shared/ sits beside the checkout (or beside the folder of worktrees).
    SHARED_BENCH="$ROOT/../shared/bench"
    [ -d "$SHARED_BENCH" ] || SHARED_BENCH="$ROOT/../../shared/bench"
fi
CONF="$SHARED_BENCH/conf"
OURS_BIN="${OURS_BIN:-$ROOT/target/release/sidekick}"
SIDEKICK_GO="${SIDEKICK_GO:-}"
PHASE_SECS="${PHASE_SECS:-20}"   # load per fault
FAULT_AT="${FAULT_AT:-3}"        # seconds into the load when the fault starts
CONNS="${CONNS:-64}"
WRK_TIMEOUT="${WRK_TIMEOUT:-5}" # seconds; a request stuck longer counts as failed
WORKERS="${WORKERS:-$(nproc)}"   # nginx worker_processes / haproxy nbthread
HEALTH=/minio/health/ready
PORT=8000                        # every backend's port, on its own address
LB_PORT=8080                     # the LB, on 127.0.0.1 of the LB namespace
PHASES=(none latency loss partition)
BAD=4                            # the backend whose link goes bad

TAG="skc$$"
NS_LB="$TAG-lb"
WORK=""
PIDS=()

log() { printf '[chaos %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

cleanup() {
    local pid ns
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for ns in "$NS_LB" "$TAG-b1" "$TAG-b2" "$TAG-b3" "$TAG-b4"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ -n "$WORK" ] && [ -z "${KEEP:-}" ]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stop one process this script started, by PID, and forget it.
stop() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for i in "${!PIDS[@]}"; do
        [ "${PIDS[$i]}" = "$pid" ] && unset 'PIDS[i]'
    done
    return 0
}

# ----- prerequisites -----

[ "$(id -u)" -eq 0 ] || die "needs root (ip netns, tc, nft)"
[ -d "$CONF" ] || die "no benchmark templates in $CONF (set SHARED_BENCH)"
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v tc >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v python3 >/dev/null || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ! -x "$OURS_BIN" ]; then
    log "building the release sidekick binary"
    (cd "$ROOT" && cargo build --release --features sidecar --bin sidekick)
fi
NGINX="$(command -v nginx)"
HAPROXY="$(command -v haproxy)"

WORK="$(mktemp -d /tmp/chaos.XXXXXX)"
mkdir -p "$WORK/www/obj"
head -c 1024 /dev/urandom >"$WORK/www/obj/1k"

# Fill @KEY@ placeholders of a template: render TEMPLATE OUT KEY=VALUE...
render() {
    local text kv
    text="$(<"$1")"
    shift
    local out=$1
    shift
    for kv in "$@"; do
        text="${text//@${kv%%=*}@/${kv#*=}}"
    done
    printf '%s\n' "$text" >"$out"
}

# HTTP status of GET PATH from inside a namespace (000 when nothing answered within 2 s).
http_status() {
    local ns=$1 host=$2 port=$3 path=$4
    ip netns exec "$ns" timeout 2 bash -c \
        "exec 3<>/dev/tcp/$host/$port && printf 'GET $path HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && head -c 12 <&3" \
        2>/dev/null | awk '{print $2}' || true
}

# Wait (at most 15 s) until GET PATH answers 200.
wait_200() {
    local i
    for i in $(seq 1 150); do
        [ "$(http_status "$@")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# ----- network: one LB namespace, four backend namespaces, a veth pair each -----

log "namespaces and links"
ip netns add "$NS_LB"
ip -n "$NS_LB" link set lo up
for i in 1 2 3 4; do
    ns="$TAG-b$i"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "lb$i" netns "$NS_LB" type veth peer name "be$i" netns "$ns"
    ip -n "$NS_LB" addr add "10.77.$i.1/24" dev "lb$i"
    ip -n "$ns" addr add "10.77.$i.2/24" dev "be$i"
    ip -n "$NS_LB" link set "lb$i" up
    ip -n "$ns" link set "be$i" up
done

# ----- backends: one single-process nginx each (the harness's backend template) -----

declare -A BE_LOG
for i in 1 2 3 4; do
    d="$WORK/b$i"
    mkdir -p "$d"
    render "$CONF/backend.nginx.conf" "$d/nginx.conf" D="$d" PORT="$PORT" WWW="$WORK/www" HEALTH="$HEALTH"
    sed -i "s/listen 127\.0\.0\.1:/listen 10.77.$i.2:/" "$d/nginx.conf"
    ip netns exec "$TAG-b$i" "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" \
        >"$d/stdout.log" 2>&1 &
    PIDS+=($!)
    BE_LOG[$i]="$d/access.log"
done
for i in 1 2 3 4; do
    wait_200 "$NS_LB" "10.77.$i.2" "$PORT" /obj/1k || die "backend $i did not answer; see $WORK/b$i/error.log"
done

render "$CONF/wrk.lua" "$WORK/wrk.lua" METHOD=GET BODY=""

# ----- faults on backend BAD's side of its link -----

DEV="be$BAD"
NS_BAD="$TAG-b$BAD"
NETEM=0
if ip netns exec "$NS_BAD" tc qdisc add dev "$DEV" root netem delay 1ms 2>"$WORK/netem.err"; then
    ip netns exec "$NS_BAD" tc qdisc del dev "$DEV" root
    NETEM=1
    log "faults: tc netem"
else
    log "tc netem is not available here ($(tr -d '\n' <"$WORK/netem.err")): latency = tbf congestion, loss and partition = nftables drops"
fi

describe_fault() {
    case "$1:$NETEM" in
    none:*) echo "none" ;;
    latency:1) echo "+50 ms each way (netem delay)" ;;
    latency:0) echo "congested link (tbf 20 Mbit/s, <= 50 ms queue)" ;;
    loss:1) echo "10 % packet loss each way (netem)" ;;
    loss:0) echo "10 % packet loss each way (nftables numgen)" ;;
    partition:1) echo "partition (netem loss 100 %)" ;;
    partition:0) echo "partition (nftables drop all)" ;;
    esac
}

nft_bad() { ip netns exec "$NS_BAD" nft "$@"; }

fault_on() {
    case "$1:$NETEM" in
    none:*) ;;
    latency:1) ip netns exec "$NS_BAD" tc qdisc add dev "$DEV" root netem delay 50ms ;;
    latency:0) ip netns exec "$NS_BAD" tc qdisc add dev "$DEV" root tbf rate 20mbit burst 32kb latency 50ms ;;
    loss:1) ip netns exec "$NS_BAD" tc qdisc add dev "$DEV" root netem loss 10% ;;
    partition:1) ip netns exec "$NS_BAD" tc qdisc add dev "$DEV" root netem loss 100% ;;
    loss:0 | partition:0)
        local verdict="drop"
        [ "$1" = loss ] && verdict="numgen random mod 100 < 10 drop"
        nft_bad add table inet chaos
        nft_bad add chain inet chaos in "{ type filter hook input priority 0; }"
        nft_bad add chain inet chaos out "{ type filter hook output priority 0; }"
        nft_bad add rule inet chaos in iifname "$DEV" $verdict
        nft_bad add rule inet chaos out oifname "$DEV" $verdict
        ;;
    esac
}

fault_off() {
    ip netns exec "$NS_BAD" tc qdisc del dev "$DEV" root 2>/dev/null || true
    nft_bad delete table inet chaos 2>/dev/null || true
}

# With netem, the reverse direction gets the same treatment from the LB's side of the link.
fault_on_lb_side() {
    [ "$NETEM" = 1 ] || return 0
    case "$1" in
    latency) ip netns exec "$NS_LB" tc qdisc add dev "lb$BAD" root netem delay 50ms ;;
    loss) ip netns exec "$NS_LB" tc qdisc add dev "lb$BAD" root netem loss 10% ;;
    partition) ip netns exec "$NS_LB" tc qdisc add dev "lb$BAD" root netem loss 100% ;;
    esac
}

fault_off_lb_side() {
    ip netns exec "$NS_LB" tc qdisc del dev "lb$BAD" root 2>/dev/null || true
}

# ----- the LBs -----

SITE_ELLIPSIS="http://10.77.{1...4}.2:$PORT"

# Start LB KIND in the LB namespace; sets LB_PID.
start_lb() {
    local kind=$1 d="$WORK/lb-$1" servers="" i
    mkdir -p "$d"
    case "$kind" in
    ours | sidekick-go)
        local bin="$OURS_BIN"
        [ "$kind" = sidekick-go ] && bin="$SIDEKICK_GO"
        ip netns exec "$NS_LB" "$bin" --address "127.0.0.1:$LB_PORT" --health-path "$HEALTH" \
            --health-duration 1s --quiet "$SITE_ELLIPSIS" >"$d/stdout.log" 2>&1 &
        ;;
    nginx)
        for i in 1 2 3 4; do
            servers+="    server 10.77.$i.2:$PORT max_fails=1 fail_timeout=1s;"$'\n'
        done
        render "$CONF/lb.nginx.conf" "$d/nginx.conf" D="$d" PORT="$LB_PORT" SERVERS="$servers" \
            WORKERS="$WORKERS" USER="user root;"
        ip netns exec "$NS_LB" "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" \
            >"$d/stdout.log" 2>&1 &
        ;;
    haproxy)
        for i in 1 2 3 4; do
            servers+="  server b$i 10.77.$i.2:$PORT"$'\n'
        done
        render "$CONF/lb.haproxy.cfg" "$d/haproxy.cfg" PORT="$LB_PORT" SERVERS="$servers" \
            WORKERS="$WORKERS" HEALTH="$HEALTH"
        ip netns exec "$NS_LB" "$HAPROXY" -db -f "$d/haproxy.cfg" >"$d/stdout.log" 2>&1 &
        ;;
    *) die "unknown LB $kind" ;;
    esac
    LB_PID=$!
    PIDS+=("$LB_PID")
    wait_200 "$NS_LB" 127.0.0.1 "$LB_PORT" /obj/1k || die "$kind never answered 200; see $d"
    sleep 2 # every backend probed healthy and in rotation
}

lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# One LB through one fault: fresh LB, load, the fault FAULT_AT seconds into it, numbers out.
run_phase() {
    local kind=$1 phase=$2 before=() after i wrk_pid json
    start_lb "$kind"
    for i in 1 2 3 4; do before[$i]=$(lines "${BE_LOG[$i]}"); done
    ip netns exec "$NS_LB" wrk -t2 -c"$CONNS" -d"${PHASE_SECS}s" --timeout "${WRK_TIMEOUT}s" -s "$WORK/wrk.lua" \
        "http://127.0.0.1:$LB_PORT/obj/1k" >"$WORK/wrk-$kind-$phase.log" 2>&1 &
    wrk_pid=$!
    PIDS+=("$wrk_pid")
    sleep "$FAULT_AT"
    fault_on "$phase"
    fault_on_lb_side "$phase"
    wait "$wrk_pid" || true
    stop "$wrk_pid"
    fault_off
    fault_off_lb_side
    stop "$LB_PID"
    sleep 1.5 # the backends flush their access logs every second
    local served=0 bad=0
    for i in 1 2 3 4; do
        after=$(lines "${BE_LOG[$i]}")
        served=$((served + after - before[i]))
        [ "$i" = "$BAD" ] && bad=$((after - before[i]))
    done
    json="$(grep -o 'WRKJSON .*' "$WORK/wrk-$kind-$phase.log" | cut -d' ' -f2- || true)"
    [ -n "$json" ] || die "wrk printed no result for $kind/$phase: $(tail -3 "$WORK/wrk-$kind-$phase.log")"
    printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$phase" "$json" "$served" "$bad" >>"$RESULTS"
    log "$kind / $phase: $json"
}

if [ -n "${LBS:-}" ]; then
    read -r -a LBS <<<"$LBS"
else
    LBS=(ours nginx haproxy)
    [ -n "$SIDEKICK_GO" ] && LBS+=(sidekick-go)
fi
log "LBs: ${LBS[*]}; faults: ${PHASES[*]}; ${PHASE_SECS}s of load each, fault at ${FAULT_AT}s, $CONNS connections"
for kind in "${LBS[@]}"; do
    for phase in "${PHASES[@]}"; do
        run_phase "$kind" "$phase"
    done
done

# ----- the table -----

FAULTS="$(for p in "${PHASES[@]}"; do printf '%s\t%s\n' "$p" "$(describe_fault "$p")"; done)"
python3 - "$RESULTS" "$FAULTS" "$PHASE_SECS" "$FAULT_AT" "$CONNS" "$WRK_TIMEOUT" <<'EOF'
import json, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines() if l]
faults = dict(l.split("\t", 1) for l in sys.argv[2].splitlines())
secs, at, conns, timeout = sys.argv[3:7]
print(f"GET /obj/1k (1 KiB), {conns} connections, {secs} s per row; the fault hits backend 4's link "
      f"{at} s into the load. failed = wrk errors (connect, read, write, no answer within {timeout} s) "
      "+ non-2xx/3xx answers; p99 and max are over the answered requests (a request still waiting "
      "when the load stops is in neither).\n")
print("| LB | fault | requests | failed | failed % | p99 ms | max ms | req/s | served by backend 4 |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for kind, phase, js, served, bad in rows:
    r = json.loads(js)
    failed = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
    total = r["requests"] + r["connect"] + r["write"]
    share = f"{int(bad) / int(served) * 100:.1f} %" if int(served) else "-"
    print(f"| {kind} | {faults[phase]} | {r['requests']:.0f} | {failed:.0f} | "
          f"{failed / total * 100 if total else 0:.2f} | {r['p99_us'] / 1000:.1f} | {r['max_us'] / 1000:.0f} | "
          f"{r['requests'] / (r['duration_us'] / 1e6):.0f} | {share} |")
EOF
