"""Bad arguments raise sidekick.ConfigError, and the message names the bad part."""

from __future__ import annotations

import datetime

import pytest

import sidekick

SITE = "http://127.0.0.1:{9001...9003}"


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"health_interval": 0}, "health_interval"),
        ({"health_interval": -1}, "health_interval"),
        ({"health_interval": "5s"}, "health_interval"),
        ({"health_timeout": float("nan")}, "health_timeout"),
        ({"health_jitter": 11.0}, "health_jitter"),
        ({"health_port": 0}, "health_port"),
        ({"health_port": 70000}, "health_port"),
        ({"health_path": 5}, "health_path"),
        ({"health_check": 1}, "health_check"),
        ({"health_optimistic": "yes"}, "health_optimistic"),
        ({"healthy_statuses": []}, "healthy_statuses"),
        ({"healthy_statuses": [200, 700]}, "healthy_statuses"),
        ({"healthy_statuses": "200"}, "healthy_statuses"),
        ({"rise": 0}, "rise"),
        ({"rise": -1}, "rise"),
        ({"rise": 1.5}, "rise"),
        ({"policy": "fastest"}, "policy"),
        ({"host_policy": "drop"}, "host_policy"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_ejected_share": 2.0}, "max_ejected_share"),
        ({"eject_backoff": (5, 1)}, "eject_backoff"),
        ({"eject_backoff": 5}, "eject_backoff"),
        ({"retry_budget": (0.2,)}, "retry_budget"),
        ({"retry_statuses": [99]}, "retry_statuses"),
        ({"attempt_timeout": 0}, "attempt_timeout"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"on_event": 3}, "on_event"),
        ({"warmup": -2}, "warmup"),
        ({"helth_path": "/"}, "helth_path"),
        ({"slow_start": 0}, "slow_start"),
        ({"slow_start": "1s"}, "slow_start"),
        ({"site_spillover": "yes"}, "site_spillover"),
        ({"overprovisioning": 0}, "overprovisioning"),
        ({"overprovisioning": "lots"}, "overprovisioning"),
    ],
)
def test_bad_option_names_the_option(kwargs: dict, named: str) -> None:
    with pytest.raises(sidekick.ConfigError) as info:
        sidekick.Balancer(SITE, **kwargs)
    assert named in str(info.value)


@pytest.mark.parametrize(
    "sites, named",
    [
        ("ftp://127.0.0.1:9000", "site 1"),
        ("http://127.0.0.1:{9001...}", "site 1"),
        (["http://127.0.0.1:9001", "http://h:{3...1}"], "site 2"),
        ([], "no site"),
        ([5], "site 1"),
        (None, "sites"),
        (42, "sites"),
        ({"a": 1}, "sites"),
    ],
)
def test_bad_site_names_the_site(sites: object, named: str) -> None:
    with pytest.raises(sidekick.ConfigError) as info:
        sidekick.Balancer(sites, health_check=False)  # type: ignore[arg-type]
    assert named in str(info.value)


def test_config_error_is_a_value_error_and_a_sidekick_error() -> None:
    with pytest.raises(ValueError):
        sidekick.Balancer(SITE, rise=0)
    with pytest.raises(sidekick.Error):
        sidekick.Balancer(SITE, rise=0)
    assert issubclass(sidekick.ConfigError, sidekick.Error)


def test_unknown_option_suggests_the_right_one() -> None:
    with pytest.raises(sidekick.ConfigError, match="did you mean `health_path`"):
        sidekick.Balancer(SITE, helth_path="/")


def test_good_options_and_timedelta() -> None:
    b = sidekick.Balancer(
        [SITE, "http://127.0.0.2:9001"],
        policy="least",
        health_check=False,
        health_path="minio/health/ready",
        last_site_health_path="/minio/health/cluster/read",
        health_port=None,
        health_interval=datetime.timedelta(milliseconds=500),
        health_timeout=2,
        health_jitter=0.5,
        health_optimistic=True,
        healthy_statuses=(200, 403),
        rise=2,
        fall=3,
        eject_statuses=[503],
        eject_after=2,
        max_ejected_share=0.3,
        eject_backoff=(0.5, 10),
        failure_statuses=range(500, 600),
        failure_penalty=0.5,
        ewma_decay=5,
        default_rtt=0.005,
        max_attempts=4,
        retry_statuses=[503],
        retry_buffer=1024,
        retry_budget=(0.1, 5),
        host_policy="rewrite",
        attempt_timeout=1.5,
        connect_timeout=0.5,
        pool_idle_timeout=30,
        pool_max_idle_per_host=8,
        rr_dns=False,
        dns_refresh=10,
        on_event=None,
        warmup=0,
    )
    assert b.site_count == 2
    assert b.policy == "least"
    assert b.max_attempts == 4
    assert b.retry_statuses == [503]
    assert b.host_policy == "rewrite"
    assert len(b.endpoints()) == 4
    assert "Balancer(" in repr(b)


def test_client_arguments() -> None:
    b = sidekick.Balancer(SITE, health_check=False)
    with pytest.raises(sidekick.ConfigError, match="balancer"):
        sidekick.Client(SITE, balancer=b)
    with pytest.raises(sidekick.ConfigError, match="balancer"):
        sidekick.Client(balancer=b, health_check=False)
    with pytest.raises(sidekick.ConfigError, match="site"):
        sidekick.Client()
    with pytest.raises(sidekick.ConfigError, match="health_timeout"):
        sidekick.Client(SITE, health_timeout=-1)
    c = sidekick.Client(balancer=b)
    with pytest.raises(sidekick.ConfigError, match="method"):
        c.request("GE T", "/")
    with pytest.raises(sidekick.ConfigError, match="url"):
        c.request("GET", "http://[bad")
    with pytest.raises(sidekick.ConfigError, match="headers"):
        c.request("GET", "/", headers={"bad name": "x"})
    with pytest.raises(sidekick.ConfigError, match="body"):
        c.request("PUT", "/", body=12)  # type: ignore[arg-type]
    with pytest.raises(sidekick.ConfigError, match="timeout"):
        c.request("GET", "/", timeout=-1)


def test_lease_arguments() -> None:
    b = sidekick.Balancer(SITE, health_check=False)
    lease = b.pick()
    with pytest.raises(sidekick.ConfigError, match="outcome"):
        lease.finish("exploded")
    with pytest.raises(sidekick.ConfigError, match="status"):
        lease.finish(status=42)
    with pytest.raises(sidekick.ConfigError, match="status"):
        lease.status = 1000
    assert not lease.finished
    assert lease.finish("success")
    assert not lease.finish("success")  # nothing is reported twice


def test_adapters_check_the_balancer() -> None:
    requests = pytest.importorskip("requests")
    from sidekick.requests import SidekickAdapter

    with pytest.raises(sidekick.ConfigError, match="balancer"):
        SidekickAdapter("http://127.0.0.1:1")  # type: ignore[arg-type]
    assert requests  # imported
    pytest.importorskip("httpx")
    from sidekick.httpx import SidekickTransport

    with pytest.raises(sidekick.ConfigError, match="balancer"):
        SidekickTransport(None)  # type: ignore[arg-type]


def test_options_read_back_with_the_engine_defaults() -> None:
    b = sidekick.Balancer(
        SITE,
        health_check=False,
        health_interval=datetime.timedelta(milliseconds=500),
        eject_backoff=(0.5, 10),
        eject_statuses=[503],
        attempt_timeout=None,
    )
    assert b.option("health_interval") == 0.5
    assert b.option("eject_backoff_base") == 0.5
    assert b.option("eject_backoff_max") == 10.0
    assert b.option("eject_statuses") == [503]
    assert b.option("attempt_timeout") is None
    assert b.option("health_check") is False
    # Untouched: the engine's defaults, which no binding restates.
    assert b.option("rise") == 1
    assert b.option("health_jitter") == 0.2
    assert b.option("failure_statuses") == list(range(500, 600)) + [429]
    assert b.option("policy") == "p2c"
    assert b.option("health_port") is None
    with pytest.raises(sidekick.ConfigError, match="did you mean `max_attempts`"):
        b.option("max_attempt")


def test_selection_options_read_back() -> None:
    b = sidekick.Balancer(
        [SITE, "http://127.0.0.2:9001"],
        health_check=False,
        slow_start=datetime.timedelta(milliseconds=1500),
        site_spillover=True,
        overprovisioning=2,
    )
    assert b.option("slow_start") == 1.5
    assert b.option("site_spillover") is True
    assert b.option("overprovisioning") == 2.0
    # Off by default (sidekick's all-or-nothing failover), with Envoy's factor.
    d = sidekick.Balancer(SITE, health_check=False)
    assert d.option("slow_start") is None
    assert d.option("site_spillover") is False
    assert d.option("overprovisioning") == 1.4
    # Every endpoint is up (no probes): site 1 keeps every pick, spill-over or not.
    for _ in range(50):
        lease = b.pick()
        assert lease.site == 0
        lease.finish("cancelled")
