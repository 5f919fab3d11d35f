"""sidekick.Client: the engine's HTTP client, blocking and asyncio, GIL released while waiting."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import List

import pytest

import sidekick

from conftest import Backend, site_of, wait_until

FAST = dict(health_path="/health", health_interval=0.1, health_timeout=1.0, connect_timeout=0.5)


def test_get_and_request_keep_the_virtual_host(backends: List[Backend]) -> None:
    c = sidekick.Client(site_of(backends), **FAST)
    c.balancer.ready(5)
    r = c.get("http://storage.internal:9000/echo?x=1", headers={"X-Trace": "abc"})
    assert r.status == 200 and r.ok
    info = r.json()
    assert info["host"] == "storage.internal:9000"
    assert info["path"] == "/echo?x=1"
    assert info["headers"]["x-trace"] == "abc"
    assert r.headers["content-type"] == "application/json"
    assert r.header("X-BACKEND") == info["backend"]
    assert ("x-backend", info["backend"]) in r.header_list
    r = c.request("PUT", "/echo", headers=[("Content-Type", "text/plain")], body="payload")
    assert json.loads(r.text)["body"] == "payload"
    r = c.request("POST", "/echo", body=bytearray(b"\x00\x01"))
    assert r.json()["method"] == "POST"
    r = c.get("/status/404")
    assert r.status == 404 and not r.ok
    assert "Response(status=404)" == repr(r)


def test_connect_failures_fail_over(backends: List[Backend]) -> None:
    # Probes off: the dead endpoint stays listed until a request fails on it.
    dead = Backend("dead")  # never started: connection refused
    c = sidekick.Client(site_of(backends) + "," + dead.url, health_check=False, connect_timeout=0.5)
    for _ in range(40):
        assert c.get("/").status == 200
    state = {e.url: e for e in c.balancer.endpoints()}[dead.url]
    assert state.state in ("ejected", "trial", "up")  # ejected once it was tried
    assert sum(e.requests for e in c.balancer.endpoints()) >= 40


def test_errors_map_to_exceptions() -> None:
    c = sidekick.Client("http://127.0.0.1:9", health_check=False, connect_timeout=0.3)
    with pytest.raises(sidekick.ConnectError) as info:
        c.get("/")
    assert isinstance(info.value, ConnectionError)
    assert info.value.endpoint == "http://127.0.0.1:9"
    c = sidekick.Client("http://127.0.0.1:9", warmup=0, **FAST)
    with pytest.raises(sidekick.NoEndpointError):
        c.get("/")


def test_timeout(backends: List[Backend]) -> None:
    c = sidekick.Client(backends[0].url, health_check=False)
    t0 = time.monotonic()
    with pytest.raises(sidekick.TimeoutError) as info:
        c.get("/slow?ms=2000", timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - t0 < 1.5


def test_gil_is_released_during_a_slow_request(backends: List[Backend]) -> None:
    c = sidekick.Client(backends[0].url, health_check=False)
    c.get("/")  # connection warm
    progress = [0]
    stop = threading.Event()

    def spin() -> None:
        n = 0
        t_end = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < t_end:
            n += 1
            progress[0] = n

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        before = progress[0]
        r = c.get("/slow?ms=800", timeout=5)
        during = progress[0] - before
    finally:
        stop.set()
        t.join(5)
    assert r.status == 200
    # Holding the GIL for 0.8 s would leave the spinning thread at ~0 iterations (and the
    # in-process server could not even answer before the timeout).
    assert during > 10_000, during


def test_many_threads_share_one_client(backends: List[Backend]) -> None:
    c = sidekick.Client(site_of(backends), **FAST)
    c.balancer.ready(5)
    errors: List[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                assert c.get("/").status == 200
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(e.requests for e in c.balancer.endpoints()) == 400


def test_async_under_load_with_a_backend_killed(backends: List[Backend]) -> None:
    c = sidekick.Client(site_of(backends), **FAST)
    c.balancer.ready(5)
    victim = backends[2]

    async def main() -> List[int]:
        statuses: List[int] = []
        deadline = time.monotonic() + 20

        async def worker(i: int) -> None:
            for _ in range(60):
                if time.monotonic() > deadline:
                    return
                r = await c.aget("/", timeout=5)
                statuses.append(r.status)

        async def killer() -> None:
            await asyncio.sleep(0.2)
            victim.kill()

        await asyncio.gather(killer(), *(worker(i) for i in range(16)))
        return statuses

    statuses = asyncio.run(main())
    assert len(statuses) == 16 * 60
    assert set(statuses) == {200}
    victim.start()
    assert wait_until(lambda: {e.url: e for e in c.balancer.endpoints()}[victim.url].state == "up", 5)


def test_async_request_and_errors(backends: List[Backend]) -> None:
    c = sidekick.Client(backends[0].url, health_check=False)

    async def main() -> None:
        r = await c.arequest("PUT", "/echo", body=b"abc", headers={"Host": "virtual:1"})
        assert r.json()["body"] == "abc"
        assert r.json()["host"] == "virtual:1"
        with pytest.raises(sidekick.TimeoutError):
            await c.aget("/slow?ms=2000", timeout=0.2)
        # Cancellation cancels the request.
        task = asyncio.ensure_future(c.aget("/slow?ms=2000"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The loop stays responsive while requests are in flight.
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1

        await asyncio.gather(c.aget("/slow?ms=300"), ticker())
        assert ticks == 20

    asyncio.run(main())
    bad = sidekick.Client("http://127.0.0.1:9", health_check=False, connect_timeout=0.3)

    async def failing() -> None:
        with pytest.raises(sidekick.ConnectError):
            await bad.aget("/")

    asyncio.run(failing())


def test_arequest_needs_a_running_loop(backends: List[Backend]) -> None:
    c = sidekick.Client(backends[0].url, health_check=False)
    with pytest.raises(RuntimeError):
        c.aget("/")


def test_first_request_waits_for_the_first_probes(backends: List[Backend]) -> None:
    c = sidekick.Client(site_of(backends), **FAST)
    assert c.get("/").status == 200  # no ready(): the warm-up covers the first verdicts

    c2 = sidekick.Client(site_of(backends), **FAST)

    async def main() -> int:
        return (await c2.aget("/")).status

    assert asyncio.run(main()) == 200
