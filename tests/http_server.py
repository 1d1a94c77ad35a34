"""A local HTTP server for tests of downloads, on 127.0.0.1 and a free port.

It answers GET and HEAD for byte payloads registered by path, with a strong ETag (the
payload's quoted sha256 unless given) and any extra headers (a fake Hub's X-Repo-Commit,
X-Linked-Etag, X-Linked-Size). `Range: bytes=N-` gets a 206 (416 past the end), unless
an `If-Range` names another ETag: then 200 and the whole payload. The body of a path's
next responses can be cut after K bytes, and every request is logged.

    with PayloadServer() as server:
        url = server.add("/files/CLIP.zip", payload)
        server.cut_next("/files/CLIP.zip", after_bytes=1000)
        ...
        server.log  # [Logged("GET", "/files/CLIP.zip", None, None, 200), ...]
"""

from __future__ import annotations

import functools
import hashlib
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from support import StartStop

_RANGE_FROM = re.compile(r"bytes=(\d+)-")


class Logged(NamedTuple):
    method: str
    path: str
    range: str | None  # the Range header as sent
    if_range: str | None
    status: int


@dataclass
class _Payload:
    body: bytes
    headers: dict[str, str]
    cuts: list[int] = field(default_factory=list)


class PayloadServer(StartStop):
    """Serves registered payloads until `stop` (or the end of its `with` block)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._payloads: dict[str, _Payload] = {}
        self._log: list[Logged] = []
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = functools.partial(_Handler, payload_server=self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # A short poll: `stop` waits for the serving loop to notice, once per test.
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def url(self, path: str = "") -> str:
        assert self._httpd is not None, "the server is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def add(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        """Serve `body` at `path` (replacing what was there); returns its URL."""
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        with self._lock:
            self._payloads[path] = _Payload(body, {"ETag": etag, **(headers or {})})
        return self.url(path)

    def cut_next(self, path: str, after_bytes: int, times: int = 1) -> None:
        """The next `times` GETs of `path` send full headers, then only `after_bytes`
        bytes of the body, and close the connection."""
        with self._lock:
            self._payloads[path].cuts.extend([after_bytes] * times)

    @property
    def log(self) -> list[Logged]:
        """The requests answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    def _answer(self, method: str, path: str, headers: Any) -> tuple[_Payload | None, int, int]:
        """(payload, status, first byte) for a request, logged; a GET takes its cut."""
        with self._lock:
            payload = self._payloads.get(path)
            status, start = 404, 0
            if payload is not None:
                match = _RANGE_FROM.fullmatch(headers.get("Range") or "")
                if_range = headers.get("If-Range")
                if match and if_range in (None, payload.headers["ETag"]):
                    start = int(match[1])
                    status = 206 if start < len(payload.body) else 416
                else:
                    status = 200
            self._log.append(
                Logged(method, path, headers.get("Range"), headers.get("If-Range"), status)
            )
            return payload, status, start


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers and CDNs do

    def __init__(self, *args: Any, payload_server: PayloadServer, **kwargs: Any) -> None:
        # Set before the base __init__, which handles the request right away.
        self.payload_server = payload_server
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read PayloadServer.log instead

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def _respond(self, send_body: bool) -> None:
        server = self.payload_server
        path = urlsplit(self.path).path
        payload, status, start = server._answer(self.command, path, self.headers)
        if payload is None:
            self.send_error(404)
            return
        size = len(payload.body)
        body = payload.body[start:] if status in (200, 206) else b""
        self.send_response(status)
        for name, value in payload.headers.items():
            self.send_header(name, value)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        elif status == 416:
            self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not send_body:
            return
        with server._lock:
            cut = payload.cuts.pop(0) if payload.cuts else None
        if cut is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut])
        self.wfile.flush()
        # Shut down (FIN) rather than reset: a reset may discard bytes the client has not
        # read yet, and tests check where the next request resumes.
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
