#!/usr/bin/env python3
"""A tiny HTTP/1.1 backend for the C tests, bound to 127.0.0.1 on a free port.

    python3 server.py PORT_FILE [--reset]

writes the chosen port to PORT_FILE once it listens, then serves until killed (by PID):
  /health         200 "healthy"
  /status/NNN     status NNN
  /sleep/MS       waits MS milliseconds (at most 10 s), then 200
  anything else   200 "ok METHOD PATH host=HOST len=BODY_LENGTH"
Every answer carries `X-Backend: PORT`.

With --reset it is a broken backend instead: it reads the start of each request and resets the
connection (RST), so that a client still writing its body gets EPIPE (and, unless SIGPIPE is
blocked or ignored, the signal).
"""
import http.server
import os
import socket
import struct
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, text = 200, ""
        if self.path == "/health":
            text = "healthy"
        elif self.path.startswith("/status/"):
            status = int(self.path[len("/status/"):])
            text = f"status {status}"
        elif self.path.startswith("/sleep/"):
            time.sleep(min(int(self.path[len("/sleep/"):]), 10_000) / 1000)
            text = "slept"
        else:
            text = f"ok {self.command} {self.path} host={self.headers.get('Host')} len={length}"
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", str(self.server.server_address[1]))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = answer


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients that hang up are normal here
        pass


def write_port(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, path)  # the reader never sees a half-written file


def serve_resets(path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    write_port(path, listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        try:
            conn.recv(1024)
        except OSError:
            pass
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


def main():
    if "--reset" in sys.argv[2:]:
        serve_resets(sys.argv[1])
        return
    server = Server(("127.0.0.1", 0), Handler)
    write_port(sys.argv[1], server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
