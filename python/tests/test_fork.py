"""Balancers and clients made before os.fork() keep working in the child (and in the parent).

The child forgets the parent's runtime (its threads do not exist there) and each balancer rebuilds
itself from its stored configuration on first use. The servers live in the parent process; the
parent only waits (sleeping, so its server threads answer the child).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Callable, List, Optional

import pytest

import sidekick

from conftest import Backend, site_of, wait_until

FAST = dict(health_path="/health", health_interval=0.1, health_timeout=1.0, connect_timeout=0.5)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def run_in_child(fn: Callable[[], int], timeout: float = 30) -> int:
    """Fork, run ``fn`` in the child, return its exit code (killing it after ``timeout``)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            code = fn()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung")
        time.sleep(0.02)


def test_balancer_and_client_work_after_fork(backends: List[Backend]) -> None:
    client = sidekick.Client(site_of(backends), **FAST)
    balancer = client.balancer
    balancer.ready(5)
    assert client.get("/").status == 200  # the parent's runtime is running and busy
    lease_from_parent = balancer.pick()
    gen = sidekick._sidekick._generation()

    def child() -> int:
        assert sidekick._sidekick._generation() == gen + 1
        # A lease picked before the fork is inert here: finishing it reports nothing.
        lease_from_parent.finish("connect")
        # First use rebuilds: pick waits for the first probe verdicts (warm-up).
        with balancer.pick() as lease:
            assert lease.url
        for _ in range(20):
            assert client.get("/echo").json()["backend"] in {"b0", "b1", "b2"}
        assert wait_until(lambda: all(e.state == "up" for e in balancer.endpoints()), 5)
        infos = balancer.endpoints()
        assert sum(e.requests for e in infos) >= 21
        # Async works too, on the child's runtime.
        import asyncio

        async def a() -> int:
            r = await client.aget("/")
            return r.status

        assert asyncio.run(a()) == 200
        return 0

    assert run_in_child(child) == 0
    # The parent is unaffected.
    lease_from_parent.finish()
    for _ in range(20):
        assert client.get("/").status == 200
    assert sidekick._sidekick._generation() == gen


def test_new_objects_in_the_child_and_nested_fork(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), health_check=False)
    with b.pick():
        pass

    def grandchild() -> int:
        c = sidekick.Client(balancer=b)
        return 0 if c.get("/").status == 200 else 3

    def child() -> int:
        c = sidekick.Client(site_of(backends), health_check=False)
        if c.get("/").status != 200:
            return 2
        return run_in_child(grandchild)

    assert run_in_child(child) == 0


def test_requests_adapter_after_fork(backends: List[Backend]) -> None:
    requests = pytest.importorskip("requests")
    from sidekick.requests import SidekickAdapter

    b = sidekick.Balancer(site_of(backends), **FAST)
    b.ready(5)
    s = requests.Session()
    s.trust_env = False
    s.mount("http://svc.internal/", SidekickAdapter(b))
    assert s.get("http://svc.internal/").status_code == 200

    def child() -> int:
        for _ in range(20):
            if s.get("http://svc.internal/echo").json()["host"] != "svc.internal":
                return 2
        return 0

    assert run_in_child(child) == 0


# multiprocessing's "fork" context: the pool workers inherit this module's global client.
_CLIENT: Optional[sidekick.Client] = None


def _pool_job(i: int) -> int:
    assert _CLIENT is not None
    r = _CLIENT.get(f"/echo?i={i}")
    return r.status


def test_multiprocessing_fork_pool(backends: List[Backend]) -> None:
    global _CLIENT
    _CLIENT = sidekick.Client(site_of(backends), **FAST)
    _CLIENT.balancer.ready(5)
    assert _CLIENT.get("/").status == 200
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(3)
    try:
        statuses = pool.map_async(_pool_job, range(30)).get(timeout=60)
    finally:
        pool.terminate()
        pool.join()
    assert statuses == [200] * 30
    assert _CLIENT.get("/").status == 200
    _CLIENT = None


def test_fork_while_requests_are_in_flight(backends: List[Backend]) -> None:
    """Fork while other threads of the parent are inside the runtime: the child still works."""
    import threading

    client = sidekick.Client(site_of(backends), health_check=False)
    stop = threading.Event()

    def busy() -> None:
        for _ in range(100000):
            if stop.is_set():
                return
            client.get("/")

    threads = [threading.Thread(target=busy) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: sum(x.requests for x in backends) > 50, 10)
        for _ in range(3):
            assert run_in_child(lambda: 0 if client.get("/").status == 200 else 2) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(30)
