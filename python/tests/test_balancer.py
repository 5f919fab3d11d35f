"""Balancer, Lease and EndpointInfo against real local backends."""

from __future__ import annotations

import threading
import time
from typing import List, Tuple

import pytest

import sidekick

from conftest import Backend, site_of, wait_until

FAST = dict(health_path="/health", health_interval=0.1, health_timeout=1.0, connect_timeout=0.5)


def by_url(b: sidekick.Balancer) -> dict:
    return {e.url: e for e in b.endpoints()}


def test_probes_bring_endpoints_up_and_pick_works(backends: List[Backend]) -> None:
    # Round-robin, so that 60 picks surely visit all three (p2c may rightly avoid one).
    b = sidekick.Balancer(site_of(backends), policy="round-robin", **FAST)
    b.ready(5)
    assert wait_until(lambda: all(e.state == "up" for e in b.endpoints()), 5)
    seen = set()
    for _ in range(60):
        with b.pick() as lease:
            assert lease.url in {x.url for x in backends}
            assert lease.site == 0
            seen.add(lease.url)
    assert len(seen) == 3
    infos = b.endpoints()
    assert sum(e.requests for e in infos) == 60
    assert all(e.failures == 0 and e.available for e in infos)
    d = infos[0].to_dict()
    assert set(d) >= {"id", "url", "site", "state", "inflight", "latency", "requests", "failures"}


def test_first_pick_waits_for_the_first_probes(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), **FAST)
    with b.pick() as lease:  # no ready(): the warm-up wait covers the first verdicts
        assert lease.url


def test_no_warmup_fails_fast() -> None:
    b = sidekick.Balancer("http://127.0.0.1:9", warmup=0, **FAST)
    t0 = time.monotonic()
    with pytest.raises(sidekick.NoEndpointError):
        b.pick()
    assert time.monotonic() - t0 < 0.5


def test_lease_reports_status_and_failures(backends: List[Backend]) -> None:
    b = sidekick.Balancer(backends[0].url, health_check=False, eject_statuses=[503], eject_after=100)
    with b.pick() as lease:
        lease.status = 503
    with b.pick() as lease:
        lease.report(200)
    with pytest.raises(ZeroDivisionError):
        with b.pick():
            1 / 0
    lease = b.pick()
    assert lease.finish("status", status=500, latency=0.002)
    info = b.endpoints()[0]
    assert info.requests == 4
    assert info.failures == 3  # 503, the exception ("failed"), 500
    assert info.state == "up"
    assert info.latency is not None


def test_connection_error_in_lease_ejects(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), health_check=False, eject_backoff=(30, 60))
    with pytest.raises(ConnectionRefusedError):
        with b.pick() as lease:
            victim = lease.url
            raise ConnectionRefusedError("refused")
    state = by_url(b)[victim]
    assert state.state == "ejected"
    assert state.ejections == 1
    for _ in range(30):
        with b.pick() as lease:
            assert lease.url != victim


def test_cancelled_outcomes_are_not_failures(backends: List[Backend]) -> None:
    b = sidekick.Balancer(backends[0].url, health_check=False)
    with pytest.raises(KeyboardInterrupt):
        with b.pick():
            raise KeyboardInterrupt
    b.pick()  # dropped unfinished: cancelled
    info = b.endpoints()[0]
    assert info.requests == 0 and info.failures == 0 and info.inflight == 0


def test_pick_excluding_and_no_endpoint(backends: List[Backend]) -> None:
    b = sidekick.Balancer(site_of(backends), health_check=False)
    ids = [e.id for e in b.endpoints()]
    lease = b.pick_excluding(ids[:2])
    assert lease.id == ids[2]
    lease.finish()
    with pytest.raises(sidekick.NoEndpointError):
        b.pick_excluding(ids)


def test_killed_backend_goes_down_and_comes_back(backends: List[Backend]) -> None:
    events: List[sidekick.Event] = []
    lock = threading.Lock()

    def on_event(ev: sidekick.Event) -> None:
        with lock:
            events.append(ev)

    b = sidekick.Balancer(site_of(backends), on_event=on_event, **FAST)
    b.ready(5)
    assert wait_until(lambda: all(e.state == "up" for e in b.endpoints()), 5)
    victim = backends[1]
    victim.kill()
    assert wait_until(lambda: by_url(b)[victim.url].state == "down", 5)
    for _ in range(50):
        with b.pick() as lease:
            assert lease.url != victim.url
    assert by_url(b)[victim.url].last_error
    victim.start()
    assert wait_until(lambda: by_url(b)[victim.url].state == "up", 5)

    def kinds() -> List[Tuple[str, str]]:
        with lock:
            return [(e.kind, e.endpoint) for e in events]

    def up_after_down(k: List[Tuple[str, str]]) -> bool:
        if ("down", victim.url) not in k or ("up", victim.url) not in k:
            return False
        return k.index(("down", victim.url)) < len(k) - 1 - k[::-1].index(("up", victim.url))

    # Events reach the callback on sidekick's threads, possibly after the state is visible.
    wait_until(lambda: ("down", victim.url) in kinds() and up_after_down(kinds()), 5)
    k = kinds()
    assert ("down", victim.url) in k
    assert up_after_down(k)
    down = next(e for e in events if e.kind == "down" and e.endpoint == victim.url)
    assert down.site == 0 and down.reason
    assert "Event(" in repr(down)


def test_site_failover_and_return(backend_factory) -> None:  # type: ignore[no-untyped-def]
    primary = [backend_factory("p0"), backend_factory("p1")]
    backup = [backend_factory("s0")]
    b = sidekick.Balancer([site_of(primary), site_of(backup)], **FAST)
    b.ready(5)
    assert wait_until(lambda: all(e.state == "up" for e in b.endpoints()), 5)
    for _ in range(20):
        with b.pick() as lease:
            assert lease.site == 0
    for p in primary:
        p.kill()
    assert wait_until(lambda: b.pick().site == 1, 5)
    for p in primary:
        p.start()
    assert wait_until(lambda: b.pick().site == 0, 5)


def test_ready_times_out_with_not_ready() -> None:
    b = sidekick.Balancer("http://127.0.0.1:9", warmup=0, **FAST)
    t0 = time.monotonic()
    with pytest.raises(sidekick.NotReadyError):
        b.ready(0.3)
    assert 0.25 < time.monotonic() - t0 < 3
    assert issubclass(sidekick.NotReadyError, sidekick.NoEndpointError)
    assert not b.is_available()


def test_healthy_statuses_accept_403(backend_factory) -> None:  # type: ignore[no-untyped-def]
    srv = backend_factory("auth")
    srv.health_status = 403
    strict = sidekick.Balancer(srv.url, **FAST)
    lenient = sidekick.Balancer(srv.url, healthy_statuses=[200, 403], **FAST)
    lenient.ready(5)
    assert wait_until(lambda: strict.endpoints()[0].state == "down", 5)
    assert lenient.endpoints()[0].state == "up"


def test_blocking_calls_from_on_event_raise_instead_of_panicking(backends: List[Backend]) -> None:
    seen: List[str] = []
    holder: List[sidekick.Client] = []

    def on_event(ev: sidekick.Event) -> None:
        if ev.kind != "up" or not holder:
            return
        try:
            holder[0].get("/")
        except sidekick.Error as e:
            seen.append(str(e))

    c = sidekick.Client(backends[0].url, on_event=on_event, **FAST)
    holder.append(c)
    c.balancer.ready(5)
    victim = backends[0]
    victim.kill()
    assert wait_until(lambda: c.balancer.endpoints()[0].state == "down", 5)
    victim.start()
    assert wait_until(lambda: bool(seen), 5)  # the probe's "up" event ran on a runtime thread
    assert "runtime threads" in seen[0]


def test_spillover_shares_and_slow_start_events(backend_factory) -> None:  # type: ignore[no-untyped-def]
    primary = [backend_factory("q0"), backend_factory("q1")]
    backup = [backend_factory("t0")]
    events: List[sidekick.Event] = []
    lock = threading.Lock()

    def on_event(ev: sidekick.Event) -> None:
        with lock:
            events.append(ev)

    def of_kind(kind: str) -> List[sidekick.Event]:
        with lock:
            return [e for e in events if e.kind == kind]

    b = sidekick.Balancer(
        [site_of(primary), site_of(backup)],
        site_spillover=True,
        slow_start=0.5,
        on_event=on_event,
        **FAST,
    )
    assert wait_until(lambda: all(e.state == "up" for e in b.endpoints()), 5)
    victim = primary[1]
    victim.kill()
    assert wait_until(lambda: by_url(b)[victim.url].state == "down", 5)
    # Site 1 at 1 of 2: 0.5 x 1.4 = 70 % stays, 30 % spills to site 2.
    assert wait_until(lambda: [e.shares for e in of_kind("site_shares")][-1:] == [[70, 30]], 5)
    victim.start()
    assert wait_until(lambda: any(e.endpoint == victim.url for e in of_kind("slow_start_began")), 5)
    began = next(e for e in of_kind("slow_start_began") if e.endpoint == victim.url)
    assert began.window == 0.5 and began.site == 0
    assert wait_until(lambda: any(e.endpoint == victim.url for e in of_kind("slow_start_ended")), 5)
    assert [e.shares for e in of_kind("site_shares")][-1] == [100, 0]
