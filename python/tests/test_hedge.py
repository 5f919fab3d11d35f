"""Hedged requests through sidekick.Client: the engine's option table and its request loop."""

from __future__ import annotations

import socket
import threading
from typing import Iterator, List

import pytest

import sidekick

from conftest import HOST, Backend


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A listening socket that is never accepted: connections complete, answers never come."""
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen(16)
    try:
        yield f"http://{HOST}:{s.getsockname()[1]}"
    finally:
        s.close()


def test_hedge_options_read_back() -> None:
    b = sidekick.Balancer(
        "http://127.0.0.1:9001", health_check=False, hedge_delay=0.05, hedge_max=2
    )
    assert b.option("hedge_delay") == 0.05
    assert b.option("hedge_max") == 2
    assert b.option("hedge_percentile") == 0.0
    # Off by default.
    assert sidekick.Balancer("http://127.0.0.1:9001", health_check=False).option("hedge_delay") is None
    with pytest.raises(sidekick.ConfigError, match="hedge_percentile"):
        sidekick.Balancer("http://127.0.0.1:9001", hedge_percentile=101.0)


def test_a_request_to_a_silent_endpoint_is_hedged(
    backends: List[Backend], black_hole: str
) -> None:
    events: List[sidekick.Event] = []
    lock = threading.Lock()

    def on_event(e: sidekick.Event) -> None:
        with lock:
            events.append(e)

    c = sidekick.Client(
        f"{black_hole},{backends[0].url}",
        health_check=False,
        policy="round-robin",
        hedge_delay=0.05,
        on_event=on_event,
    )
    # Round-robin: at least one request goes to the silent endpoint first; without the hedge it
    # would wait for the 3 s timeout and fail.
    for _ in range(2):
        r = c.get("/", timeout=3)
        assert r.status == 200 and r.text == backends[0].name
    with lock:
        kinds = [e.kind for e in events]
        sent = [e for e in events if e.kind == "hedge_sent"]
    assert "hedge_won" in kinds, kinds
    assert sent and sent[0].endpoint == backends[0].url and sent[0].attempt == 1
