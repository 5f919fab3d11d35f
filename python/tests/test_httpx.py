"""sidekick.httpx transports (sync and async) against real local backends."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import List

import pytest

httpx = pytest.importorskip("httpx")

import sidekick  # noqa: E402
from sidekick.httpx import AsyncSidekickTransport, NoEndpointAvailable, SidekickTransport  # noqa: E402

from conftest import Backend, site_of, wait_until  # noqa: E402

FAST = dict(health_path="/health", health_interval=0.1, health_timeout=1.0, connect_timeout=0.5)
VIRTUAL = "http://storage.internal:9000"


def test_sync_transport_keeps_host(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), **FAST)
    with httpx.Client(base_url=VIRTUAL, transport=SidekickTransport(b)) as c:
        r = c.get("/echo?x=1")
        assert r.status_code == 200
        info = r.json()
        assert info["host"] == "storage.internal:9000"
        assert info["path"] == "/echo?x=1"
        assert str(r.url) == VIRTUAL + "/echo?x=1"
        r = c.put("/echo", content=b"abc")
        assert r.json()["body"] == "abc"
        with c.stream("GET", "/echo") as s:  # buffered small body still streams to the caller
            assert b"".join(s.iter_raw())


def test_sync_transport_fails_over_on_connect_errors(backends: List[Backend]) -> None:
    dead = Backend("dead")
    b = sidekick.Balancer(site_of(backends) + "," + dead.url, health_check=False)
    with httpx.Client(base_url=VIRTUAL, transport=SidekickTransport(b)) as c:
        for _ in range(30):
            assert c.post("/", content=b"x").status_code == 200


def test_no_endpoint_is_an_httpx_connect_error() -> None:
    b = sidekick.Balancer("http://127.0.0.1:9", warmup=0, **FAST)
    with httpx.Client(base_url=VIRTUAL, transport=SidekickTransport(b)) as c:
        with pytest.raises(httpx.ConnectError) as info:
            c.get("/")
    assert isinstance(info.value, NoEndpointAvailable)


def test_sync_kill_under_load(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), **FAST)
    b.ready(5)
    victim = backends[0]
    ok = [0]
    failures: List[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    client = httpx.Client(base_url=VIRTUAL, transport=SidekickTransport(b), timeout=5)

    def work() -> None:
        deadline = time.monotonic() + 30
        for _ in range(5000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                good = client.get("/w").status_code == 200
            except Exception as e:  # pragma: no cover
                good = False
                with lock:
                    failures.append(repr(e))
            with lock:
                if good:
                    ok[0] += 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: ok[0] > 200, 10)
        victim.kill()
        mark = ok[0]
        assert wait_until(lambda: ok[0] > mark + 300, 10)
        before = victim.requests
        victim.start()
        assert wait_until(lambda: victim.requests > before + 20, 10)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        client.close()
    assert failures == []


def test_async_transport_under_load_with_a_kill(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), **FAST)
    b.ready(5)
    victim = backends[2]

    async def main() -> List[int]:
        statuses: List[int] = []
        transport = AsyncSidekickTransport(b)
        async with httpx.AsyncClient(base_url=VIRTUAL, transport=transport, timeout=5) as c:
            deadline = time.monotonic() + 30

            async def worker() -> None:
                for _ in range(80):
                    if time.monotonic() > deadline:
                        return
                    r = await c.get("/echo")
                    assert r.json()["host"] == "storage.internal:9000"
                    statuses.append(r.status_code)

            async def killer() -> None:
                await asyncio.sleep(0.3)
                victim.kill()

            await asyncio.gather(killer(), *(worker() for _ in range(16)))
        return statuses

    statuses = asyncio.run(main())
    assert len(statuses) == 16 * 80
    assert set(statuses) == {200}
    info = {e.url: e for e in b.endpoints()}
    assert info[victim.url].state in ("down", "ejected")


def test_async_no_endpoint() -> None:
    b = sidekick.Balancer("http://127.0.0.1:9", warmup=0, **FAST)

    async def main() -> None:
        async with httpx.AsyncClient(base_url=VIRTUAL, transport=AsyncSidekickTransport(b)) as c:
            with pytest.raises(httpx.ConnectError):
                await c.get("/")

    asyncio.run(main())
