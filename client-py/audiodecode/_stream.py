"""One open stream: its ring mapping and the slot-ownership handshake.

Batches are announced and handed back in order. On x86-64 both go through the ring
header's hand-off words (``protocol/README.md``, "Ownership"): the client takes the next
announcement from the ring's table and stores its count of batches handed back there, so
``next()`` makes no system call while batches are ready. It sends ``Release`` only when
the daemon asks for it (the doorbell word: its driver waits for free slots) and before it
waits for a batch on the socket. Elsewhere plain loads and stores may be reordered, so every
step goes over the socket: a ``Release`` per batch, and the ``BatchReady`` pushes.

The daemon pushes ``BatchReady`` for every batch either way; in shared mode those for
batches already taken from the table are dropped when the socket is read. ``EndOfEpoch``
ends the stream's epoch and lists the skipped items; ``StreamFailed`` stops it with an
item's error.
"""

from __future__ import annotations

import platform
import struct
from collections.abc import Callable, Iterator
from typing import TypeVar

from audiodecode._client import Connection
from audiodecode._errors import DaemonError, error_from_info
from audiodecode._protocol import (
    ANNOUNCE_LOG_OFFSET,
    ANNOUNCED_OFFSET,
    BATCH_READY_BYTES,
    DOORBELL_OFFSET,
    RELEASED_OFFSET,
    Request,
    Response,
    SkippedItem,
    StreamInfo,
    StreamSpec,
    batch_ready_prefix,
    release_frame,
)
from audiodecode._ring import Ring

T = TypeVar("T")
# Where plain loads and stores keep their order (x86-64), the hand-off goes through the
# ring header; elsewhere a store could become visible before the slot reads before it.
SHARED_HANDOFF = platform.machine().lower() in ("x86_64", "amd64")
# A framed BatchReady is its 12-byte prefix (length, variant, stream), then slot and seq.
_READY_BYTES = 4 + BATCH_READY_BYTES
_SLOT_SEQ = struct.Struct("<IQ")
_RELEASED, _DOORBELL, _ANNOUNCED = RELEASED_OFFSET // 8, DOORBELL_OFFSET // 8, ANNOUNCED_OFFSET // 8
_LOG = ANNOUNCE_LOG_OFFSET // 8
# In shared mode the pushes of batches taken from the table pile up unread in the socket
# while batches are ready; one read every this many batches drops them.
_DROP_STALE_EVERY = 32


class Stream:
    def __init__(self, conn: Connection, spec: StreamSpec, shared: bool | None = None) -> None:
        self.conn = conn
        self.spec = spec
        self.info: StreamInfo = conn.request(Request.OpenStream(spec), Response.StreamOpened).info
        self.id = self.info.stream
        try:
            self.ring = Ring(self.info.shm_name, self.info.ring, spec.mono)
        except BaseException:
            self._close_on_daemon()
            raise
        self.shared = SHARED_HANDOFF if shared is None else shared
        self.held: int | None = None
        self.skipped: list[SkippedItem] = []
        self.damaged: list[SkippedItem] = []
        self.finished = False
        self._closed = False
        # Batches come in order, starting at the spec's start_batch; also the position.
        self._next_seq = spec.start_batch
        # Counted since the stream opened: announcements taken, batches handed back, and
        # the count last sent in a Release.
        self._taken = 0
        self._released = 0
        self._sent = 0
        self._ready = batch_ready_prefix(self.id)
        self._slots = self.info.ring.slots

    def batches(self, make: Callable[[int], T]) -> Iterator[T]:
        """The epoch's batches, ``make(slot)`` of each announced slot. Each step first hands
        back the slot of the step before (unless ``release`` did), then takes the next
        announcement; ends with the epoch, raises on ``StreamFailed``.

        This is the training loop's ``next()``, so its common path is flat: after a training
        step every call in it is paid again with cold caches (5-30 us each on a 2-core VM,
        and ~40 us for a system call that wakes the daemon). In shared mode, while batches
        are ready, a step is two stores and three loads in the ring header, plus a
        ``Release`` when the doorbell asks for one (every other batch at most, with the
        daemon's usual four slots in circulation)."""
        words, slots, shared = self.ring.words, self._slots, self.shared
        while not self.finished:
            if self.held is not None:
                self._hand_back()
            taken = self._taken
            if shared and words[_ANNOUNCED] > taken:
                entry = words[_LOG + taken % slots]
                slot, seq = entry & 0xFFFFFFFF, entry >> 32
                self._taken = taken + 1
                if taken % _DROP_STALE_EVERY == _DROP_STALE_EVERY - 1:
                    self._drop_stale()
            else:
                announced = self._wait_announcement()
                if announced is None:
                    return
                slot, seq = announced
            if seq < self._next_seq or slot >= slots:
                raise DaemonError(
                    f"stream {self.id}: batch {seq} announced in slot {slot}, expected batch "
                    f"{self._next_seq} or later in a ring of {slots}"
                )
            # A later seq than expected: every item of the batches between failed and was
            # skipped.
            self._next_seq = seq + 1
            self.held = slot
            yield make(slot)

    def _hand_back(self) -> None:
        """Hand the held slot back: count it in the ring header, and tell the daemon if it
        asked (shared mode) or always (socket mode)."""
        self.held = None
        released = self._released = self._released + 1
        if not self.shared:
            self._send_released()
            return
        words = self.ring.words
        words[_RELEASED] = released
        # Once per doorbell: a count already sent that reaches it will free the slots.
        if released >= words[_DOORBELL] > self._sent:
            self._send_released()

    def _send_released(self) -> None:
        """Tell the daemon how many batches have been handed back."""
        self._sent = self._released
        self.conn.send_frame(release_frame(self.id, self._released))

    def _wait_announcement(self) -> tuple[int, int] | None:
        """The next batch's (slot, seq) from the socket, waiting for it; ``None`` at the end
        of the epoch. Hands back what the ring header says was handed back first, in case
        the daemon waits for it and the doorbell was missed."""
        if self._released > self._sent:
            self._send_released()
        conn, sid = self.conn, self.id
        inbox, queued = conn.inbox, conn.queued(sid)
        while True:
            if not inbox and not queued:
                conn.fill(1)  # one read: waits for the daemon, takes all it has sent
            front = None if queued else self._front_announcement()
            if front is not None:
                slot, seq = front
                del inbox[:_READY_BYTES]
            else:
                push = conn.next_push(sid)
                if not isinstance(push, Response.BatchReady):
                    self.finished = True
                    if isinstance(push, Response.EndOfEpoch):
                        self.skipped = push.skipped
                        self.damaged = push.damaged
                        return None
                    raise error_from_info(push.error)  # StreamFailed
                slot, seq = push.slot, push.seq
            if seq < self._next_seq and self.shared:
                continue  # already taken from the ring header
            self._taken += 1
            return slot, seq

    def _drop_stale(self) -> None:
        """Read what the socket holds without waiting, and drop the pushes of batches
        already taken from the ring header (a later push stays for ``_wait_announcement``)."""
        self.conn.read_available()
        while (front := self._front_announcement()) is not None and front[1] < self._next_seq:
            del self.conn.inbox[:_READY_BYTES]

    def _front_announcement(self) -> tuple[int, int] | None:
        """The (slot, seq) of this stream's ``BatchReady`` at the front of the inbox, read
        from its first 12 bytes and its last 12 without decoding; ``None`` if something else
        is there."""
        inbox = self.conn.inbox
        if len(inbox) < _READY_BYTES or not inbox.startswith(self._ready):
            return None
        slot, seq = _SLOT_SEQ.unpack_from(inbox, 12)
        return slot, seq

    @property
    def batches_taken(self) -> int:
        """The epoch's batches taken so far, counting from batch 0 (a resumed stream starts
        at its ``start_batch``)."""
        return self._next_seq

    def release(self) -> None:
        """Hand the held slot back to the daemon for refilling."""
        if self.held is not None and not self._closed:
            self._hand_back()

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
