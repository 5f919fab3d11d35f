"""What the adapters share: where to send each attempt and whether to try another endpoint.

The rules are the engine's (see the core crate's ``retry`` module), applied in Python because the
adapters send with the caller's own HTTP library:

- **nothing was sent** (the connection could not be established): any method is retried, on each
  endpoint at most once, at most 16 attempts;
- **sent, then failed** (reset, timeout, or a status in the balancer's ``retry_statuses``): only
  idempotent methods with a body that can be sent again, at most ``max_attempts`` attempts;
- never twice on the same endpoint: every attempt picks excluding the endpoints already tried,
  falling over to the next site when a site has none left.

(The engine's retry budget is not reachable from Python; ``max_attempts`` bounds the retries.)
"""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Literal, Optional, Tuple
from urllib.parse import SplitResult, urlsplit

from ._errors import NoEndpointError
from ._sidekick import Balancer, Lease

__all__ = [
    "Attempts",
    "FailureKind",
    "Limits",
    "IDEMPOTENT",
    "MAX_CONNECT_ATTEMPTS",
    "host_header",
    "host_of",
    "split_endpoint",
]

#: How an attempt failed, as given to ``Lease.finish``.
FailureKind = Literal["connect", "reset", "timeout", "failed", "cancelled"]

#: RFC 9110 §9.2.2.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

#: At most this many attempts for one request, connect failures included (as in the engine).
MAX_CONNECT_ATTEMPTS = 16

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


class Limits:
    """A balancer's retry options, read once (they never change)."""

    __slots__ = ("max_attempts", "retry_statuses")

    def __init__(self, balancer: Balancer) -> None:
        self.max_attempts: int = balancer.max_attempts
        self.retry_statuses: FrozenSet[int] = frozenset(balancer.retry_statuses)


class Attempts:
    """The attempts of one request: picks, what was tried, and whether another try is allowed.

    ``resendable`` says whether the request may be sent again after it was (possibly) received:
    an idempotent method with a body that can be replayed.
    """

    __slots__ = ("balancer", "tried", "attempts", "sent", "resendable", "max_attempts", "retry_statuses")

    def __init__(self, balancer: Balancer, resendable: bool, limits: Optional[Limits] = None) -> None:
        if limits is None:
            limits = Limits(balancer)
        self.balancer = balancer
        self.tried: List[int] = []
        self.attempts = 0
        self.sent = 0
        self.resendable = resendable
        self.max_attempts = limits.max_attempts
        self.retry_statuses = limits.retry_statuses

    def started(self, lease: Lease) -> "Attempts":
        """Count ``lease`` (picked by the caller) as the first attempt; returns self."""
        self.tried.append(lease.id)
        self.attempts = 1
        return self

    def first(self) -> Lease:
        """The lease of the first attempt (raises :class:`~sidekick.NoEndpointError`)."""
        lease = self.balancer.pick()
        self.tried.append(lease.id)
        self.attempts = 1
        return lease

    def _next(self) -> Optional[Lease]:
        try:
            lease = self.balancer.pick_excluding(self.tried)
        except NoEndpointError:
            return None
        self.tried.append(lease.id)
        self.attempts += 1
        return lease

    def after_failure(self, kind: FailureKind) -> Optional[Lease]:
        """The lease of the next attempt after a failure of ``kind`` (``connect``, ``reset``,
        ``timeout`` or ``failed``), or None when the failure should be raised."""
        if kind == "connect":
            if self.attempts >= MAX_CONNECT_ATTEMPTS:
                return None
            return self._next()
        self.sent += 1
        if kind == "failed" or not self.resendable or self.sent >= self.max_attempts:
            return None
        return self._next()

    def after_status(self, status: int) -> Optional[Lease]:
        """The lease of the next attempt after an answer with ``status``, or None to keep it."""
        if status not in self.retry_statuses or not self.resendable:
            return None
        if self.sent + 1 >= self.max_attempts:
            return None
        lease = self._next()
        if lease is not None:
            self.sent += 1
        return lease
