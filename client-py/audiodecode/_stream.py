"""One open stream: its ring mapping and the slot-ownership handshake.

The daemon announces a filled slot with ``BatchReady``; from then on the client owns it
until it sends ``Release`` (no reply). ``EndOfEpoch`` ends the stream's epoch and lists the
skipped items; ``StreamFailed`` stops it with an item's error.
"""

from __future__ import annotations

from audiodecode._client import Connection
from audiodecode._errors import DaemonError, error_from_info
from audiodecode._protocol import (
    Request,
    Response,
    SkippedItem,
    StreamInfo,
    StreamSpec,
)
from audiodecode._ring import Ring, SlotArrays


class Stream:
    def __init__(self, conn: Connection, spec: StreamSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.info: StreamInfo = conn.request(Request.OpenStream(spec), Response.StreamOpened).info
        self.id = self.info.stream
        try:
            self.ring = Ring(self.info.shm_name, self.info.ring, spec.mono)
        except BaseException:
            self._close_on_daemon()
            raise
        self.held: int | None = None
        self.skipped: list[SkippedItem] = []
        self.finished = False
        self._closed = False
        # Batches come in order, starting at the spec's start_batch.
        self._next_seq = spec.start_batch

    def next(self) -> tuple[int, SlotArrays] | None:
        """Wait for the next batch: ``(slot, arrays)``, or None at the end of the epoch.
        The caller must ``release`` the previous slot first (or the ring may run dry)."""
        if self.finished:
            return None
        push = self.conn.next_push(self.id)
        if isinstance(push, Response.BatchReady):
            if push.seq != self._next_seq:
                raise DaemonError(
                    f"stream {self.id}: batch {push.seq} announced, expected {self._next_seq}"
                )
            self._next_seq += 1
            self.held = push.slot
            return push.slot, self.ring.read(push.slot)
        self.finished = True
        if isinstance(push, Response.EndOfEpoch):
            self.skipped = push.skipped
            return None
        raise error_from_info(push.error)  # StreamFailed

    def release(self) -> None:
        """Hand the held slot back to the daemon for refilling."""
        if self.held is not None and not self._closed:
            slot, self.held = self.held, None
            self.conn.send(Request.Release(stream=self.id, slot=slot))

    def _close_on_daemon(self) -> None:
        try:
            self.conn.request(Request.CloseStream(stream=self.id), Response.Ok)
        except DaemonError:
            pass  # the daemon is gone, and the stream with it
        self.conn.forget(self.id)

    def close(self) -> None:
        """Free the stream on the daemon (which unlinks the ring) and unmap it here; batch
        views still alive keep their pages mapped until they are dropped."""
        if self._closed:
            return
        self._closed = True
        self.held = None
        if not self.conn.closed:
            self._close_on_daemon()
        self.ring.close()
