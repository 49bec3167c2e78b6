"""One connection to the daemon: framing, the handshake, and the message flow.

Requests other than ``Release`` get exactly one response each, in order. Independently the
daemon pushes ``BatchReady``/``EndOfEpoch``/``StreamFailed`` for open streams at any time;
pushes read while waiting for a response are queued per stream for ``next_push``. A long
request (``Transcribe``) is answered with progress messages (``Transcribed``) before its one
response; ``request`` hands them to a callback.

Reads use a blocking socket with a short timeout in a loop: a daemon that dies closes the
socket (read returns nothing, or ECONNRESET), which is reported at once as ``DaemonError``,
while the loop keeps long waits (a slow first batch) interruptible.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Self, TypeVar

from audiodecode._errors import DaemonError, error_from_info
from audiodecode._protocol import (
    PROGRESS_TYPES,
    PROTOCOL_VERSION,
    PUSH_TYPES,
    AnyRequest,
    AnyResponse,
    ProtocolError,
    Request,
    Response,
    decode_response,
    encode_request,
    frame,
    frame_length,
)
from audiodecode._trust import check_peer

POLL_SECONDS = 1.0
RECV_CHUNK = 64 * 1024
# Something that accepts connections but never answers the handshake is not a daemon.
HANDSHAKE_SECONDS = 10.0
R = TypeVar("R")


class Connection:
    """A handshaken connection. Not for concurrent use from several threads except through
    ``request``/``send``, which are serialised.

    ``inbox``, ``queued``, ``fill``, ``read_available`` and ``send_frame`` are for a stream's
    per-batch loop
    (``Stream.batches``), which writes and parses without the lock: a loader's connection is
    used by the one thread that iterates it."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self.path = path
        self._pushes: dict[int, collections.deque[Any]] = collections.defaultdict(collections.deque)
        self._lock = threading.RLock()
        self.closed = False
        self.daemon_pid = 0
        # Bytes received but not yet parsed: one recv often carries several pushes (the
        # daemon announces every ready batch at once), so later next() calls need no syscall.
        self.inbox = bytearray()
        self._scratch = bytearray(RECV_CHUNK)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        """Connect and handshake. ``FileNotFoundError``/``ConnectionRefusedError`` mean
        that nothing listens at ``path`` (callers may start a daemon and retry); a server
        run by another user raises ``DaemonError`` before anything is sent to it."""
        path = os.fspath(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(POLL_SECONDS)
            sock.connect(path)
            check_peer(sock, path)
        except BaseException:
            sock.close()
            raise
        conn = cls(sock, path)
        try:
            hello = conn.request(
                Request.Hello(version=PROTOCOL_VERSION, client_pid=os.getpid()),
                Response.Hello,
                timeout=HANDSHAKE_SECONDS,
            )
        except BaseException:
            conn.close()
            raise
        if hello.version != PROTOCOL_VERSION:
            conn.close()
            raise DaemonError(
                f"audiodecode daemon at {path} speaks protocol {hello.version}, "
                f"this client {PROTOCOL_VERSION}"
            )
        conn.daemon_pid = hello.daemon_pid
        return conn

    # --- Sending. ---------------------------------------------------------------------------

    def send(self, msg: AnyRequest) -> None:
        """Send a request that has no response (``Release``)."""
        data = frame(encode_request(msg))
        with self._lock:
            self.send_frame(data)

    def send_frame(self, data: bytes) -> None:
        """Write one framed message. Without the lock: a stream's per-batch loop calls it
        (a loader's connection is used by the one thread that iterates it)."""
        self._check_open()  # the fd of a closed connection may belong to another file now
        # One write(2) first: a socket with a timeout is non-blocking underneath, and
        # socket.send would poll(2) before every send, doubling the syscalls.
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except (BrokenPipeError, ConnectionResetError) as e:
            raise self._gone(e) from None
        if sent < len(data):
            self._send_rest(memoryview(data), sent)

    def _send_rest(self, data: memoryview, sent: int) -> None:
        """Send ``data[sent:]``, waiting for room in the socket buffer."""
        while sent < len(data):
            try:
                sent += self._sock.send(data[sent:])
            except TimeoutError:
                continue  # a big frame and a busy daemon; a dead one gives EPIPE
            except (BrokenPipeError, ConnectionResetError) as e:
                raise self._gone(e) from None

    def request(
        self,
        msg: AnyRequest,
        expect: type[R],
        timeout: float | None = None,
        *,
        on_progress: Callable[[Any], None] | None = None,
    ) -> R:
        """Send ``msg`` and return its one response, which must be an ``expect``;
        ``Response.Error`` raises the matching ``AudioDecodeError``. Without ``timeout``
        this waits as long as the daemon lives.

        Progress messages (``Transcribed``) before the response go to ``on_progress``. If it
        raises, the connection is closed: the rest of the reply cannot be skipped, and a
        closed connection makes the daemon abandon the request."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self.send(msg)
            while True:
                reply = self._read(deadline)
                if isinstance(reply, PUSH_TYPES):
                    self._pushes[reply.stream].append(reply)
                    continue
                if on_progress is not None and isinstance(reply, PROGRESS_TYPES):
                    try:
                        on_progress(reply)
                    except BaseException:
                        self.close()
                        raise
                    continue
                if isinstance(reply, Response.Error):
                    raise error_from_info(reply.error)
                if not isinstance(reply, expect):
                    raise DaemonError(
                        f"audiodecode daemon answered {type(reply).__qualname__} to "
                        f"{type(msg).__qualname__} (expected {expect.__qualname__})"
                    )
                return reply

    # --- Receiving. -------------------------------------------------------------------------

    def next_push(self, stream: int) -> Any:
        """The next ``BatchReady``/``EndOfEpoch``/``StreamFailed`` for ``stream``,
        waiting for it if none is queued."""
        with self._lock:
            queue = self._pushes[stream]
            while not queue:
                msg = self._read()
                if not isinstance(msg, PUSH_TYPES):
                    raise DaemonError(
                        f"audiodecode daemon sent {type(msg).__qualname__} without a request"
                    )
                self._pushes[msg.stream].append(msg)
            return queue.popleft()

    def queued(self, stream: int) -> collections.deque[Any]:
        """``stream``'s pushes already read and decoded (while waiting for a response);
        they come before any still in ``inbox``."""
        return self._pushes[stream]

    def forget(self, stream: int) -> None:
        """Drop queued pushes of a closed stream."""
        with self._lock:
            self._pushes.pop(stream, None)

    def _read(self, deadline: float | None = None) -> AnyResponse:
        self.fill(4, deadline)
        n = frame_length(self.inbox[:4])
        self.fill(4 + n, deadline)
        payload = self.inbox[4 : 4 + n]
        del self.inbox[: 4 + n]
        try:
            return decode_response(payload)
        except ProtocolError as e:
            raise DaemonError(
                f"undecodable message from the audiodecode daemon at {self.path}: {e}"
            ) from None

    def fill(self, n: int, deadline: float | None = None) -> None:
        """Receive until the inbox holds at least ``n`` bytes."""
        self._check_open()
        while len(self.inbox) < n:
            # A plain read first (no poll(2)); wait with the timeout only if empty.
            if self._read_now():
                continue
            try:
                k = self._sock.recv_into(self._scratch)
            except TimeoutError:
                if deadline is not None and time.monotonic() > deadline:
                    self.close()
                    raise DaemonError(
                        f"no answer from {self.path} (is it an audiodecode daemon?)"
                    ) from None
                continue  # nothing yet; the daemon may be busy decoding
            except (ConnectionResetError, BrokenPipeError) as e:
                raise self._gone(e) from None
            self._received(k)

    def read_available(self) -> None:
        """Add to the inbox what the socket holds, without waiting."""
        self._check_open()
        self._read_now()

    def _read_now(self) -> bool:
        """One read that does not wait; whether it got anything."""
        try:
            k = os.readv(self._fd, [self._scratch])
        except BlockingIOError:
            return False
        except (ConnectionResetError, BrokenPipeError) as e:
            raise self._gone(e) from None
        self._received(k)
        return True

    def _received(self, k: int) -> None:
        if k == 0:
            raise self._gone(None)
        self.inbox += memoryview(self._scratch)[:k]

    # --- Lifecycle. -------------------------------------------------------------------------

    def _gone(self, cause: OSError | None) -> DaemonError:
        self.close()
        why = f" ({cause.strerror or cause})" if cause is not None else ""
        return DaemonError(
            f"audiodecode daemon at {self.path} closed the connection{why}; "
            "did it crash? (its log is daemon.log beside the socket)"
        )

    def _check_open(self) -> None:
        if self.closed:
            raise DaemonError(f"connection to the audiodecode daemon at {self.path} is closed")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
