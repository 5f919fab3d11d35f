"""Per-request overhead of sidekick.requests over plain requests, against one local backend.

Same run, same backend (a keep-alive HTTP/1.1 server in a separate process on 127.0.0.1), same
``requests.Session`` settings. Plain: ``session.get("http://127.0.0.1:PORT/x")``. Through sidekick:
the same GET to a virtual base URL mounted with ``SidekickAdapter`` over a single-endpoint site
(probes on, defaults). Rounds alternate between the two, so drift (CPU frequency, other load)
hits both alike: each round is ``--n`` sequential GETs per side, sent in interleaved blocks of
``--block`` (plain block, sidekick block, plain block, ...; the side that starts alternates), and
the figure per side is the median round. The overhead is reported in microseconds per request and
in percent of the plain time, three ways: from the median rounds; as the median difference of
adjacent blocks; and between the 10th-percentile blocks of each side (the fastest stretches, the
figure least disturbed by other load on a busy machine).

    python bench/bench_requests.py            # N=2000 per side and round, 5 rounds
    python bench/bench_requests.py --n 500 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from typing import List

import requests

import sidekick
from sidekick.requests import SidekickAdapter

SERVER = textwrap.dedent(
    """
    import socketserver, sys
    from http.server import BaseHTTPRequestHandler

    BODY = b"ok" * 16

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a):
            pass
        def do_GET(self):
            self.wfile.write(
                b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: "
                + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY
            )

    class S(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = S(("127.0.0.1", 0), H)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()
    """
)


def timed_round(session: requests.Session, url: str, n: int) -> float:
    """Seconds per request over ``n`` sequential GETs."""
    get = session.get
    t0 = time.perf_counter()
    for _ in range(n):
        r = get(url)
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}")
    return (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="GETs per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--block", type=int, default=100, help="GETs per interleaved block (default 100)")
    ap.add_argument("--warmup", type=int, default=300, help="untimed GETs per side first")
    ap.add_argument("--json", action="store_true", help="print one JSON line too")
    args = ap.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.strip().isdigit():
            raise RuntimeError("the backend did not start")
        port = int(line)
        backend = f"http://127.0.0.1:{port}"

        plain = requests.Session()
        plain.trust_env = False
        balancer = sidekick.Balancer(backend)  # one endpoint, default probes on "/"
        balancer.ready(5)
        through = requests.Session()
        through.trust_env = False
        through.mount("http://bench.internal/", SidekickAdapter(balancer))

        plain_url = f"{backend}/x"
        sk_url = "http://bench.internal/x"
        timed_round(plain, plain_url, args.warmup)
        timed_round(through, sk_url, args.warmup)

        p: List[float] = []  # per round, seconds per request
        s: List[float] = []
        pairs: List[float] = []  # per block pair: sidekick minus plain, seconds per request
        bp_all: List[float] = []  # every block, seconds per request
        bs_all: List[float] = []
        blocks = max(1, args.n // args.block)
        for i in range(args.rounds):
            tp = ts = 0.0
            for j in range(blocks):
                # Alternate which side goes first, so neither always follows the other.
                if (i + j) % 2 == 0:
                    bp = timed_round(plain, plain_url, args.block)
                    bs = timed_round(through, sk_url, args.block)
                else:
                    bs = timed_round(through, sk_url, args.block)
                    bp = timed_round(plain, plain_url, args.block)
                tp += bp
                ts += bs
                pairs.append(bs - bp)
                bp_all.append(bp)
                bs_all.append(bs)
            p.append(tp / blocks)
            s.append(ts / blocks)
        info = {e.url: e for e in balancer.endpoints()}[backend]
    finally:
        server.kill()
        server.wait(timeout=10)

    mp, ms = statistics.median(p), statistics.median(s)
    over = ms - mp
    pct = 100.0 * over / mp
    def p10(xs: List[float]) -> float:
        return sorted(xs)[len(xs) // 10]

    fp, fs = p10(bp_all), p10(bs_all)
    paired_us = statistics.median(pairs) * 1e6
    paired = 100.0 * paired_us / (mp * 1e6)
    print(
        f"backend          : {backend} (separate process), {args.rounds} rounds x "
        f"{blocks * args.block} GETs per side, interleaved in blocks of {args.block}"
    )
    print(f"plain requests   : {mp * 1e6:8.1f} us/request  (rounds: {', '.join(f'{x * 1e6:.0f}' for x in p)})")
    print(f"sidekick.requests: {ms * 1e6:8.1f} us/request  (rounds: {', '.join(f'{x * 1e6:.0f}' for x in s)})")
    print(f"overhead         : {over * 1e6:+8.1f} us/request = {pct:+.2f} %  (median rounds)")
    print(f"overhead, paired : {paired_us:+8.1f} us/request = {paired:+.2f} %  (median of {len(pairs)} adjacent block pairs)")
    print(
        f"overhead, fastest: {(fs - fp) * 1e6:+8.1f} us/request = {100.0 * (fs - fp) / fp:+.2f} %  "
        f"(10th-percentile blocks: {fp * 1e6:.0f} vs {fs * 1e6:.0f} us; least disturbed by other load)"
    )
    print(f"endpoint stats   : requests={info.requests} failures={info.failures}")
    if args.json:
        print(json.dumps({
            "plain_us": mp * 1e6, "sidekick_us": ms * 1e6, "overhead_us": over * 1e6,
            "overhead_pct": pct, "paired_overhead_us": paired_us, "paired_overhead_pct": paired,
            "fastest_plain_us": fp * 1e6, "fastest_sidekick_us": fs * 1e6, "n": args.n, "rounds": args.rounds,
            "python": sys.version.split()[0], "sidekick": sidekick.__version__, "pid": os.getpid(),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
