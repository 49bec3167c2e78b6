"""The connection's message flow against fake daemons on a Unix socket (no real daemon):
handshake, pushes interleaved with responses, releases without replies, errors, and a
daemon that goes away."""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest
from audiodecode import (
    AudioFileError,
    AudioFileNotFoundError,
    DaemonError,
    ErrorKind,
    StaleDaemonWarning,
    VersionMismatchError,
    _client,
    _daemon,
)
from audiodecode._client import Connection
from audiodecode._protocol import ErrorInfo, Request, Response, StatusReport
from conftest import greet, recv_request, send

STATUS = Response.Status(
    StatusReport(
        daemon_pid=1234,
        uptime_seconds=1.0,
        clients=1,
        streams=[],
        cache_bytes=0,
        cache_capacity=0,
        cache_hits=0,
        cache_misses=0,
        decodes=0,
        workers=1,
        min_workers=1,
        max_workers=1,
        worker_busy_share=0.0,
        ring_budget_bytes=0,
        gpus=[],
        failed_jobs=0,
        abandoned_jobs=0,
    )
)


def test_socket_path_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIODECODE_SOCKET", "/x/y.sock")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/5")
    assert _daemon.default_socket_path() == Path("/x/y.sock")
    monkeypatch.delenv("AUDIODECODE_SOCKET")
    assert _daemon.default_socket_path() == Path("/run/user/5/audiodecode/daemon.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    expected = Path(f"/tmp/audiodecode-{os.geteuid()}/daemon.sock")
    assert _daemon.default_socket_path() == expected


def test_handshake_and_pushes_queued_while_waiting(fake_daemon) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        assert isinstance(recv_request(sock), Request.Status)
        # Pushes of two streams arrive before the response.
        send(
            sock,
            Response.BatchReady(stream=1, slot=0, seq=0),
            Response.EndOfEpoch(stream=2, skipped=[], damaged=[]),
            Response.BatchReady(stream=1, slot=1, seq=1),
            STATUS,
        )
        # A Release has no reply; the next request's reply follows directly.
        assert recv_request(sock) == Request.Release(stream=1, released=1)
        assert isinstance(recv_request(sock), Request.Status)
        send(sock, STATUS, Response.EndOfEpoch(stream=1, skipped=[], damaged=[]))
        assert recv_request(sock) == Request.Shutdown()

    with Connection.open(fake_daemon(script)) as conn:
        assert conn.daemon_pid == 1234
        assert conn.request(Request.Status(), Response.Status) == STATUS
        assert conn.next_push(1) == Response.BatchReady(stream=1, slot=0, seq=0)
        conn.send(Request.Release(stream=1, released=1))
        assert conn.request(Request.Status(), Response.Status) == STATUS
        assert conn.next_push(2) == Response.EndOfEpoch(stream=2, skipped=[], damaged=[])
        assert conn.next_push(1) == Response.BatchReady(stream=1, slot=1, seq=1)
        assert conn.next_push(1) == Response.EndOfEpoch(stream=1, skipped=[], damaged=[])
        conn.send(Request.Shutdown())


def test_daemon_closing_the_socket_raises_within_a_second(fake_daemon) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        time.sleep(0.3)  # the client is blocked in next_push by now

    conn = Connection.open(fake_daemon(script))
    start = time.monotonic()
    with pytest.raises(DaemonError, match="closed the connection"):
        conn.next_push(1)
    assert time.monotonic() - start < 1.3
    assert conn.closed
    with pytest.raises(DaemonError, match="is closed"):
        conn.request(Request.Status(), Response.Status)


def test_connection_reset_is_a_daemon_error(fake_daemon) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        recv_request(sock)
        time.sleep(0.2)  # the client's second Release arrives and stays unread
        # Close with unread data pending: the peer sees ECONNRESET, not EOF.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    conn = Connection.open(fake_daemon(script))
    conn.send(Request.Release(stream=1, released=1))
    conn.send(Request.Release(stream=1, released=2))  # left unread by the fake
    with pytest.raises(DaemonError, match="closed the connection .Connection reset"):
        conn.request(Request.Status(), Response.Status)


def test_version_mismatch(fake_daemon) -> None:
    def script(sock: socket.socket) -> None:
        recv_request(sock)
        info = ErrorInfo(kind=ErrorKind.VERSION_MISMATCH, path=None, message="speaks 2")
        send(sock, Response.Error(info))

    with pytest.raises(VersionMismatchError, match="speaks 2") as e:
        Connection.open(fake_daemon(script))
    assert e.value.kind == ErrorKind.VERSION_MISMATCH


def test_daemon_errors_become_typed_exceptions(fake_daemon) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        for kind in (ErrorKind.NOT_FOUND, ErrorKind.CORRUPT):
            recv_request(sock)
            send(sock, Response.Error(ErrorInfo(kind=kind, path="/a.wav", message="/a.wav: x")))
        recv_request(sock)
        send(sock, Response.Ok())  # not a Status

    with Connection.open(fake_daemon(script)) as conn:
        with pytest.raises(AudioFileNotFoundError) as e:
            conn.request(Request.Status(), Response.Status)
        assert isinstance(e.value, FileNotFoundError) and e.value.path == "/a.wav"
        with pytest.raises(AudioFileError, match="/a.wav: x") as e2:
            conn.request(Request.Status(), Response.Status)
        assert e2.value.kind == ErrorKind.CORRUPT
        with pytest.raises(DaemonError, match="answered Response.Ok to Request.Status"):
            conn.request(Request.Status(), Response.Status)


def test_silent_peer_fails_the_handshake(fake_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_client, "HANDSHAKE_SECONDS", 0.2)
    done = threading.Event()

    def script(sock: socket.socket) -> None:
        done.wait(5)

    path = fake_daemon(script)
    with pytest.raises(DaemonError, match="no answer"):
        Connection.open(path)
    done.set()


def test_autostart_failure_reports_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "audiodecode"
    fake.write_text('#!/bin/sh\necho "cannot bind: $*" >&2\nexit 3\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("AUDIODECODE_BIN", str(fake))
    sock = tmp_path / "run" / "daemon.sock"
    start = time.monotonic()
    with pytest.raises(DaemonError, match="exited with status 3") as e:
        _daemon.connect(sock)
    assert "cannot bind: serve --foreground --socket" in str(e.value)
    assert time.monotonic() - start < 5
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700


def test_a_daemon_running_a_replaced_binary_is_named_stale(binary: Path, tmp_path: Path) -> None:
    """The shared daemon outlives an upgrade or a rebuild and kept serving the old code
    without a word: connecting to one whose binary was replaced warns, naming how to stop
    it; a current one does not."""
    started = tmp_path / "audiodecode"
    os.link(binary, started)
    sock = tmp_path / "d.sock"
    proc = subprocess.Popen(
        [str(started), "serve", "--foreground", "--socket", str(sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _daemon.connect(sock).close()
        started.unlink()  # as pip or cargo replace it
        with pytest.warns(StaleDaemonWarning, match=rf"pid {proc.pid}.*audiodecode stop"):
            _daemon.connect(sock).close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
