"""The exception hierarchy of sidekick.

Every error sidekick raises is a :class:`Error`. The subclasses say what went wrong in terms a
caller can act on, and the ones that mean "the network failed" also derive from the matching
builtin (``ConnectError`` is a ``ConnectionError``, ``TimeoutError`` a builtin ``TimeoutError``),
so existing ``except`` clauses keep working::

    Error
    ├── ConfigError          (also ValueError)  a bad site or option; the message names it
    ├── MembershipError      (also ValueError)  a refused membership change (unknown endpoint...)
    ├── NoEndpointError                         no endpoint of any site is available
    │   └── NotReadyError                       ready() gave up waiting
    └── RequestError                            a request failed on every endpoint it could try
        ├── ConnectError     (also ConnectionError)  the last attempt could not connect
        ├── TimeoutError     (also TimeoutError)     the last attempt timed out
        └── BodyError                                the request body could not be read
"""

from __future__ import annotations

import builtins
from typing import Optional

__all__ = [
    "Error",
    "ConfigError",
    "MembershipError",
    "NoEndpointError",
    "NotReadyError",
    "RequestError",
    "ConnectError",
    "TimeoutError",
    "BodyError",
]


class Error(Exception):
    """Base class of every sidekick error.

    ``endpoint`` is the URL of the endpoint the failing attempt went to, when there was one.
    """

    endpoint: Optional[str] = None


class ConfigError(Error, ValueError):
    """The configuration (a site, an option, an argument) was rejected; the message names it."""


class MembershipError(Error, ValueError):
    """A membership change (``add_endpoint``, ``remove_site``...) was refused: an unknown
    endpoint or site, a duplicate, a mixed scheme, or a change that would leave a site or the
    balancer empty. The message names it; nothing was changed."""


class NoEndpointError(Error):
    """No endpoint of any site is available, so nothing was sent."""


class NotReadyError(NoEndpointError):
    """``Balancer.ready()`` gave up before any endpoint became available."""


class RequestError(Error):
    """A request failed on every endpoint it was allowed to try."""


class ConnectError(RequestError, ConnectionError):
    """The last attempt could not connect (refused, unreachable, TLS handshake, connect timeout)."""


class TimeoutError(RequestError, builtins.TimeoutError):  # noqa: A001 - sidekick.TimeoutError
    """The last attempt got no response in time."""


class BodyError(RequestError):
    """The request body could not be read or buffered."""
