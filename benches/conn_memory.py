#!/usr/bin/env python3
"""Memory of the sidecar against open keep-alive connections.

Starts a local backend (asyncio, HTTP/1.1 keep-alive, 1 KiB answers) and the sidecar in front of
it, then reports the sidecar's RSS: idle, with N client connections open (each did one GET and
stays open), and a few seconds after they all closed. Loopback only; every process is stopped by
its PID.

Usage: benches/conn_memory.py [binary] [connections]
"""
import asyncio, os, re, subprocess, sys, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/sidekick"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
BODY = b"x" * 1024
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + BODY


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


async def backend_conn(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def get(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /obj HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    await r.readexactly(len(BODY))
    return r, w


async def main():
    backend = await asyncio.start_server(backend_conn, "127.0.0.1", 0, backlog=4096)
    bport = backend.sockets[0].getsockname()[1]
    log = open(f"/tmp/conn_memory.{os.getpid()}.log", "w+")
    sk = subprocess.Popen([BIN, "--address", "127.0.0.1:0", f"http://127.0.0.1:{bport}"],
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        port = None
        for _ in range(500):  # at most 10 s
            log.seek(0)
            m = re.search(r"listening on '[^']*:(\d+)'", log.read())
            if m:
                port = int(m.group(1))
                break
            await asyncio.sleep(0.02)
        assert port, "the sidecar did not say where it listens"
        await asyncio.sleep(5)  # probes done, start-up trim done
        idle = rss_kib(sk.pid)
        conns = []
        for i in range(0, N, 200):  # in batches of 200
            conns += await asyncio.gather(*(get(port) for _ in range(min(200, N - i))))
        await asyncio.sleep(1)
        open_ = rss_kib(sk.pid)
        for _, w in conns:
            w.close()
        conns.clear()
        await asyncio.sleep(4)  # the trimmer looks once a second
        after = rss_kib(sk.pid)
        print(f"connections={N} idle_kib={idle} open_kib={open_} closed_kib={after} "
              f"per_conn_kib={(open_ - idle) / N:.1f} kept_per_conn_kib={(after - idle) / N:.1f}")
    finally:
        sk.terminate()
        try:
            sk.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sk.kill()
            sk.wait()
        backend.close()
        log.seek(0)
        tail = log.read()[-400:]
        log.close()
        os.unlink(log.name)
        if tail.count("\n") > 2:
            print("sidecar output (end):", tail, file=sys.stderr)


asyncio.run(main())
