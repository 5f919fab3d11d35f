"""Real local servers for the tests: killable HTTP backends and s3s-fs nodes, on 127.0.0.1 only.

Every server a test starts is stopped by the fixture that started it, also when the test fails;
every wait is bounded in time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set

import pytest

HOST = "127.0.0.1"


def pytest_report_header(config: pytest.Config) -> str:
    import sidekick

    return f"sidekick {sidekick.__version__} from {sidekick.__file__}"


def pytest_configure(config: pytest.Config) -> None:
    """With SIDEKICK_EXPECT_INSTALLED_IN set (python/test.sh sets it to the fresh venv's
    site-packages), refuse to run unless ``sidekick`` is the installed wheel, not the source tree."""
    expected = os.environ.get("SIDEKICK_EXPECT_INSTALLED_IN")
    if not expected:
        return
    import sidekick

    found = os.path.realpath(sidekick.__file__)
    if not found.startswith(os.path.realpath(expected) + os.sep):
        raise pytest.UsageError(f"sidekick was imported from {found}, not from the wheel in {expected}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` passes (at most timeout / step rounds)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


# ----- killable HTTP backends -----


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        # Status line, headers and body in one write, as real servers do for small answers.
        head = (
            f"HTTP/1.1 {status} X\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Backend: {self.server.name}\r\n"
            "\r\n"
        ).encode("latin-1")
        self.wfile.write(head + body)

    def _handle(self) -> None:
        backend: Backend = self.server.backend
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path
        backend.count(path)
        if path.startswith("/health"):
            self._reply(backend.health_status, b"ok")
            return
        if path.startswith("/slow"):
            ms = int(path.split("ms=", 1)[1]) if "ms=" in path else 500
            time.sleep(ms / 1000.0)
        if path.startswith("/status/"):
            self._reply(int(path.split("/")[2]), backend.name.encode())
            return
        if path.startswith("/echo"):
            info = {
                "backend": backend.name,
                "method": self.command,
                "path": path,
                "host": self.headers.get("Host"),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1"),
            }
            self._reply(200, json.dumps(info).encode(), "application/json")
            return
        self._reply(200, backend.name.encode())

    do_GET = do_PUT = do_POST = do_DELETE = _handle


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, backend: "Backend") -> None:
        self.backend = backend
        self.name = backend.name
        self._conns: Set[socket.socket] = set()
        self._lock = threading.Lock()
        self._dead = False
        super().__init__((HOST, backend.port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a cut connection is the point of these tests

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add and not self._dead:
                self._conns.add(conn)
                return
            self._conns.discard(conn)
            if not add:
                return
        _cut(conn)  # accepted just before the kill: cut it too

    def cut_all(self) -> None:
        with self._lock:
            self._dead = True
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            _cut(c)


def _cut(c: socket.socket) -> None:
    try:
        c.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        c.close()
    except OSError:
        pass


class Backend:
    """A threaded HTTP/1.1 server on 127.0.0.1 that can be killed and restarted on its port.

    Paths: ``/health`` (status ``health_status``), ``/slow?ms=N``, ``/status/N``, ``/echo`` (JSON
    with the Host and headers seen), anything else answers 200 with the backend's name.
    """

    def __init__(self, name: str, port: Optional[int] = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.health_status = 200
        self.requests = 0
        self.paths: Dict[str, int] = {}
        self._count_lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def count(self, path: str) -> None:
        with self._count_lock:
            if not path.startswith("/health"):
                self.requests += 1
            key = path.split("?", 1)[0]
            self.paths[key] = self.paths.get(key, 0) + 1

    @property
    def alive(self) -> bool:
        return self._server is not None

    def start(self) -> "Backend":
        deadline = time.monotonic() + 5
        while True:  # the port may linger for a moment after a kill
            try:
                self._server = _Server(self)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def kill(self) -> None:
        """Close the listening socket and every open connection (like a crashed process)."""
        srv = self._server
        if srv is None:
            return
        self._server = None
        srv.shutdown()
        srv.server_close()
        srv.cut_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"Backend({self.name}, {self.url}, alive={self.alive})"


@pytest.fixture
def backends() -> Iterator[List[Backend]]:
    """Three running backends (killed at the end whatever happens)."""
    bs = [Backend(f"b{i}").start() for i in range(3)]
    try:
        yield bs
    finally:
        for b in bs:
            b.kill()


@pytest.fixture
def backend_factory() -> Iterator[Callable[[str], Backend]]:
    made: List[Backend] = []

    def make(name: str) -> Backend:
        b = Backend(name).start()
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.kill()


def site_of(bs: List[Backend]) -> str:
    """One site listing these backends (sidekick's comma-separated pools)."""
    return ",".join(b.url for b in bs)


# ----- s3s-fs nodes -----

ACCESS_KEY = "sidekick-test"
SECRET_KEY = "sidekick-test-secret"


def s3s_binary() -> Optional[str]:
    found = shutil.which("s3s-fs")
    if found:
        return found
    home = Path.home() / ".cargo" / "bin" / "s3s-fs"
    return str(home) if home.exists() else None


class S3Node:
    """One s3s-fs process on 127.0.0.1, stopped by PID."""

    def __init__(self, binary: str, data: Path, port: int, log: Path) -> None:
        self.binary = binary
        self.data = data
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log = log
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "S3Node":
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--access-key",
                    ACCESS_KEY,
                    "--secret-key",
                    SECRET_KEY,
                    str(self.data),
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            logf.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"s3s-fs exited early: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        if not wait_until(up, 15):
            self.kill()
            raise RuntimeError(f"s3s-fs on port {self.port} did not start")
        return self

    def kill(self) -> None:
        p = self.proc
        if p is None:
            return
        self.proc = None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def s3_nodes(tmp_path: Path) -> Iterator[List[S3Node]]:
    """Three s3s-fs processes sharing one data directory: one S3 store behind three addresses."""
    binary = s3s_binary()
    if binary is None:
        if os.environ.get("SIDEKICK_REQUIRE_S3S") == "1":
            pytest.fail("s3s-fs is not installed (python/test.sh installs it)")
        pytest.skip("s3s-fs is not installed: cargo install s3s-fs --version 0.14.1 --locked --features binary")
    data = tmp_path / "s3data"
    data.mkdir()
    nodes = [S3Node(binary, data, free_port(), tmp_path / f"s3s-{i}.log") for i in range(3)]
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.kill()
