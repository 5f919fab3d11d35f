"""Balance a boto3 / botocore client over a balancer's endpoints, through its event hooks.

Create the client with a *virtual* ``endpoint_url`` (what SigV4 signs) and attach it::

    import boto3, sidekick
    from botocore.config import Config
    from sidekick.boto3 import attach

    balancer = sidekick.Balancer("http://10.0.0.{1...4}:9000", health_path="/minio/health/ready")
    s3 = boto3.client("s3", endpoint_url="http://10.255.255.1:9000",
                      config=Config(s3={"addressing_style": "path"}))
    attach(s3, balancer)

A ``before-send`` handler then sends **each attempt** itself, with the client's own HTTP session:
it keeps the signed ``Host``, points the URL at an endpoint the balancer picks, reports the status
(or the failure) and latency back, and, when the connection fails, re-sends on another endpoint at
once (connect failures for any operation; resets and read timeouts when the body can be sent
again, up to the balancer's ``max_attempts``). What it returns is an ordinary response: botocore's
own retries (throttling, 5xx) go through the handler again and are re-targeted too.

Small streaming bodies (``GetObject`` with a ``Content-Length`` up to ``buffer_limit``) are read
inside the handler, so a node that dies mid-body costs a retry, not a failed call.

Use an IP literal (or ``localhost``) as the virtual host with path-style addressing: some S3
servers read any other name as a virtual-host bucket.

Importing this module needs botocore (boto3 brings it); the rest of sidekick does not.
"""

from __future__ import annotations

import io
import itertools
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

from botocore import exceptions as _bex
from botocore.awsrequest import AWSPreparedRequest, AWSResponse

from ._errors import ConfigError, NoEndpointError
from ._failover import FailureKind, after, host_of
from ._sidekick import Balancer

__all__ = ["attach", "Attachment", "NoEndpointAvailable"]

#: Default largest streaming body read inside the handler.
DEFAULT_BUFFER_LIMIT = 1024 * 1024

_ids = itertools.count(1)


class NoEndpointAvailable(_bex.EndpointConnectionError, NoEndpointError):
    """No endpoint of any site is available (a botocore ``EndpointConnectionError``, which
    botocore retries with backoff, and a :class:`sidekick.NoEndpointError`)."""


def _failure_kind(exc: BaseException) -> FailureKind:
    """``connect`` (nothing was sent), ``reset``, ``timeout`` or ``failed``."""
    if isinstance(exc, (_bex.ConnectTimeoutError, _bex.EndpointConnectionError, _bex.SSLError)):
        return "connect"
    if isinstance(exc, _bex.ReadTimeoutError):
        return "timeout"
    if isinstance(exc, _bex.ConnectionClosedError):
        return "reset"
    if isinstance(exc, _bex.ProxyConnectionError):
        return "failed"
    if isinstance(exc, _bex.HTTPClientError):
        return "reset"
    return "failed"


class _Buffered(io.BytesIO):
    """A body read in full, standing in for urllib3's response where botocore reads it."""

    def stream(self, amt: int = 65536, decode_content: Optional[bool] = None) -> Iterator[bytes]:
        while True:
            chunk = self.read(amt)
            if not chunk:
                return
            yield chunk

    def release_conn(self) -> None:
        pass


def _resendable(request: AWSPreparedRequest) -> bool:
    body = request.body
    if body is None or isinstance(body, (bytes, bytearray, str)):
        return True
    return hasattr(body, "seek") and hasattr(body, "tell")


def _reset_body(request: AWSPreparedRequest) -> None:
    try:
        request.reset_stream()
    except Exception:  # a stream that cannot rewind: botocore's own retry will fail it
        pass


class Attachment:
    """An attached balancer: ``detach()`` unregisters the handler."""

    def __init__(self, client: Any, balancer: Balancer, event: str, unique_id: str,
                 handler: Callable[..., Optional[AWSResponse]]) -> None:
        self.client = client
        self.balancer = balancer
        self.event = event
        self.unique_id = unique_id
        self._handler = handler

    def detach(self) -> None:
        """Stop balancing this client (it sends to its ``endpoint_url`` again)."""
        self.client.meta.events.unregister(self.event, self._handler, unique_id=self.unique_id)


def attach(
    client: Any,
    balancer: Balancer,
    *,
    buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    http_session: Any = None,
) -> Attachment:
    """Balance ``client`` (a boto3 / botocore client) over ``balancer``'s endpoints.

    :param client: e.g. ``boto3.client("s3", endpoint_url="http://127.0.0.1:9000", ...)``; its
        ``endpoint_url`` is virtual: it is signed and sent as ``Host``, never connected to.
    :param balancer: the :class:`sidekick.Balancer` whose endpoints receive the requests.
    :param buffer_limit: streaming responses with a ``Content-Length`` up to this are read in
        the handler (so they can be retried); larger ones stream.
    :param http_session: what sends each attempt (default: the client's own session, so its
        pool size, timeouts, proxies and TLS settings apply).
    :returns: an :class:`Attachment`, whose ``detach()`` undoes this.
    """
    if not isinstance(balancer, Balancer):
        raise ConfigError(
            f"invalid configuration: balancer: expected a sidekick.Balancer, got {type(balancer).__name__}"
        )
    meta = getattr(client, "meta", None)
    if meta is None or not hasattr(meta, "events"):
        raise ConfigError("invalid configuration: client: expected a boto3/botocore client")
    session = http_session
    if session is None:
        session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if session is None:
        from botocore.httpsession import URLLib3Session

        cfg = meta.config
        session = URLLib3Session(
            timeout=(cfg.connect_timeout, cfg.read_timeout),  # type: ignore[arg-type]
            max_pool_connections=cfg.max_pool_connections,
            proxies=cfg.proxies,
        )
    service = meta.service_model.service_id.hyphenize()
    event = f"before-send.{service}"
    unique_id = f"sidekick-{next(_ids)}"

    def before_send(request: AWSPreparedRequest, **kwargs: Any) -> AWSResponse:
        return _send(balancer, session, request, buffer_limit)

    meta.events.register(event, before_send, unique_id=unique_id)
    return Attachment(client, balancer, event, unique_id, before_send)


def _send(
    balancer: Balancer, session: Any, request: AWSPreparedRequest, buffer_limit: int
) -> AWSResponse:
    original_url = request.url
    parts = urlsplit(original_url)
    if "Host" not in request.headers:
        request.headers["Host"] = host_of(parts)
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    # botocore retries every operation after a broken connection itself (AWS APIs are made to be
    # retried), so each request counts as idempotent, as an idempotency key would make it.
    # Statuses are botocore's to retry (with its backoff): only failures are decided here.
    attempts = balancer.attempts(request.method or "GET", True, _resendable(request))
    try:
        lease = attempts.pick()
    except NoEndpointError as e:
        # botocore's stubs differ between versions on this constructor's keywords.
        raise NoEndpointAvailable(endpoint_url=original_url, error=e) from e  # type: ignore[call-arg]
    try:
        while True:
            request.url = lease.url + target  # the endpoint URL has no trailing slash
            try:
                resp = session.send(request)
                resp = _maybe_buffer(request, resp, buffer_limit)
            except Exception as exc:
                nxt = after(attempts, lease, _failure_kind(exc))
                if nxt is None:
                    raise
                _reset_body(request)
                lease = nxt
                continue
            except BaseException:
                lease.finish("cancelled")
                raise
            lease.finish(resp.status_code)
            return resp
    finally:
        request.url = original_url


def _maybe_buffer(request: AWSPreparedRequest, resp: AWSResponse, limit: int) -> AWSResponse:
    """Read a small streaming body now, checking its length (a cut body raises)."""
    if not request.stream_output or resp.status_code >= 300:
        return resp  # the session already read it in full
    length = resp.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > limit:
        return resp
    if "eventstream" in (resp.headers.get("content-type") or ""):
        return resp
    raw = resp.raw
    try:
        data = raw.read()
    except Exception as e:
        raise _bex.ConnectionClosedError(endpoint_url=request.url, request=request, error=e) from e
    finally:
        release = getattr(raw, "release_conn", None)
        if release is not None:
            release()
    if len(data) != int(length):
        raise _bex.ConnectionClosedError(
            endpoint_url=request.url,
            request=request,
            error=f"body cut short: {len(data)} of {length} bytes",
        )
    return AWSResponse(resp.url, resp.status_code, resp.headers, _Buffered(data))  # type: ignore[arg-type]
