"""A local HTTP server for tests of downloads, on 127.0.0.1 and a free port.

It serves byte payloads registered by path, honours `Range: bytes=N-` (206 with
Content-Range and Content-Length; 416 past the end) unless a payload is registered to
ignore ranges (then 200 and the whole body), can cut the body of a path's next
responses after K bytes, can redirect, and logs every request (path, Range, status).

    with PayloadServer() as server:
        url = server.add("/files/CLIP.zip", payload)
        server.cut_next("/files/CLIP.zip", after_bytes=1000)
        ...
        server.log  # [LoggedRequest(path="/files/CLIP.zip", range=None, status=200), ...]
"""

from __future__ import annotations

import functools
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from support import StartStop

_RANGE_FROM = re.compile(r"bytes=(\d+)-")


@dataclass(frozen=True)
class LoggedRequest:
    path: str
    range: str | None  # the Range header as sent, None without one
    status: int


@dataclass
class _Payload:
    body: bytes
    ignore_ranges: bool
    send_length: bool
    pending_cuts: list[int] = field(default_factory=list)


class PayloadServer(StartStop):
    """Serves registered payloads until `stop` (or the end of its `with` block)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._payloads: dict[str, _Payload] = {}
        self._redirects: dict[str, str] = {}
        self._log: list[LoggedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        handler = functools.partial(_Handler, payload_server=self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # A short poll: `stop` waits for the serving loop to notice, once per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def url(self, path: str) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def add(
        self, path: str, body: bytes, *, ignore_ranges: bool = False, send_length: bool = True
    ) -> str:
        """Serve `body` at `path`; returns its URL. `send_length=False` leaves out
        Content-Length (the body then ends when the connection closes)."""
        with self._lock:
            self._payloads[path] = _Payload(body, ignore_ranges, send_length)
        return self.url(path)

    def redirect(self, path: str, target_path: str) -> str:
        """Answer `path` with a 302 to `target_path`; returns the URL of `path`."""
        with self._lock:
            self._redirects[path] = target_path
        return self.url(path)

    def cut_next(self, path: str, after_bytes: int, times: int = 1) -> None:
        """The next `times` responses for `path` send full headers, then only
        `after_bytes` bytes of the body, and close the connection."""
        with self._lock:
            self._payloads[path].pending_cuts.extend([after_bytes] * times)

    @property
    def log(self) -> list[LoggedRequest]:
        """The requests answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    def _redirect_target(self, path: str) -> str | None:
        with self._lock:
            return self._redirects.get(path)

    def _take(self, path: str) -> tuple[_Payload | None, int | None]:
        """The payload at `path` and the cut for this response (None: the whole body)."""
        with self._lock:
            payload = self._payloads.get(path)
            cut = payload.pending_cuts.pop(0) if payload and payload.pending_cuts else None
            return payload, cut

    def _record(self, path: str, range_header: str | None, status: int) -> None:
        with self._lock:
            self._log.append(LoggedRequest(path, range_header, status))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers and CDNs do

    def __init__(self, *args: Any, payload_server: PayloadServer, **kwargs: Any) -> None:
        # Set before the base __init__, which handles the request right away.
        self.payload_server = payload_server
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read PayloadServer.log instead

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        range_header = self.headers.get("Range")
        server = self.payload_server
        target = server._redirect_target(path)
        if target is not None:
            server._record(path, range_header, 302)
            self.send_response(302)
            self.send_header("Location", server.url(target))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload, cut = server._take(path)
        if payload is None:
            server._record(path, range_header, 404)
            self.send_error(404)
            return

        size = len(payload.body)
        match = _RANGE_FROM.fullmatch(range_header or "")
        start = int(match[1]) if match and not payload.ignore_ranges else None
        if start is not None and start >= size:
            server._record(path, range_header, 416)
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        # Logged before the body goes out, so the log is complete by the time the
        # client has seen the response, however the body ends.
        status = 200 if start is None else 206
        server._record(path, range_header, status)
        body = payload.body if start is None else payload.body[start:]
        self.send_response(status)
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        if payload.send_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if cut is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut])
        self.wfile.flush()
        # Shut down (FIN) rather than reset: a reset may discard bytes the client has not
        # read yet, and tests check that exactly the bytes sent before the cut arrive.
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
