"""Type stubs of the native module ``sidekick._sidekick`` (re-exported by ``sidekick``)."""

from __future__ import annotations

import datetime
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
    final,
)

__version__: str
__all__ = [
    "__version__",
    "Attempts",
    "Balancer",
    "Lease",
    "EndpointInfo",
    "Event",
    "Client",
    "Response",
    "_after_fork_in_child",
    "_set_finalizing",
    "_generation",
]

#: _Seconds, as a number or a ``datetime.timedelta``.
_Seconds = Union[float, int, datetime.timedelta]

_OutcomeName = Literal["success", "status", "connect", "reset", "timeout", "failed", "cancelled"]
_PolicyName = Literal["p2c", "peak-ewma", "ewma", "least", "least-requests", "round-robin", "rr", "random"]
_EndpointStateName = Literal["unknown", "up", "down", "ejected", "trial"]
_EventKind = Literal[
    "up",
    "down",
    "ejected",
    "returned",
    "retry",
    "budget_exhausted",
    "hedge_sent",
    "hedge_won",
    "added",
    "removed",
    "slow_start_began",
    "slow_start_ended",
    "site_shares",
]
_Headers = Union[Mapping[str, Union[str, bytes]], Iterable[Tuple[str, Union[str, bytes]]]]
_Body = Union[bytes, bytearray, memoryview, str]

@final
class Event:
    """A state change or a retry, given to the ``on_event`` callback.

    The callback runs on sidekick's runtime threads or on the request path: keep it quick, and
    thread-safe. Blocking calls (``Client.request``, ``Balancer.ready``) raise
    :class:`sidekick.Error` there instead of waiting; ``pick()`` does not wait for a warm-up.
    Exceptions it raises are reported through ``sys.unraisablehook``.
    """

    kind: _EventKind
    """``up``, ``down``, ``ejected``, ``returned``, ``retry``, ``budget_exhausted``,
    ``hedge_sent``, ``hedge_won``, ``added``, ``removed``, ``slow_start_began``,
    ``slow_start_ended`` or ``site_shares``."""
    endpoint: str
    """The endpoint URL (empty for ``site_shares``)."""
    site: Optional[int]
    """The endpoint's site index, when the event carries it."""
    reason: Optional[str]
    """``down``: the probe error; ``ejected``: ``connect``/``timeout``/``status``; ``retry``: the failure."""
    attempt: Optional[int]
    """``retry``: the attempt that failed (1 for the first); ``hedge_sent``: which hedge of the
    request (1 for the first)."""
    downtime: Optional[float]
    """``up``: seconds the endpoint was out of rotation."""
    window: Optional[float]
    """``slow_start_began``: seconds over which its share ramps up."""
    shares: Optional[List[int]]
    """``site_shares``: the percentage of picks each site gets, in order."""

@final
class EndpointInfo:
    """A snapshot of one endpoint, for monitoring (``Balancer.endpoints()``)."""

    id: int
    """Identifier, stable for the life of the endpoint."""
    url: str
    """The endpoint URL, e.g. ``http://10.0.0.1:9000``."""
    site: int
    """Index of its site, 0 for the first."""
    state: _EndpointStateName
    """``unknown`` (not probed yet), ``up``, ``down``, ``ejected`` or ``trial``."""
    inflight: int
    """Requests in flight."""
    latency: Optional[float]
    """The current latency estimate in seconds, None before the first sample."""
    requests: int
    """Requests finished (all outcomes but cancellations)."""
    failures: int
    """Requests that failed (connect errors, resets, timeouts, failure statuses)."""
    ejections: int
    """Times passive ejection took it out."""
    last_error: Optional[str]
    """The last probe or request error, if any."""
    @property
    def available(self) -> bool:
        """True when the endpoint is in rotation (``up`` or ``trial``)."""
    def to_dict(self) -> Dict[str, Any]:
        """The snapshot as a plain dict (for JSON metrics)."""

_Decision = Literal["done", "retry", "giveup"]

@final
class Attempts:
    """The attempts of one request, from :meth:`Balancer.attempts`: :meth:`pick` the first
    lease, send, then follow :meth:`decide` after each attempt::

        attempts = balancer.attempts("GET")
        lease = attempts.pick()
        while True:
            outcome = send(lease.url + path)          # a status, or "connect", "reset", ...
            decision, reason, nxt = attempts.decide(lease, outcome)
            if decision != "retry":
                break
            lease = nxt
    """

    def pick(self) -> Lease:
        """The lease of the first attempt (raises :class:`NoEndpointError`)."""
    def decide(
        self,
        lease: Lease,
        outcome: Union[_OutcomeName, int],
        status: Optional[int] = None,
        intact: bool = True,
    ) -> Tuple[_Decision, str, Optional[Lease]]:
        """What next after the attempt sent to ``lease`` ended with ``outcome``.

        - ``("done", "", lease)``: hand the answer to the caller; ``lease`` is still open:
          finish it.
        - ``("retry", reason, next)``: send again to ``next`` (``reason``: ``connect``,
          ``status``, ``reset`` or ``timeout``); ``lease`` was finished.
        - ``("giveup", reason, None)``: hand the last result to the caller (``reason``:
          ``not-idempotent``, ``not-replayable``, ``max-attempts``, ``no-endpoint``,
          ``budget-exhausted`` or ``not-retryable``); ``lease`` was finished.

        :param intact: the attempt consumed none of the request body.
        :raises ConfigError: for an unknown outcome, or a lease already finished.
        """
    @property
    def count(self) -> int:
        """The attempts decided so far."""
    @property
    def tried(self) -> List[int]:
        """The endpoint ids tried so far."""

@final
class Lease:
    """One request's claim on an endpoint, from ``Balancer.pick()``.

    Use it as a context manager::

        with balancer.pick() as lease:
            resp = send(lease.url + path)
            lease.status = resp.status      # optional: report the status instead of success

    On a normal exit it reports success (or the recorded status); on an exception it reports a
    failure read from the exception (connection refused → ``connect``, reset → ``reset``, a
    timeout → ``timeout``, KeyboardInterrupt / CancelledError → ``cancelled``, anything else →
    ``failed``). The latency is measured from the pick. A lease dropped unfinished counts as
    cancelled.
    """

    @property
    def url(self) -> str:
        """The endpoint URL, e.g. ``http://10.0.0.1:9000`` (with its base path, if any)."""
    @property
    def id(self) -> int:
        """The endpoint's id, for ``Balancer.pick_excluding``."""
    @property
    def site(self) -> int:
        """The index of the endpoint's site (0 for the first)."""
    @property
    def elapsed(self) -> float:
        """_Seconds since the pick."""
    @property
    def finished(self) -> bool:
        """True once the outcome was reported."""
    @property
    def status(self) -> Optional[int]:
        """The response status to report when the ``with`` block ends normally (None: success)."""
    @status.setter
    def status(self, value: Optional[int]) -> None: ...
    def report(self, status: int) -> None:
        """Record the response status; it is reported when the ``with`` block ends."""
    def finish(
        self,
        outcome: Union[_OutcomeName, int, None] = None,
        status: Optional[int] = None,
        latency: Optional[_Seconds] = None,
    ) -> bool:
        """Report how the request went, now.

        :param outcome: ``success``, ``status`` (with ``status=``), ``connect`` (nothing was
            sent), ``reset`` (the connection broke after sending), ``timeout``, ``failed`` (says
            nothing about the connection) or ``cancelled`` (nothing learnt); an int is a status.
            Default: the status when given, else success.
        :param status: the response status.
        :param latency: the latency to record, in seconds (default: measured since the pick).
        :returns: False when the lease was already finished (nothing is reported twice).
        :raises ConfigError: for an unknown outcome or a status outside 100-599.
        """
    def __enter__(self) -> Lease: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> bool: ...

@final
class Balancer:
    """A client-side load balancer over ordered sites of endpoints.

    Sites use sidekick's syntax: comma-separated pools with optional ``{N...M}`` ranges, e.g.
    ``"http://minio{1...4}:9000"``. All traffic goes to the first site with an available endpoint;
    the next site only gets traffic while every earlier one has none. Inside a site the policy
    chooses (default: power of two choices over a peak-EWMA latency × in-flight score).

    Every option mirrors the Rust builder (``sidekick::Builder``) and has its default; times are
    seconds (or ``timedelta``). A bad site or option raises :class:`ConfigError` naming it.

    :param sites: one site, or several in order of preference.
    :param policy: ``p2c`` (default), ``least``, ``round-robin`` or ``random``.
    :param health_check: active probes on (default) or off (then only passive ejection).
    :param health_path: probe path (default ``/``; MinIO: ``/minio/health/ready``).
    :param last_site_health_path: a different probe path for the last site.
    :param health_port: probe this port instead of the endpoint's.
    :param health_interval: time between probes of one endpoint (default 5).
    :param health_timeout: deadline of one probe (default 10).
    :param health_jitter: random share added to each probe delay, 0.0-10.0 (default 0.2).
    :param health_optimistic: probe an endpoint that is up only after a request failed on it
        (default off).
    :param healthy_statuses: statuses a probe answer must have to pass (default ``[200]``).
    :param rise: consecutive passing probes that bring an endpoint up (default 1).
    :param fall: consecutive failing probes that take it down (default 1).
    :param eject_statuses: response statuses that count toward passive ejection (default none).
    :param eject_after: consecutive ``eject_statuses`` answers that eject (default 5).
    :param max_ejected_share: most of a site's up endpoints ejection may take out (default 0.5).
    :param eject_backoff: ``(base, max)`` before an ejected endpoint's trial when probes are off
        (default ``(1, 60)``).
    :param failure_statuses: statuses counted as failures in the load score (default 5xx, 429).
    :param failure_penalty: latency recorded for a failure (default 1).
    :param ewma_decay: time constant of the latency EWMA (default 10).
    :param default_rtt: latency assumed before any sample (default 0.01).
    :param max_attempts: total attempts of a request that was sent and failed (default 3).
    :param retry_statuses: statuses retried on another endpoint, idempotent requests only
        (default ``[502, 503, 504]``).
    :param retry_buffer: largest body buffered for a replay (default 65536).
    :param retry_budget: ``(ratio, min_per_sec)`` of the engine client's retry budget
        (default ``(0.2, 10)``).
    :param host_policy: ``keep`` the caller's Host (default; what SigV4 needs) or ``rewrite`` it.
    :param attempt_timeout: deadline of one attempt of the engine client (default none).
    :param connect_timeout: TCP connect timeout of probes and the engine client (default 3).
    :param pool_idle_timeout: idle connection lifetime of the engine client (default 90).
    :param pool_max_idle_per_host: idle connections kept per endpoint (default 1024).
    :param rr_dns: one endpoint per address a host name resolves to (default off).
    :param dns_refresh: how often fanned-out names are resolved again (default 30).
    :param hedge_delay: hedge an idempotent request of the engine client that has no answer
        after this long: one more attempt to another endpoint, charged to the retry budget, the
        first answer wins (default none: off).
    :param hedge_percentile: hedge after this percentile (e.g. 95) of the site's recent
        latencies instead, never sooner than ``hedge_delay`` (default 0: off).
    :param hedge_max: hedges per request (default 1).
    :param slow_start: seconds over which an endpoint that comes back ramps from 10 % to its
        full share of picks (default None: off).
    :param site_spillover: graded spill-over between sites: a site gets its available share ×
        ``overprovisioning`` of the traffic, the rest goes to the next site (default off:
        all-or-nothing failover).
    :param overprovisioning: the factor of ``site_spillover`` (default 1.4).
    :param on_event: called with an :class:`Event` on every state change and retry (on
        sidekick's threads: keep it quick and non-blocking).
    :param warmup: how long the first picks of a new balancer (or one rebuilt after a fork) may
        wait for the first probe verdicts when no endpoint is available yet (default 5; 0 fails
        fast like the Rust engine). Once every endpoint has had a verdict, picks never wait.
    """

    def __new__(
        cls,
        sites: Union[str, Sequence[str]],
        *,
        policy: _PolicyName = ...,
        health_check: bool = ...,
        health_path: str = ...,
        last_site_health_path: Optional[str] = ...,
        health_port: Optional[int] = ...,
        health_interval: _Seconds = ...,
        health_timeout: _Seconds = ...,
        health_jitter: float = ...,
        health_optimistic: bool = ...,
        healthy_statuses: Iterable[int] = ...,
        rise: int = ...,
        fall: int = ...,
        eject_statuses: Iterable[int] = ...,
        eject_after: int = ...,
        max_ejected_share: float = ...,
        eject_backoff: Tuple[_Seconds, _Seconds] = ...,
        failure_statuses: Iterable[int] = ...,
        failure_penalty: _Seconds = ...,
        ewma_decay: _Seconds = ...,
        default_rtt: _Seconds = ...,
        max_attempts: int = ...,
        retry_statuses: Iterable[int] = ...,
        retry_buffer: int = ...,
        retry_budget: Tuple[float, int] = ...,
        host_policy: Literal["keep", "rewrite"] = ...,
        attempt_timeout: Optional[_Seconds] = ...,
        connect_timeout: _Seconds = ...,
        pool_idle_timeout: _Seconds = ...,
        pool_max_idle_per_host: int = ...,
        rr_dns: bool = ...,
        dns_refresh: _Seconds = ...,
        hedge_delay: Optional[_Seconds] = ...,
        hedge_percentile: float = ...,
        hedge_max: int = ...,
        slow_start: Optional[_Seconds] = ...,
        site_spillover: bool = ...,
        overprovisioning: float = ...,
        on_event: Optional[Callable[[Event], None]] = ...,
        warmup: _Seconds = ...,
    ) -> Balancer: ...
    def pick(self) -> Lease:
        """Choose an endpoint for one request.

        :raises NoEndpointError: when no endpoint of any site is available (after the warm-up
            wait of a new balancer, see ``warmup``).
        """
    def pick_excluding(self, tried: Iterable[int]) -> Lease:
        """Like :meth:`pick`, but never one of the endpoint ids in ``tried`` (for retrying on
        another endpoint); falls over to the next site when a site has none left."""
    def attempts(self, method: str, idempotency_key: bool = False, replayable: bool = True) -> Attempts:
        """Start the attempts of one request under the engine's retry policy, counted in this
        balancer's retry budget (shared by every caller of the balancer).

        :param method: the method as sent (case-sensitive, e.g. ``"GET"``).
        :param idempotency_key: the request carries an ``Idempotency-Key`` header (any method is
            then idempotent).
        :param replayable: its body can be sent again (none, or held in memory).
        """
    def ready(self, timeout: Optional[_Seconds] = None) -> None:
        """Wait (GIL released) until an endpoint is available, at most ``timeout`` seconds
        (default 5).

        :raises NotReadyError: when none became available in time.
        """
    def is_available(self) -> bool:
        """True when at least one endpoint of some site is available."""
    def endpoints(self) -> List[EndpointInfo]:
        """A snapshot of every endpoint, site by site."""
    @property
    def sites(self) -> List[str]:
        """The site specifications in force, in order."""
    @property
    def site_count(self) -> int:
        """The number of sites."""
    def add_endpoint(self, site: int, url: str) -> None:
        """Add endpoint ``url`` to the site at position ``site`` (0 for the first) while running;
        with health checks on it takes traffic after its first passing probe. Raises
        :class:`MembershipError` (unknown site, duplicate, mixed scheme) or :class:`ConfigError`
        (bad URL); nothing changes then."""
    def remove_endpoint(self, url: str) -> None:
        """Remove endpoint ``url`` from every site that has it: never picked again once this
        returns; leases already taken finish normally. Raises :class:`MembershipError` when no
        site has it or it is the last endpoint of its site."""
    def set_site(self, site: int, spec: str) -> None:
        """Replace the endpoints of site ``site`` by those ``spec`` names (``site == site_count``
        appends a site); endpoints that stay keep their state."""
    def set_sites(self, sites: List[str]) -> None:
        """Make the sites exactly ``sites``, in order, keeping the state of endpoints that stay."""
    def add_site(self, spec: str) -> int:
        """Append a site and return its position."""
    def remove_site(self, site: int) -> None:
        """Remove site ``site``; later sites move up. :class:`MembershipError` for the only site."""
    def probe_tasks(self) -> int:
        """The number of health-probe tasks alive (one per endpoint with health checks on)."""
    @property
    def max_attempts(self) -> int:
        """The ``max_attempts`` option."""
    @property
    def retry_statuses(self) -> List[int]:
        """The ``retry_statuses`` option."""
    @property
    def retry_buffer(self) -> int:
        """The ``retry_buffer`` option."""
    @property
    def host_policy(self) -> Literal["keep", "rewrite"]:
        """The ``host_policy`` option."""
    @property
    def policy(self) -> str:
        """The policy's canonical name (``p2c``, ``least``, ``round-robin`` or ``random``)."""
    def option(self, name: str) -> Union[bool, int, float, str, List[int], None]:
        """The value of option ``name`` as this balancer runs with it (the engine's option names,
        e.g. ``health_interval``; durations in seconds; ``None`` for an optional setting that is
        off). Raises :class:`ConfigError` for an unknown name."""

@final
class Response:
    """A complete HTTP response from :class:`Client`."""

    @property
    def status(self) -> int:
        """The status code."""
    @property
    def ok(self) -> bool:
        """True for a status below 400."""
    @property
    def headers(self) -> Dict[str, str]:
        """The headers, names in lower case; repeated headers joined with ``", "``."""
    @property
    def header_list(self) -> List[Tuple[str, str]]:
        """The headers as ``(name, value)`` pairs, in the order received."""
    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of a header (case-insensitive), or ``default``."""
    @property
    def body(self) -> bytes:
        """The body."""
    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
    def json(self) -> Any:
        """The body parsed as JSON."""

@final
class Client:
    """An HTTP client (the Rust engine's: hyper, rustls) over a balancer.

    Each request goes to an endpoint the balancer chooses, keeps the caller's ``Host`` (the URL's
    authority when a full URL is given), and is retried on another endpoint by the engine's rules:
    connect failures for any method, resets, timeouts and ``retry_statuses`` for idempotent
    requests within ``max_attempts`` and the retry budget. The GIL is released while waiting.

    ``Client(sites, **options)`` takes the same options as :class:`Balancer`;
    ``Client(balancer=b)`` shares an existing balancer.
    """

    def __new__(
        cls,
        sites: Union[str, Sequence[str], None] = None,
        *,
        balancer: Optional[Balancer] = None,
        **options: Any,
    ) -> Client: ...
    @property
    def balancer(self) -> Balancer:
        """The balancer behind this client."""
    def request(
        self,
        method: str,
        url: str,
        headers: Optional[_Headers] = None,
        body: Optional[_Body] = None,
        timeout: Optional[_Seconds] = None,
    ) -> Response:
        """Send a request and read the whole response (blocking; the GIL is released).

        :param url: a path (``/bucket/key?x=1``) or a full URL whose authority is virtual (kept
            as ``Host``).
        :param timeout: deadline for the whole exchange, retries included.
        :raises NoEndpointError: nothing was available.
        :raises ConnectError: the last attempt could not connect.
        :raises TimeoutError: the last attempt, or the whole exchange, timed out.
        :raises RequestError: the request failed after it may have been received.
        :raises ConfigError: a bad method, URL, header or body.
        """
    def get(
        self, url: str, headers: Optional[_Headers] = None, timeout: Optional[_Seconds] = None
    ) -> Response:
        """``request("GET", url, ...)``."""
    def arequest(
        self,
        method: str,
        url: str,
        headers: Optional[_Headers] = None,
        body: Optional[_Body] = None,
        timeout: Optional[_Seconds] = None,
    ) -> Awaitable[Response]:
        """Like :meth:`request`, as an awaitable for asyncio (call it inside a running loop).

        Cancelling the awaitable cancels the request.
        """
    def aget(
        self, url: str, headers: Optional[_Headers] = None, timeout: Optional[_Seconds] = None
    ) -> Awaitable[Response]:
        """``arequest("GET", url, ...)``."""

def _after_fork_in_child() -> None: ...
def _set_finalizing() -> None: ...
def _generation() -> int: ...
