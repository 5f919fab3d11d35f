"""httpx transports that spread a client's requests over a balancer.

Give the client a *virtual* base URL; each request goes to an endpoint the balancer chooses,
keeps the ``Host`` httpx derived from the virtual URL (what a signer signed), reports its outcome
and latency, and is retried on another endpoint when the connection fails::

    import httpx, sidekick
    from sidekick.httpx import SidekickTransport, AsyncSidekickTransport

    balancer = sidekick.Balancer("http://10.0.0.{1...4}:9000", health_path="/health")
    client = httpx.Client(base_url="http://storage.internal", transport=SidekickTransport(balancer))
    aclient = httpx.AsyncClient(base_url="http://storage.internal",
                                transport=AsyncSidekickTransport(balancer))

Retries follow the engine's rules (``sidekick._failover``). A response whose ``Content-Length``
is at most ``buffer_limit`` is read inside the transport, so a connection that breaks mid-body is
retried too; larger ones stream (and a break mid-body reaches the caller).

Importing this module needs `httpx`; the rest of sidekick does not.
"""

from __future__ import annotations

from typing import Any, Optional

import httpx as _httpx

from ._errors import ConfigError, NoEndpointError
from ._failover import FailureKind, after, split_endpoint, start
from ._sidekick import Balancer, Lease

__all__ = ["SidekickTransport", "AsyncSidekickTransport", "NoEndpointAvailable"]

#: Default largest response body read inside the transport.
DEFAULT_BUFFER_LIMIT = 256 * 1024


class NoEndpointAvailable(_httpx.ConnectError, NoEndpointError):
    """No endpoint of any site is available (an ``httpx.ConnectError`` and a
    :class:`sidekick.NoEndpointError`)."""


def _failure_kind(exc: BaseException) -> FailureKind:
    """``connect`` (nothing was sent), ``reset``, ``timeout``, ``cancelled`` or ``failed``."""
    if isinstance(exc, (_httpx.ConnectError, _httpx.ConnectTimeout)):
        return "connect"
    if isinstance(exc, _httpx.PoolTimeout):
        return "cancelled"  # our own pool was full: nothing learnt about the endpoint
    if isinstance(exc, _httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, (_httpx.ReadError, _httpx.WriteError, _httpx.RemoteProtocolError, _httpx.CloseError)):
        return "reset"
    return "failed"


def _check(balancer: Any) -> Balancer:
    if not isinstance(balancer, Balancer):
        raise ConfigError(
            f"invalid configuration: balancer: expected a sidekick.Balancer, got {type(balancer).__name__}"
        )
    return balancer


def _retarget(original: _httpx.URL, lease: Lease) -> _httpx.URL:
    scheme, host, port, base = split_endpoint(lease.url)
    path = original.raw_path
    if base:
        path = base.encode("ascii") + path
    return original.copy_with(scheme=scheme, host=host, port=port, raw_path=path)


def _replayable(request: _httpx.Request) -> bool:
    return isinstance(request.stream, _httpx.ByteStream)


def _small(response: _httpx.Response, limit: int) -> bool:
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return False
    return int(length) <= limit


def _buffered(response: _httpx.Response, data: bytes) -> _httpx.Response:
    """The same response with its raw (still encoded) body held in memory."""
    return _httpx.Response(
        status_code=response.status_code,
        headers=response.headers,
        stream=_httpx.ByteStream(data),
        extensions=response.extensions,
    )


class SidekickTransport(_httpx.BaseTransport):
    """A synchronous httpx transport that sends each attempt to an endpoint of ``balancer``.

    :param balancer: the :class:`sidekick.Balancer` whose endpoints receive the requests.
    :param transport: the transport that sends each attempt (default: a new
        ``httpx.HTTPTransport(**kwargs)``).
    :param buffer_limit: responses with a ``Content-Length`` up to this are read in the transport.
    """

    def __init__(
        self,
        balancer: Balancer,
        transport: Optional[_httpx.BaseTransport] = None,
        *,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        **kwargs: Any,
    ) -> None:
        self.balancer = _check(balancer)
        self._inner = transport if transport is not None else _httpx.HTTPTransport(**kwargs)
        self.buffer_limit = buffer_limit

    def handle_request(self, request: _httpx.Request) -> _httpx.Response:
        """Send ``request`` to a chosen endpoint, failing over as described in the module."""
        original = request.url
        attempts = start(self.balancer, request.method, request.headers, _replayable(request))
        try:
            lease = attempts.pick()
        except NoEndpointError as e:
            raise NoEndpointAvailable(str(e), request=request) from e
        try:
            while True:
                request.url = _retarget(original, lease)
                try:
                    resp = self._inner.handle_request(request)
                    if _small(resp, self.buffer_limit):
                        try:
                            data = b"".join(resp.iter_raw())
                        finally:
                            resp.close()
                        resp = _buffered(resp, data)
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
                if nxt is None:
                    return resp
                resp.close()
                lease = nxt
        finally:
            request.url = original

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()


class AsyncSidekickTransport(_httpx.AsyncBaseTransport):
    """The asyncio version of :class:`SidekickTransport` (same parameters; the default inner
    transport is ``httpx.AsyncHTTPTransport(**kwargs)``)."""

    def __init__(
        self,
        balancer: Balancer,
        transport: Optional[_httpx.AsyncBaseTransport] = None,
        *,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        **kwargs: Any,
    ) -> None:
        self.balancer = _check(balancer)
        self._inner = transport if transport is not None else _httpx.AsyncHTTPTransport(**kwargs)
        self.buffer_limit = buffer_limit

    async def handle_async_request(self, request: _httpx.Request) -> _httpx.Response:
        """Send ``request`` to a chosen endpoint, failing over as described in the module."""
        original = request.url
        attempts = start(self.balancer, request.method, request.headers, _replayable(request))
        try:
            lease = attempts.pick()
        except NoEndpointError as e:
            raise NoEndpointAvailable(str(e), request=request) from e
        try:
            while True:
                request.url = _retarget(original, lease)
                try:
                    resp = await self._inner.handle_async_request(request)
                    if _small(resp, self.buffer_limit):
                        try:
                            data = b"".join([chunk async for chunk in resp.aiter_raw()])
                        finally:
                            await resp.aclose()
                        resp = _buffered(resp, data)
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
                if nxt is None:
                    return resp
                await resp.aclose()
                lease = nxt
        finally:
            request.url = original

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()
