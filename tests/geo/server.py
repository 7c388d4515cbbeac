"""A small HTTP server on 127.0.0.1 for the remote-scene tests: files from memory, with HTTP range requests (or
without, as some servers are), ETag and Last-Modified, and failures on demand (a 503 the next N requests, a 403,
a path that answers too slowly). It counts the bytes of the bodies it sends, so a test can tell how much of a
file a read fetched.

    with RangeServer({"/scene.tif": data}) as server:
        url = server.url("/scene.tif")
        server.fail_next(2)          # the next two requests get 503
        server.sent                  # body bytes sent so far
"""
from __future__ import annotations

import email.utils
import hashlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL's curl expects of a COG server

    def log_message(self, *args) -> None:  # quiet: the tests read ``requests`` instead
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.requests.append((self.command, self.path, self.headers.get("Range")))
            failing = owner.failures > 0
            if failing:
                owner.failures -= 1
        if failing:
            return self._status(503)
        if path in owner.forbidden:
            return self._status(403)
        if path in owner.slow:
            time.sleep(owner.slow[path])
        data = owner.files.get(path)
        if data is None:
            return self._status(404)
        etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "") if owner.ranges else None
        if ranged:
            start = int(ranged.group(1))
            end = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            part = data[start: end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            part = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Content-Type", owner.types.get(path, "application/octet-stream"))
        if owner.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(owner.mtimes.get(path, 1.7e9), usegmt=True))
        self.end_headers()
        if body:
            try:
                self.wfile.write(part)
            except (BrokenPipeError, ConnectionResetError):  # a client that read the headers and hung up
                return
            with owner.lock:
                owner.sent += len(part)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "RangeServer"

    def handle_error(self, request, client_address) -> None:  # a client hanging up is no error of the server's
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RangeServer:
    """Files served from memory at http://127.0.0.1:PORT/<path> (see the module)."""

    def __init__(self, files: dict[str, bytes] | None = None, ranges: bool = True):
        self.files = dict(files or {})
        self.types: dict[str, str] = {}
        self.mtimes: dict[str, float] = {}
        self.ranges = ranges
        self.forbidden: set[str] = set()
        self.slow: dict[str, float] = {}
        self.failures = 0
        self.sent = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, n: int) -> None:
        with self.lock:
            self.failures = n

    def reset_counts(self) -> None:
        with self.lock:
            self.sent, self.requests = 0, []

    def __enter__(self) -> "RangeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
