"""One open stream: its ring mapping and the slot-ownership handshake.

The daemon announces a filled slot with ``BatchReady``; from then on the client owns it
until it sends ``Release`` (no reply). ``EndOfEpoch`` ends the stream's epoch and lists the
skipped items; ``StreamFailed`` stops it with an item's error.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from typing import TypeVar

from audiodecode._client import Connection
from audiodecode._errors import DaemonError, error_from_info
from audiodecode._protocol import (
    BATCH_READY_BYTES,
    Request,
    Response,
    SkippedItem,
    StreamInfo,
    StreamSpec,
    batch_ready_prefix,
    encode_request,
    frame,
)
from audiodecode._ring import Ring

T = TypeVar("T")
# A framed BatchReady is its 12-byte prefix (length, variant, stream), then slot and seq.
_READY_BYTES = 4 + BATCH_READY_BYTES
_SLOT_SEQ = struct.Struct("<IQ")
_RELEASE_BYTES = len(frame(encode_request(Request.Release(stream=0, slot=0))))


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
        # Batches come in order, starting at the spec's start_batch; also the position.
        self._next_seq = spec.start_batch
        # Built once: the per-batch messages are then plain bytes, not encoded each time.
        self._ready = batch_ready_prefix(self.id)
        self._slots = self.info.ring.slots
        self._release_frames = [
            frame(encode_request(Request.Release(stream=self.id, slot=k)))
            for k in range(self.info.ring.slots)
        ]

    def batches(self, make: Callable[[int], T]) -> Iterator[T]:
        """The epoch's batches, ``make(slot)`` of each announced slot. Each step first hands
        back the slot of the step before (unless ``release`` did), then takes the next
        announcement; ends with the epoch, raises on ``StreamFailed``.

        This is the training loop's ``next()``, so it is one flat loop: after a training
        step every call in it is paid again with cold caches (5-30 us each on a 2-core VM).
        A step is one write of a prebuilt ``Release`` frame and, while announcements wait in
        the connection's inbox (the daemon sends them as slots fill), no read; else one read
        takes all that has arrived. A ``BatchReady`` frame for this stream is recognised by
        its first 12 bytes and only its slot and seq are unpacked."""
        conn, sid, slots = self.conn, self.id, self._slots
        frames, ready = self._release_frames, self._ready
        inbox, queued = conn.inbox, conn.queued(sid)
        write, unpack = os.write, _SLOT_SEQ.unpack_from
        expect = self._next_seq
        while not self.finished:
            held = self.held
            if held is not None:
                self.held = None
                if conn.closed:
                    conn.check_open()  # raises: the fd may already belong to another file
                try:
                    sent = write(conn.fd, frames[held])
                except BlockingIOError:
                    sent = 0
                except (BrokenPipeError, ConnectionResetError) as e:
                    raise conn.gone(e) from None
                if sent < _RELEASE_BYTES:
                    conn.send_rest(memoryview(frames[held]), sent)
            if not inbox and not queued:
                conn.fill(1)  # one read: waits for the daemon, takes all it has sent
            if len(inbox) >= _READY_BYTES and inbox.startswith(ready) and not queued:
                slot, seq = unpack(inbox, 12)
                del inbox[:_READY_BYTES]
            else:
                push = conn.next_push(sid)
                if not isinstance(push, Response.BatchReady):
                    self.finished = True
                    if isinstance(push, Response.EndOfEpoch):
                        self.skipped = push.skipped
                        return
                    raise error_from_info(push.error)  # StreamFailed
                slot, seq = push.slot, push.seq
            if seq != expect or slot >= slots:
                raise DaemonError(
                    f"stream {sid}: batch {seq} announced in slot {slot}, expected batch "
                    f"{expect} in a ring of {slots}"
                )
            expect = self._next_seq = expect + 1
            self.held = slot
            yield make(slot)

    @property
    def batches_taken(self) -> int:
        """The epoch's batches taken so far, counting from batch 0 (a resumed stream starts
        at its ``start_batch``)."""
        return self._next_seq

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
