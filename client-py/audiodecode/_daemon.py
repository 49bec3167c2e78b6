"""Finding, starting and stopping daemons, and connecting to one.

Two ways to get a daemon: the shared per-user daemon at the default socket, started on
demand by the first client that finds nobody listening (all DDP ranks of a node share it);
or a private one owned by a ``Daemon`` context, which clients created inside it use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from audiodecode._binary import find_binary
from audiodecode._client import Connection
from audiodecode._errors import DaemonError, StaleDaemonWarning
from audiodecode._protocol import Request, Response, StatusReport
from audiodecode._trust import private_dir

START_SECONDS = 10.0
# A daemon serving HTTP loads its model first.
HTTP_START_SECONDS = 180.0
# The daemon's line naming the address it serves HTTP on (port 0 picks one).
_HTTP_LINE = re.compile(r"HTTP service on (http://\S+)")
LOG_NAME = "daemon.log"

# The innermost active ``Daemon`` context, if any.
_active: Daemon | None = None


def default_socket_path() -> Path:
    """``$AUDIODECODE_SOCKET``, else ``$XDG_RUNTIME_DIR/audiodecode/daemon.sock``, else
    ``/tmp/audiodecode-<uid>/daemon.sock`` (the daemon resolves it the same way)."""
    explicit = os.environ.get("AUDIODECODE_SOCKET")
    if explicit:
        return Path(explicit)
    return default_socket_dir() / "daemon.sock"


def default_socket_dir() -> Path:
    """The per-user directory of the default socket (when ``$AUDIODECODE_SOCKET`` is unset)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "audiodecode"
    return Path(f"/tmp/audiodecode-{os.geteuid()}")


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"(no log at {log})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"last lines of {log}:\n{tail}" if tail else f"({log} is empty)"


def _spawn(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``audiodecode <args>`` in its own session (so a Ctrl-C aimed at the training
    job does not reach it) with output appended to ``log``; ``env`` adds variables."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(find_binary()), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )


def _wait_until_up(
    path: Path, proc: subprocess.Popen[bytes], log: Path, seconds: float = START_SECONDS
) -> Connection:
    """Retry connecting until the daemon answers. A started process that exits with
    status 0 lost the race to another daemon, which will answer shortly."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn = Connection.open(path)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        else:
            if conn.daemon_pid != proc.pid and proc.poll() is None:
                # Another daemon answered first. Ours has not bound the socket; left alone
                # it could take over once that one exits and live on unseen, so stop it.
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            return conn
        code = proc.poll()
        if code not in (None, 0):
            raise DaemonError(
                f"the audiodecode daemon for {path} exited with status {code}; " + _log_tail(log)
            )
        if time.monotonic() > deadline:
            raise DaemonError(
                f"the audiodecode daemon for {path} did not answer within "
                f"{seconds:.0f} s; " + _log_tail(log)
            )
        time.sleep(0.05)


def active_daemon() -> Daemon | None:
    """The innermost active ``Daemon`` context."""
    return _active


def connect(socket: str | os.PathLike[str] | None = None) -> Connection:
    """A handshaken connection. With no ``socket``: the active ``Daemon`` context's, else
    the per-user daemon, started if nothing answers at the default socket."""
    if socket is None and _active is not None:
        return _active.connect()
    path = Path(socket) if socket is not None else default_socket_path()
    if socket is None and not os.environ.get("AUDIODECODE_SOCKET"):
        # Under /tmp anyone may have made it first: it must be ours and private.
        private_dir(path.parent)
    try:
        conn = Connection.open(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    else:
        warn_if_stale(conn.daemon_pid, path)
        return conn
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = path.parent / LOG_NAME
    # --foreground: this process is the daemon (no re-exec), so its exit status is ours
    # to see; the new session detaches it from the caller.
    proc = _spawn(["serve", "--foreground", "--socket", str(path)], log)
    return _wait_until_up(path, proc, log)


def warn_if_stale(pid: int, socket: Path) -> None:
    """Warn when the daemon ``pid`` runs a binary replaced since it started: the shared
    daemon outlives upgrades and rebuilds, and kept serving the old code without a word.
    Linux only (``/proc/PID/exe`` names a replaced binary ``… (deleted)``)."""
    try:
        running = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return
    if running.endswith(" (deleted)"):
        warnings.warn(
            f"the audiodecode daemon at {socket} (pid {pid}) runs {running[: -len(' (deleted)')]}"
            " as it was before it was replaced (an upgrade or a rebuild): it serves the old"
            f" code until stopped (`audiodecode stop --socket {socket}`); the next use then"
            " starts the installed binary",
            StaleDaemonWarning,
            stacklevel=3,
        )


class Daemon:
    """A private daemon for the duration of a ``with`` block::

        with audiodecode.Daemon(workers=4):
            for batch in AudioDataLoader(files):
                ...

    Clients created inside the block (loaders, ``load``) use it; on exit it is asked to
    shut down and, failing that, killed.

    ``http="127.0.0.1:8000"`` also serves transcription over HTTP (OpenAI's audio routes,
    see :func:`audiodecode.serve_http`); ``http_options`` are ``serve``'s HTTP flags without
    dashes (``model="tiny.en"``, ``api_key="…"``, ``batch_wait_ms=25``). Port 0 picks a free
    port; ``http_url`` says which.

    Remote inputs (``s3://``, ``http(s)://``, …) are fetched into memory, or into
    ``object_cache`` (a directory, bounded by ``object_cache_bytes``) to keep them across
    epochs and runs; the daemon takes credentials and endpoints from this process's
    environment (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``). The indexes of remote tar shards
    that have no index sidecar, learnt by fetching them, are kept for later daemons in
    ``index_cache`` (a directory; default ``~/.cache/audiodecode/shard-indexes``, or
    ``$AUDIODECODE_INDEX_CACHE``); ``index_cache=False`` keeps none.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        workers: int | None = None,
        stop_timeout: float = 10.0,
        *,
        min_workers: int | None = None,
        max_workers: int | None = None,
        cache_bytes: int | None = None,
        ring_bytes: int | None = None,
        item_deadline: int | None = None,
        object_cache: str | os.PathLike[str] | None = None,
        object_cache_bytes: int | None = None,
        index_cache: str | os.PathLike[str] | bool | None = None,
        http: str | None = None,
        http_options: Mapping[str, str | float | bool] | None = None,
    ) -> None:
        self._requested_socket = Path(socket) if socket is not None else None
        self.workers = workers
        # Overrides of the daemon's own sizing (see `audiodecode serve --help`).
        self.sizing = {
            "--workers": workers,
            "--min-workers": min_workers,
            "--max-workers": max_workers,
            "--cache-bytes": cache_bytes,
            "--ring-bytes": ring_bytes,
            "--item-deadline": item_deadline,
            "--object-cache": None if object_cache is None else os.fspath(object_cache),
            "--object-cache-bytes": object_cache_bytes,
        }
        # Learnt shard indexes: a variable, not a flag, so that "keep none" (empty) can be said.
        self.index_env: dict[str, str] = {}
        if index_cache is False:
            self.index_env["AUDIODECODE_INDEX_CACHE"] = ""
        elif index_cache is not None and index_cache is not True:
            self.index_env["AUDIODECODE_INDEX_CACHE"] = os.fspath(index_cache)
        self.http = http
        self.http_options = dict(http_options or {})
        self.http_url: str | None = None
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._previous: Daemon | None = None
        self.socket_path = Path()
        self.log_path = Path()

    def __enter__(self) -> Self:
        global _active
        if self.process is not None:
            return self  # already started (``serve_http`` returns a started daemon)
        self._tmpdir = tempfile.mkdtemp(prefix="audiodecode-")
        self.socket_path = self._requested_socket or Path(self._tmpdir) / "daemon.sock"
        self.log_path = Path(self._tmpdir) / LOG_NAME
        args = ["serve", "--foreground", "--socket", str(self.socket_path)]
        for flag, value in self.sizing.items():
            if value is not None:
                args += [flag, str(value)]
        http_args, env = _http_args(self.http, self.http_options)
        self.process = _spawn(args + http_args, self.log_path, {**env, **self.index_env})
        # With HTTP the model loads before the socket answers.
        seconds = HTTP_START_SECONDS if self.http else START_SECONDS
        try:
            with _wait_until_up(self.socket_path, self.process, self.log_path, seconds) as conn:
                if conn.daemon_pid != self.process.pid:
                    raise DaemonError(
                        f"another audiodecode daemon (pid {conn.daemon_pid}) already "
                        f"serves {self.socket_path}"
                    )
            if self.http:
                self.http_url = _served_url(self.log_path)
        except BaseException:
            self._stop()
            raise
        self._previous, _active = _active, self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the daemon (what leaving the ``with`` block does)."""
        global _active
        if _active is self:
            _active = self._previous
        self._stop()

    @property
    def pid(self) -> int:
        if self.process is None:
            raise DaemonError("the daemon is not running (use it as a context manager)")
        return self.process.pid

    def connect(self) -> Connection:
        """A connection to this daemon (never starts another one)."""
        try:
            return Connection.open(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonError(
                f"the private audiodecode daemon at {self.socket_path} is not running; "
                + _log_tail(self.log_path)
            ) from None

    def status(self) -> StatusReport:
        with self.connect() as conn:
            return conn.request(Request.Status(), Response.Status).report

    def _stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                with self.connect() as conn:
                    conn.request(Request.Shutdown(), Response.Ok, timeout=self.stop_timeout)
            except (OSError, DaemonError):
                pass  # already gone or unreachable: the kill below settles it
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _http_args(
    address: str | None, options: Mapping[str, str | float | bool]
) -> tuple[list[str], dict[str, str]]:
    """``serve``'s HTTP flags for ``address`` and ``options``; the API key goes in the
    environment (never on a command line other users can read)."""
    if not address:
        if options:
            raise ValueError("http_options need http= (the address to serve on)")
        return [], {}
    args = ["--http", address]
    env: dict[str, str] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name == "api_key":
            env["AUDIODECODE_API_KEY"] = str(value)
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["--" + name.replace("_", "-"), text]
    return args, env


def _served_url(log: Path) -> str:
    """The URL the daemon's log says it serves HTTP on."""
    try:
        found = _HTTP_LINE.findall(log.read_text(errors="replace"))
    except OSError:
        found = []
    if not found:
        raise DaemonError("the daemon did not say where it serves HTTP; " + _log_tail(log))
    return str(found[-1])
