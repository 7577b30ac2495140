"""An S3-compatible server on 127.0.0.1 for the tests, and a counting proxy in front of it.

``MotoS3`` runs moto's server mode (real HTTP, nothing patched in-process) on a free
port of 127.0.0.1. ``CountingProxy`` sits between the client and that server: it
records every request (the S3 operation, the bytes of headers and bodies in both
directions) and can inject failures: an HTTP error status, or a connection closed
without an answer (the server going away). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


@dataclass(frozen=True)
class Request:
    """One request as the proxy saw it. Byte counts include the request/status line and headers."""

    op: str
    method: str
    path: str
    status: int | None  # None: the connection was closed without an answer
    bytes_up: int
    bytes_down: int
    body_up: int
    body_down: int


def s3_operation(method: str, target: str, headers: Any) -> str:
    """The S3 API operation of a path-style request (enough of them for these tests)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    has_key = "/" in parts.path.lstrip("/")
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if has_key:
            return "GetObject"
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "GetBucket?" + parts.query
    if method == "PUT":
        if not has_key:
            return "CreateBucket"
        if "partNumber" in query:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    if method == "POST":
        if "delete" in query:
            return "DeleteObjects"
        if "uploads" in query:
            return "CreateMultipartUpload"
        return "CompleteMultipartUpload" if "uploadId" in query else "Post?" + parts.query
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    return method


#: What a fault hook returns: None (forward), an HTTP status to answer with instead of
#: forwarding, or "drop" to close the connection without an answer.
Fault = Callable[[str, str], "int | str | None"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _relay(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        op = s3_operation(self.command, self.path, self.headers)
        head_up = len(self.raw_requestline) + len(self.headers.as_bytes())
        action = "drop" if proxy.down else (proxy.fault(op, self.path) if proxy.fault else None)
        if action == "drop":
            proxy.record(Request(op, self.command, self.path, None, head_up + len(body), 0, len(body), 0))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if isinstance(action, int):
            status, reason = action, "Injected"
            data = (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
                b"<Message>We encountered an internal error. Please try again.</Message></Error>"
            )
            out_headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))]
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            upstream = self._upstream()
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self._conn = None
                raise
            status, reason = resp.status, resp.reason
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            if self.command != "HEAD":
                out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
                out_headers.append(("Content-Length", str(len(data))))
            else:
                data = b""
        head = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in out_headers) + b"\r\n"
        # recorded before the client can see the answer, so a count taken right after a call is complete
        proxy.record(
            Request(
                op, self.command, self.path, status, head_up + len(body), len(head) + len(data), len(body), len(data)
            )
        )
        self.wfile.write(head + data)
        self.wfile.flush()

    def _upstream(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self, "_conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(HOST, self.server.proxy.upstream_port, timeout=30)
            self._conn = conn
        return conn

    def finish(self) -> None:
        super().finish()
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: CountingProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request is what some tests do on purpose


class CountingProxy:
    """A threaded HTTP proxy on 127.0.0.1 that counts requests and bytes, and injects faults."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fault: Fault | None = None
        self.down = False  # True: every connection is closed without an answer
        self._lock = threading.Lock()
        self._log: list[Request] = []
        self._server = _ProxyServer((HOST, 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    @contextmanager
    def counting(self) -> Iterator[list[Request]]:
        """Collect the requests made inside the block (the list is filled on exit)."""
        start = len(self.requests())
        seen: list[Request] = []
        try:
            yield seen
        finally:
            seen.extend(self.requests()[start:])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def summarize(requests: list[Request]) -> dict[str, Any]:
    """Requests by operation and bytes in each direction, for assertions and the report."""
    return {
        "requests": len(requests),
        "by_op": dict(Counter(r.op for r in requests)),
        "bytes_up": sum(r.bytes_up for r in requests),
        "bytes_down": sum(r.bytes_down for r in requests),
        "body_up": sum(r.body_up for r in requests),
        "body_down": sum(r.body_down for r in requests),
    }


class MotoS3:
    """moto's S3 server on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
        self._server.start()
        host, self.port = self._server.get_host_and_port()
        assert host == HOST, host

    def stop(self) -> None:
        self._server.stop()
        wsgi = getattr(self._server, "_server", None)
        if wsgi is not None:
            wsgi.server_close()  # stop() shuts the loop down but leaves the socket open
