"""A `requests` transport adapter that spreads a session's requests over a balancer.

Mount it on a *virtual* base URL; every request under it goes to an endpoint the balancer
chooses, keeps the ``Host`` of the virtual URL (what a signer signed), reports its outcome and
latency, and is retried on another endpoint when the connection fails::

    import requests, sidekick
    from sidekick.requests import SidekickAdapter

    balancer = sidekick.Balancer("http://10.0.0.{1...4}:9000", health_path="/health")
    session = requests.Session()
    session.mount("http://storage.internal/", SidekickAdapter(balancer))
    session.get("http://storage.internal/bucket/key")

Retries follow the engine's rules (``sidekick._failover``): a connect failure is retried on
another endpoint for any method; a reset, a read timeout or a status in ``retry_statuses`` only
for idempotent requests whose body is bytes or text, up to the balancer's ``max_attempts`` and
within its retry budget.
With ``stream=False`` (the default) the body is read inside the adapter, so a connection that
breaks mid-body is retried too.

Importing this module needs `requests`; the rest of sidekick does not.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import SplitResult, urlsplit

from requests import exceptions as _rex
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response

from ._errors import NoEndpointError
from ._failover import FailureKind, after, host_of, start
from ._sidekick import Balancer

try:  # urllib3 is a dependency of requests; its exception classes refine the diagnosis.
    from urllib3 import exceptions as _u3
except ImportError:  # pragma: no cover
    _u3 = None  # type: ignore[assignment]

__all__ = ["SidekickAdapter", "NoEndpointAvailable"]


class NoEndpointAvailable(_rex.ConnectionError, NoEndpointError):
    """No endpoint of any site is available (a ``requests.ConnectionError`` and a
    :class:`sidekick.NoEndpointError`)."""


def _failure_kind(exc: BaseException) -> FailureKind:
    """``connect`` (nothing was sent), ``reset``, ``timeout`` or ``failed``."""
    if isinstance(exc, _rex.ConnectTimeout):
        return "connect"
    if isinstance(exc, _rex.Timeout):
        return "timeout"
    if isinstance(exc, _rex.SSLError):
        return "connect"
    if isinstance(exc, _rex.ProxyError):
        return "failed"
    if isinstance(exc, _rex.ConnectionError):
        reason: Any = exc.args[0] if exc.args else None
        if _u3 is not None and isinstance(reason, _u3.MaxRetryError):
            reason = reason.reason
        if _u3 is not None and isinstance(reason, (_u3.NewConnectionError, _u3.ConnectTimeoutError)):
            return "connect"
        if isinstance(reason, ConnectionRefusedError):
            return "connect"
        if _u3 is not None and isinstance(reason, _u3.ReadTimeoutError):
            return "timeout"
        return "reset"
    if isinstance(exc, (_rex.ChunkedEncodingError, ConnectionError)):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "failed"


_hosts: Dict[Tuple[str, str], str] = {}


def _host(parts: SplitResult) -> str:
    """``host_of(parts)``, cached: a session talks to few virtual hosts."""
    key = (parts.scheme, parts.netloc)
    h = _hosts.get(key)
    if h is None:
        h = host_of(parts)
        if len(_hosts) < 1024:
            _hosts[key] = h
    return h


class SidekickAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that sends each request to an endpoint chosen by ``balancer``.

    :param balancer: the :class:`sidekick.Balancer` whose endpoints receive the requests.
    :param kwargs: passed to ``HTTPAdapter`` (``pool_connections``, ``pool_maxsize``, ...);
        ``max_retries`` applies per attempt, on top of the failover done here.
    """

    # Pickled with the adapter's state (a Balancer itself cannot be pickled: pickling fails loudly
    # instead of producing an adapter without one).
    __attrs__ = HTTPAdapter.__attrs__ + ["balancer"]

    def __init__(self, balancer: Balancer, **kwargs: Any) -> None:
        if not isinstance(balancer, Balancer):
            from ._errors import ConfigError

            raise ConfigError(
                f"invalid configuration: balancer: expected a sidekick.Balancer, got {type(balancer).__name__}"
            )
        self.balancer = balancer
        super().__init__(**kwargs)

    # The parameter types of HTTPAdapter.send differ between versions of requests' stubs.
    def send(  # type: ignore[override]
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Union[None, float, Tuple[float, float], Tuple[float, None]] = None,
        verify: Union[bool, str] = True,
        cert: Union[None, bytes, str, Tuple[Union[bytes, str], Union[bytes, str]]] = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """Send ``request`` to a chosen endpoint, failing over as described in the module."""
        original_url = request.url or ""
        parts = urlsplit(original_url)
        headers = request.headers
        if "Host" not in headers:
            headers["Host"] = _host(parts)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        body = request.body
        replayable = body is None or isinstance(body, (bytes, str, bytearray))
        attempts = start(self.balancer, request.method or "GET", headers, replayable)
        try:
            lease = attempts.pick()
        except NoEndpointError as e:
            raise NoEndpointAvailable(str(e), request=request) from e
        try:
            while True:
                request.url = lease.url + path  # the endpoint URL has no trailing slash
                try:
                    resp = super().send(request, stream, timeout, verify, cert, proxies)  # type: ignore[arg-type]
                    if not stream:
                        resp.content  # read now: a body cut short is this endpoint's failure
                except Exception as exc:
                    nxt = after(attempts, lease, _failure_kind(exc))
                    if nxt is None:
                        raise
                    lease = nxt
                    continue
                except BaseException:
                    lease.finish("cancelled")
                    raise
                nxt = after(attempts, lease, resp.status_code)
                if nxt is not None:
                    resp.close()
                    lease = nxt
                    continue
                resp.url = original_url
                return resp
        finally:
            request.url = original_url
