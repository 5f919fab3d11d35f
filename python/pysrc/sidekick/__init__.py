"""sidekick: a client-side HTTP load balancer, in-process.

Health probes, passive ejection, ordered site failover and load-aware picks (power of two
choices over a peak-EWMA latency score), from the Rust engine ``sidekick-lb``, for Python
services with no sidecar to deploy::

    import sidekick

    balancer = sidekick.Balancer("http://10.0.0.{1...4}:9000", health_path="/minio/health/ready")
    with balancer.pick() as lease:
        ...  # send the request to lease.url with any HTTP library

Ready-made integrations: :class:`Client` (the engine's own HTTP client, blocking and asyncio),
``sidekick.requests.SidekickAdapter``, ``sidekick.httpx.SidekickTransport`` /
``AsyncSidekickTransport`` and ``sidekick.boto3.attach``.

Fork: balancers and clients keep working in a child made by ``os.fork()`` (gunicorn ``--preload``,
multiprocessing's "fork" context). The child forgets the parent's runtime and rebuilds each
balancer from its configuration on first use; endpoint state starts afresh there (the first picks
wait up to ``warmup`` seconds for the first probe verdicts).
"""

from __future__ import annotations

import atexit as _atexit
import os as _os

from ._errors import (
    BodyError,
    ConfigError,
    ConnectError,
    Error,
    MembershipError,
    NoEndpointError,
    NotReadyError,
    RequestError,
    TimeoutError,
)
from . import _sidekick
from ._sidekick import Attempts, Balancer, Client, EndpointInfo, Event, Lease, Response

__version__: str = _sidekick.__version__

__all__ = [
    "Attempts",
    "Balancer",
    "Client",
    "EndpointInfo",
    "Event",
    "Lease",
    "Response",
    "Error",
    "ConfigError",
    "MembershipError",
    "NoEndpointError",
    "NotReadyError",
    "RequestError",
    "ConnectError",
    "TimeoutError",
    "BodyError",
    "__version__",
]

for _cls in (Error, ConfigError, MembershipError, NoEndpointError, NotReadyError, RequestError, ConnectError, TimeoutError, BodyError):
    _cls.__module__ = "sidekick"
del _cls

if hasattr(_os, "register_at_fork"):
    # The parent's runtime threads do not exist in the child: forget it there; every balancer
    # rebuilds itself on the new runtime at its next use.
    _os.register_at_fork(after_in_child=_sidekick._after_fork_in_child)

# Runtime threads stop calling Python (on_event) once the interpreter shuts down.
_atexit.register(_sidekick._set_finalizing)
