"""Live membership: endpoints and sites changed while the balancer runs, against real local
backends."""

from __future__ import annotations

import os
import threading
from typing import Dict, List

import pytest

import sidekick

from conftest import Backend, site_of, wait_until

FAST = dict(health_path="/health", health_interval=0.05, health_timeout=1.0, connect_timeout=0.5)


def ids(b: sidekick.Balancer) -> Dict[str, int]:
    return {e.url: e.id for e in b.endpoints()}


def test_endpoints_come_and_go_while_threads_pick(backends: List[Backend]) -> None:
    a, b, c = backends
    events: List[sidekick.Event] = []
    bal = sidekick.Balancer(a.url, on_event=events.append, **FAST)
    bal.ready(5)
    assert bal.probe_tasks() == 1
    bal.add_endpoint(0, b.url)
    assert bal.probe_tasks() == 2
    assert wait_until(lambda: all(e.state == "up" for e in bal.endpoints()), 5)
    before = ids(bal)

    errors: List[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        for _ in range(1_000_000):
            if stop.is_set():
                return
            try:
                with bal.pick() as lease:
                    lease.status = 200
            except BaseException as e:  # noqa: BLE001 - every failure is the test's business
                errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(10):
            bal.add_endpoint(0, c.url)
            stop.wait(0.03)
            bal.remove_endpoint(c.url)
            stop.wait(0.03)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    # The endpoints that stayed are the same ones, with their state.
    assert ids(bal) == before
    for _ in range(200):
        with bal.pick() as lease:
            assert lease.url != c.url, "a removed endpoint is never picked"
    assert wait_until(lambda: bal.probe_tasks() == 2, 5), bal.probe_tasks()
    kinds = [(e.kind, e.endpoint) for e in events if e.kind in ("added", "removed")]
    assert kinds.count(("added", c.url)) == 10 and kinds.count(("removed", c.url)) == 10
    assert ("added", b.url) in kinds


def test_an_added_endpoint_waits_for_its_first_probe(backends: List[Backend]) -> None:
    a, b, _ = backends
    b.health_status = 503
    bal = sidekick.Balancer(a.url, **FAST)
    bal.ready(5)
    bal.add_endpoint(0, b.url)
    assert wait_until(lambda: {e.url: e.state for e in bal.endpoints()}[b.url] == "down", 5)
    for _ in range(50):
        with bal.pick() as lease:
            assert lease.url == a.url
    b.health_status = 200
    assert wait_until(lambda: all(e.state == "up" for e in bal.endpoints()), 5)


def test_sites_are_replaced_keeping_the_endpoints_that_stay(backends: List[Backend]) -> None:
    a, b, c = backends
    bal = sidekick.Balancer(site_of([a, b]), health_check=False)
    kept = ids(bal)[a.url]
    bal.set_sites([f"{a.url},{c.url}", b.url])
    assert bal.site_count == 2
    assert bal.sites == [f"{a.url},{c.url}", b.url]
    assert ids(bal)[a.url] == kept
    assert [e.site for e in bal.endpoints()] == [0, 0, 1]
    assert bal.add_site(f"{b.url},{c.url}") == 2
    bal.remove_site(0)
    assert bal.sites == [b.url, f"{b.url},{c.url}"]
    bal.set_site(0, c.url)
    assert bal.sites[0] == c.url
    with bal.pick() as lease:
        assert lease.url == c.url and lease.site == 0


def test_bad_changes_raise_by_name_and_change_nothing(backends: List[Backend]) -> None:
    a, b, _ = backends
    bal = sidekick.Balancer(a.url, health_check=False)
    with pytest.raises(sidekick.MembershipError, match="index 3"):
        bal.add_endpoint(3, b.url)
    with pytest.raises(sidekick.MembershipError, match="already"):
        bal.add_endpoint(0, a.url)
    with pytest.raises(sidekick.MembershipError, match="in no site"):
        bal.remove_endpoint("http://127.0.0.1:9")
    with pytest.raises(sidekick.MembershipError, match="no endpoint"):
        bal.remove_endpoint(a.url)
    with pytest.raises(sidekick.MembershipError, match="only site"):
        bal.remove_site(0)
    with pytest.raises(sidekick.ConfigError, match="scheme"):
        bal.add_endpoint(0, "127.0.0.1:9000")
    with pytest.raises(sidekick.ConfigError):
        bal.set_sites([b.url, "http://h{1...2"])
    with pytest.raises(ValueError):  # MembershipError is a ValueError too
        bal.set_sites([])
    assert bal.sites == [a.url]
    assert [e.url for e in bal.endpoints()] == [a.url]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_rebuilds_with_the_sites_in_force(backends: List[Backend]) -> None:
    from test_fork import run_in_child

    a, b, c = backends
    bal = sidekick.Balancer(a.url, **FAST)
    bal.ready(5)
    bal.set_sites([f"{a.url},{b.url}", c.url])
    bal.remove_endpoint(a.url)

    def child() -> int:
        # Rebuilt from the sites in force, not from those given at construction.
        if bal.sites != [b.url, c.url]:
            return 2
        bal.ready(5)
        if [(e.url, e.site) for e in bal.endpoints()] != [(b.url, 0), (c.url, 1)]:
            return 3
        with bal.pick() as lease:
            return 0 if lease.url == b.url else 4

    assert run_in_child(child) == 0
