"""sidekick.requests.SidekickAdapter against real local backends."""

from __future__ import annotations

import threading
import time
from typing import Dict, List

import pytest

requests = pytest.importorskip("requests")

import sidekick  # noqa: E402
from sidekick.requests import NoEndpointAvailable, SidekickAdapter  # noqa: E402

from conftest import Backend, site_of, wait_until  # noqa: E402

FAST = dict(health_path="/health", health_interval=0.1, health_timeout=1.0, connect_timeout=0.5)
VIRTUAL = "http://storage.internal:9000"


def session_for(b: sidekick.Balancer, **kw: object) -> "requests.Session":
    s = requests.Session()
    s.trust_env = False  # no proxy from the environment: loopback only
    s.mount(VIRTUAL + "/", SidekickAdapter(b, **kw))
    return s


def test_host_and_url_are_the_virtual_ones(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), **FAST)
    s = session_for(b)
    r = s.get(VIRTUAL + "/echo?q=1", headers={"X-A": "1"})
    assert r.status_code == 200
    info = r.json()
    assert info["host"] == "storage.internal:9000"
    assert info["path"] == "/echo?q=1"
    assert r.url == VIRTUAL + "/echo?q=1"
    r = s.put(VIRTUAL + "/echo", data=b"body")
    assert r.json()["body"] == "body" and r.json()["method"] == "PUT"
    assert sum(e.requests for e in b.endpoints()) == 2


def test_default_port_is_left_out_of_host(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), health_check=False)
    s = requests.Session()
    s.trust_env = False
    s.mount("http://bucket.example/", SidekickAdapter(b))
    assert s.get("http://bucket.example/echo").json()["host"] == "bucket.example"


def test_connect_failure_retries_on_another_endpoint(backends: List[Backend]) -> None:
    dead = Backend("dead")  # never started
    # Round-robin: the dead endpoint's turn comes every fourth request. Under the default P2C an
    # endpoint never measured is scored at the site's typical latency, above its idle peers
    # (relaxed toward half of it), and 30 requests sometimes never picked it.
    b = sidekick.Balancer(
        [site_of(backends) + "," + dead.url],
        health_check=False,
        connect_timeout=0.5,
        policy="round-robin",
    )
    s = session_for(b)
    for _ in range(30):
        assert s.post(VIRTUAL + "/echo", data=b"x").status_code == 200  # not idempotent: still retried
    dead_info = {e.url: e for e in b.endpoints()}[dead.url]
    assert dead_info.failures >= 1


def test_retry_status_goes_elsewhere(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), health_check=False, retry_statuses=[503], max_attempts=3)
    s = session_for(b)
    r = s.get(VIRTUAL + "/status/503")
    assert r.status_code == 503  # every endpoint answered 503
    assert sum(e.requests for e in b.endpoints()) == 3


def test_the_engine_decides_idempotency_keys_and_the_budget(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), health_check=False, retry_statuses=[503], max_attempts=3)
    s = session_for(b)
    # A POST is not retried on a 503, unless an idempotency key makes it safe to repeat.
    assert s.post(VIRTUAL + "/status/503", data=b"x").status_code == 503
    assert sum(e.requests for e in b.endpoints()) == 1
    r = s.post(VIRTUAL + "/status/503", data=b"x", headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 503
    assert sum(e.requests for e in b.endpoints()) == 1 + 3
    # With the balancer's budget spent, a GET gets its 503 without a retry.
    spent = sidekick.Balancer(site_of(backends), health_check=False, retry_statuses=[503], retry_budget=(0.0, 0))
    assert session_for(spent).get(VIRTUAL + "/status/503").status_code == 503
    assert sum(e.requests for e in spent.endpoints()) == 1


def test_no_endpoint_is_a_requests_connection_error() -> None:
    b = sidekick.Balancer("http://127.0.0.1:9", warmup=0, **FAST)
    s = session_for(b)
    with pytest.raises(requests.ConnectionError) as info:
        s.get(VIRTUAL + "/")
    assert isinstance(info.value, NoEndpointAvailable)
    assert isinstance(info.value, sidekick.NoEndpointError)


def test_kill_a_backend_under_load_from_8_threads(backends: List[Backend]) -> None:
    """8 threads hammer 3 backends; one is killed, then restarted: no request fails and the
    restarted backend gets traffic again."""
    b = sidekick.Balancer(site_of(backends), **FAST)
    b.ready(5)
    assert wait_until(lambda: all(e.state == "up" for e in b.endpoints()), 5)
    victim = backends[1]
    ok = [0]
    failures: List[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    phase: Dict[str, int] = {}

    def work() -> None:
        s = session_for(b)
        deadline = time.monotonic() + 30
        for _ in range(5000):  # bounded in count and time
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                r = s.get(VIRTUAL + "/work", timeout=5)
                good = r.status_code == 200
            except Exception as e:  # pragma: no cover - reported below
                good = False
                with lock:
                    failures.append(repr(e))
            with lock:
                if good:
                    ok[0] += 1
                elif len(failures) < 20:
                    failures.append("status")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: ok[0] > 200, 10)
        victim.kill()
        phase["killed_at"] = ok[0]
        assert wait_until(lambda: {e.url: e for e in b.endpoints()}[victim.url].state == "down", 5)
        assert wait_until(lambda: ok[0] > phase["killed_at"] + 300, 10)
        before_restart = victim.requests
        victim.start()
        assert wait_until(lambda: victim.requests > before_restart + 20, 10), "no traffic after restart"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert ok[0] > 500
    info = {e.url: e for e in b.endpoints()}
    assert info[victim.url].state == "up"
    print("victim:", info[victim.url], "ok:", ok[0])
