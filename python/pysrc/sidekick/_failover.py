"""What the adapters share: where to send each attempt, and how to follow the engine's answers.

The retry rules are the engine's (the core crate's ``retry`` module), asked through
:meth:`sidekick.Balancer.attempts`: the adapters only translate their library's errors into
outcomes (``connect``, ``reset``, ``timeout``, ``failed``, ``cancelled``) and statuses, and do
what :meth:`sidekick.Attempts.decide` says. The retry budget is then the balancer's, shared by
every adapter and every other caller of it in the process.
"""

from __future__ import annotations

from typing import Any, Dict, Literal, Mapping, Optional, Tuple, Union
from urllib.parse import SplitResult, urlsplit

from ._sidekick import Attempts, Balancer, Lease

__all__ = [
    "FailureKind",
    "after",
    "has_idempotency_key",
    "host_header",
    "host_of",
    "split_endpoint",
    "start",
]

#: How an attempt failed, as given to ``Lease.finish`` and ``Attempts.decide``.
FailureKind = Literal["connect", "reset", "timeout", "failed", "cancelled"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_header(url: str) -> str:
    """The ``Host`` an HTTP library (and an AWS signer) derives from ``url``.

    Lower-case host, IPv6 in brackets, the port only when it is not the scheme's default,
    never the userinfo.
    """
    return host_of(urlsplit(url))


def host_of(parts: SplitResult) -> str:
    """:func:`host_header` of an already split URL."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return host


_endpoint_cache: Dict[str, Tuple[str, str, Optional[int], str]] = {}


def split_endpoint(url: str) -> Tuple[str, str, Optional[int], str]:
    """``(scheme, host, port, base_path)`` of an endpoint URL such as ``http://10.0.0.1:9000``.

    ``base_path`` has no trailing slash ("" when none). Cached: endpoints are few.
    """
    hit = _endpoint_cache.get(url)
    if hit is not None:
        return hit
    parts = urlsplit(url)
    value = (parts.scheme, parts.hostname or "", parts.port, parts.path.rstrip("/"))
    if len(_endpoint_cache) < 4096:
        _endpoint_cache[url] = value
    return value


def has_idempotency_key(headers: Mapping[str, Any]) -> bool:
    """Whether ``headers`` (a case-insensitive mapping) carry an ``Idempotency-Key`` or
    ``X-Idempotency-Key`` header: the names the engine's ``retry::has_idempotency_key`` reads."""
    return "Idempotency-Key" in headers or "X-Idempotency-Key" in headers


def start(balancer: Balancer, method: str, headers: Mapping[str, Any], replayable: bool) -> Attempts:
    """The engine's attempts for one request (counted in the balancer's retry budget)."""
    return balancer.attempts(method, has_idempotency_key(headers), replayable)


def after(attempts: Attempts, lease: Lease, outcome: Union[int, FailureKind]) -> Optional[Lease]:
    """Follow the engine's decision after an attempt that ended with ``outcome`` (a status or a
    failure kind): the lease of the next attempt, or None when the result goes back to the
    caller (``lease`` is then finished)."""
    decision, _reason, nxt = attempts.decide(lease, outcome)
    if decision == "retry":
        return nxt
    if nxt is not None:  # done: the answer is complete enough to judge now
        nxt.finish(outcome)
    return None
