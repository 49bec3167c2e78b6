"""The object-store fixtures themselves: moto's S3 server and the range-capable HTTP server
behave as the daemon's S3/HTTP tests assume (checked with boto3 and http.client only)."""

from __future__ import annotations

import http.client
import os
import uuid
from pathlib import Path

import pytest
from object_servers import HttpServer, S3Server, parse_range

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable


def unique_bucket(s3: S3Server) -> str:
    # The session shares one moto state; a bucket per test keeps tests independent.
    return s3.bucket(f"t-{uuid.uuid4().hex[:12]}")


def request(
    server: HttpServer, method: str, relpath: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(method, server.url(relpath).removeprefix(server.base), headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


# --- S3 ---------------------------------------------------------------------------------


def test_s3_env_and_endpoint(s3_server: S3Server) -> None:
    env = s3_server.env()
    assert s3_server.endpoint.startswith("http://127.0.0.1:")
    assert env["AWS_ENDPOINT_URL"] == s3_server.endpoint
    assert env["AWS_ALLOW_HTTP"] == "true"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"


def test_s3_round_trip(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = unique_bucket(s3_server)
    s3_server.put(bucket, "a/bytes.bin", DATA)
    file = tmp_path / "f.bin"
    file.write_bytes(DATA[:100])
    s3_server.put(bucket, "a/file.bin", file)
    s3 = s3_server.client()
    assert s3.get_object(Bucket=bucket, Key="a/bytes.bin")["Body"].read() == DATA
    assert s3.get_object(Bucket=bucket, Key="a/file.bin")["Body"].read() == DATA[:100]
    assert s3.head_object(Bucket=bucket, Key="a/bytes.bin")["ContentLength"] == len(DATA)


def test_s3_ranged_get(s3_server: S3Server) -> None:
    bucket = unique_bucket(s3_server)
    s3_server.put(bucket, "k", DATA)
    got = s3_server.client().get_object(Bucket=bucket, Key="k", Range="bytes=1000-1099")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes 1000-1099/{len(DATA)}"
    assert got["Body"].read() == DATA[1000:1100]


def test_s3_forbid_gives_403_on_get_and_head(s3_server: S3Server) -> None:
    from botocore.exceptions import ClientError

    bucket = unique_bucket(s3_server)
    s3_server.put(bucket, "secret", DATA)
    s3_server.put(bucket, "open", DATA)
    s3_server.forbid(bucket, "secret")
    s3 = s3_server.client()
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as err:
            call(Bucket=bucket, Key="secret")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert s3.get_object(Bucket=bucket, Key="open")["Body"].read() == DATA

    # The whole bucket, through the plain HTTP path the daemon would use (unsigned here:
    # moto's Deny applies whoever asks).
    s3_server.forbid(bucket)
    conn = http.client.HTTPConnection(s3_server.endpoint.removeprefix("http://"), timeout=10)
    conn.request("GET", f"/{bucket}/open")
    assert conn.getresponse().status == 403
    conn.close()

    s3_server.allow(bucket)
    assert s3.get_object(Bucket=bucket, Key="secret")["Body"].read() == DATA


# --- HTTP -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=2-50", 10, (2, 9)),
        ("bytes=7-", 10, (7, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=10-", 10, False),
        ("bytes=-0", 10, False),
        ("bytes=0-", 0, False),
        ("bytes=5-2", 10, None),
        ("bytes=0-1,4-5", 10, None),
        ("items=0-1", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


def test_http_get_head_and_validators(http_server: HttpServer) -> None:
    (http_server.root / "dir").mkdir()
    (http_server.root / "dir" / "a b.bin").write_bytes(DATA)
    resp, body = request(http_server, "GET", "dir/a b.bin")
    assert resp.status == 200 and body == DATA
    assert resp.getheader("Content-Length") == str(len(DATA))
    assert resp.getheader("Accept-Ranges") == "bytes"
    assert resp.getheader("ETag") and resp.getheader("Last-Modified")
    head, head_body = request(http_server, "HEAD", "dir/a b.bin")
    assert head.status == 200 and head_body == b""
    assert head.getheader("Content-Length") == str(len(DATA))
    assert head.getheader("ETag") == resp.getheader("ETag")
    missing, _ = request(http_server, "GET", "nope.bin")
    assert missing.status == 404
    (http_server.root.parent / "outside.bin").write_bytes(DATA)
    assert request(http_server, "GET", "../outside.bin")[0].status == 404  # nothing outside root
    assert http_server.log[:3] == [
        ("GET", "/dir/a b.bin", None),
        ("HEAD", "/dir/a b.bin", None),
        ("GET", "/nope.bin", None),
    ]


def test_http_ranges(http_server: HttpServer) -> None:
    (http_server.root / "f.bin").write_bytes(DATA)
    n = len(DATA)
    for header, first, last in [
        ("bytes=100-199", 100, 199),
        ("bytes=10000-", 10000, n - 1),
        ("bytes=-40", n - 40, n - 1),
        ("bytes=10200-99999", 10200, n - 1),
    ]:
        resp, body = request(http_server, "GET", "f.bin", {"Range": header})
        assert resp.status == 206, header
        assert resp.getheader("Content-Range") == f"bytes {first}-{last}/{n}"
        assert resp.getheader("Content-Length") == str(last - first + 1)
        assert body == DATA[first : last + 1]
    resp, body = request(http_server, "GET", "f.bin", {"Range": f"bytes={n}-"})
    assert resp.status == 416
    assert resp.getheader("Content-Range") == f"bytes */{n}"
    assert ("GET", "/f.bin", "bytes=100-199") in http_server.log


def test_http_forbid(http_server: HttpServer) -> None:
    (http_server.root / "f.bin").write_bytes(DATA)
    http_server.forbid("f.bin")
    assert request(http_server, "GET", "f.bin")[0].status == 403
    assert request(http_server, "HEAD", "/f.bin")[0].status == 403


def test_http_drop_truncates_body(http_server: HttpServer) -> None:
    (http_server.root / "f.bin").write_bytes(DATA)
    http_server.drop("f.bin", after=100)
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    conn.request("GET", "/f.bin")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == str(len(DATA))
    with pytest.raises(http.client.IncompleteRead) as err:
        resp.read()
    assert err.value.partial == DATA[:100]
    conn.close()
    # Ranged too, and HEAD is untouched.
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    conn.request("GET", "/f.bin", headers={"Range": "bytes=1000-4999"})
    resp = conn.getresponse()
    assert resp.status == 206
    with pytest.raises(http.client.IncompleteRead) as err:
        resp.read()
    assert err.value.partial == DATA[1000:1100]
    conn.close()
    assert request(http_server, "HEAD", "f.bin")[0].status == 200


def test_http_fail_times_then_serves(http_server: HttpServer) -> None:
    (http_server.root / "f.bin").write_bytes(DATA)
    http_server.fail_times("f.bin", 2)
    # One keep-alive connection throughout, as a retrying client would reuse it.
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    statuses = []
    for _ in range(3):
        conn.request("GET", "/f.bin")
        resp = conn.getresponse()
        body = resp.read()
        statuses.append(resp.status)
    conn.close()
    assert statuses == [503, 503, 200]
    assert body == DATA
    assert [entry[0:2] for entry in http_server.log] == [("GET", "/f.bin")] * 3


def test_http_etag_changes_with_file(http_server: HttpServer) -> None:
    file = http_server.root / "f.bin"
    file.write_bytes(DATA)
    first = request(http_server, "HEAD", "f.bin")[0].getheader("ETag")
    assert request(http_server, "HEAD", "f.bin")[0].getheader("ETag") == first
    file.write_bytes(DATA[:-1])
    second = request(http_server, "HEAD", "f.bin")[0].getheader("ETag")
    assert second != first
    # Same size, new mtime: still a new ETag.
    file.write_bytes(DATA[1:])
    st = file.stat()
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert request(http_server, "HEAD", "f.bin")[0].getheader("ETag") not in (first, second)
