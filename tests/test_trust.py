"""The client talks only to a server run by its own user, and keeps the per-user socket
directory private: checked against fake servers and directories, without the daemon."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from audiodecode import DaemonError, _daemon, _trust
from audiodecode._client import Connection
from conftest import Script

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def test_peer_uid_reads_the_peer_credentials() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert _trust.peer_uid(a) == os.geteuid()


def test_a_foreign_peer_is_refused_before_anything_is_sent(
    fake_daemon: Callable[[Script], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def script(sock: socket.socket) -> None:
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the client sent something to a foreign server"

    path = fake_daemon(script)
    monkeypatch.setattr(_trust, "peer_uid", lambda sock: os.geteuid() + 1)
    with pytest.raises(DaemonError, match=f"uid {os.geteuid() + 1}") as e:
        Connection.open(path)
    assert path in str(e.value)


@as_root
def test_a_server_run_by_another_user_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "foreign.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the server: listen() records the credentials the client will see
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            listener.listen(1)
            os.write(ready_w, b"1")
            listener.settimeout(10)
            conn, _ = listener.accept()
            conn.settimeout(10)
            code = 0 if conn.recv(1) == b"" else 2  # 2: the client sent something
        finally:
            os._exit(code)
    os.close(ready_w)
    listener.close()
    try:
        if os.read(ready_r, 1) != b"1":
            pytest.skip("cannot switch to another uid here")
        with pytest.raises(DaemonError, match=f"runs as uid {NOBODY}") as e:
            Connection.open(path)
        assert path in str(e.value)
    finally:
        os.close(ready_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# --- The default socket directory. ------------------------------------------------------------


class Spawned(Exception):
    """Raised instead of starting a daemon: the checks let the client get that far."""


@pytest.fixture
def socket_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default socket directory, under a temporary ``$XDG_RUNTIME_DIR``; starting a
    daemon raises ``Spawned``."""
    monkeypatch.delenv("AUDIODECODE_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(_daemon, "_active", None)

    def spawn(args: list[str], log: Path) -> None:
        raise Spawned(args)

    monkeypatch.setattr(_daemon, "_spawn", spawn)
    return tmp_path / "audiodecode"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("bits", [0o777, 0o770, 0o702])
def test_a_shared_socket_directory_is_refused_and_kept(socket_dir: Path, bits: int) -> None:
    socket_dir.mkdir()
    socket_dir.chmod(bits)
    with pytest.raises(DaemonError, match="writable by group or others") as e:
        _daemon.connect()
    assert str(socket_dir) in str(e.value)
    assert mode(socket_dir) == bits  # not ours to fix


@as_root
def test_a_socket_directory_of_another_user_is_refused(socket_dir: Path) -> None:
    socket_dir.mkdir(mode=0o700)
    os.chown(socket_dir, NOBODY, NOBODY)
    with pytest.raises(DaemonError, match=f"owned by uid {NOBODY}") as e:
        _daemon.connect()
    assert str(socket_dir) in str(e.value)
    assert mode(socket_dir) == 0o700 and socket_dir.stat().st_uid == NOBODY


def test_a_symlinked_socket_directory_is_refused(socket_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    socket_dir.symlink_to(target)
    with pytest.raises(DaemonError, match="not a directory"):
        _daemon.connect()


def test_the_client_creates_a_private_directory(socket_dir: Path) -> None:
    old = os.umask(0o277)  # would leave the owner without write permission
    try:
        with pytest.raises(Spawned):
            _daemon.connect()
    finally:
        os.umask(old)
    assert mode(socket_dir) == 0o700


def test_a_private_directory_found_in_place_is_used_as_it_is(socket_dir: Path) -> None:
    socket_dir.mkdir()
    socket_dir.chmod(0o750)
    with pytest.raises(Spawned):
        _daemon.connect()
    assert mode(socket_dir) == 0o750
