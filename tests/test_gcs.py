"""The GCS emulator (fake-gcs-server, ``gcs_server``) answers as object_store's GCS client
expects; what every store must do with ``gs://`` URLs (``load()``, prefixes, missing
objects, the CLI, no stale reads) runs in ``test_object_stores.py`` against it, moto and
Azurite alike."""

from __future__ import annotations

import ssl
import urllib.request
import uuid
import xml.etree.ElementTree as ET

from object_servers import GcsServer


def new_bucket(gcs: GcsServer) -> str:
    return gcs.bucket(f"t-{uuid.uuid4().hex[:12]}")


def test_the_emulator_answers_as_object_store_expects(gcs_server: GcsServer) -> None:
    """What object_store 0.12's GCS client requires of the server (its gcp/client.rs): HEAD
    and ranged GET of `{base}/{bucket}/{key, `/` escaped}` with ETag, Last-Modified and
    Content-Length, and the XML listing with `list-type=2`. A failure here means the emulator
    changed, not the daemon."""
    name = new_bucket(gcs_server)
    gcs_server.put(name, "dir/a.bin", bytes(range(200)))
    tls = ssl.create_default_context(cafile=str(gcs_server.ca))

    def fetch(method: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(gcs_server.endpoint + path, method=method)
        for key, value in headers.items():
            request.add_header(key.replace("_", "-"), value)
        with urllib.request.urlopen(request, context=tls, timeout=30) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )

    status, headers, _ = fetch("HEAD", f"/{name}/dir%2Fa%2Ebin")
    assert status == 200
    assert headers["content-length"] == "200"
    assert headers["etag"] and headers["last-modified"].endswith("GMT")
    status, headers, body = fetch("GET", f"/{name}/dir%2Fa%2Ebin", Range="bytes=10-19")
    assert (status, body) == (206, bytes(range(10, 20)))
    assert headers["content-range"] == "bytes 10-19/200"
    assert headers["last-modified"] and headers["etag"]
    _, _, listing = fetch("GET", f"/{name}?list-type=2&prefix=dir%2F&delimiter=%2F")
    root = ET.fromstring(listing)
    assert [e.text for e in root.iter("Key")] == ["dir/a.bin"]
    assert [e.text for e in root.iter("Size")] == ["200"]
