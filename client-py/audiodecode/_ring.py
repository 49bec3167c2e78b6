"""Mapping a stream's shared-memory batch ring and viewing its slots without copying.

Layout (``protocol/src/ring.rs``, ``protocol/README.md``): a 4096-byte ring header, then
``slots`` slots of ``slot_bytes`` each. A slot starts with a 64-byte header, then
``lengths`` (u32), ``labels`` (i64) and ``indices`` (u64), each ``batch_capacity`` long,
then float32 audio ``[B, C, T]`` at ``audio_offset`` using the batch's own B and T.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Self

import numpy as np

from audiodecode._protocol import RING_HEADER_BYTES, RING_MAGIC, SLOT_HEADER_BYTES, RingGeometry

# seq, epoch, batch, channels, frames, sample_rate: the slot header's first 36 bytes.
SLOT_HEADER_STRUCT = struct.Struct("<QQIIQI")


@dataclass(frozen=True)
class SlotHeader:
    """The fixed header at the start of every slot (byte offsets 0, 8, 16, 20, 24, 32)."""

    seq: int
    epoch: int
    batch: int
    channels: int
    frames: int
    sample_rate: int

    @classmethod
    def parse(cls, raw: bytes | memoryview) -> SlotHeader:
        return cls(*SLOT_HEADER_STRUCT.unpack_from(raw))

    def to_bytes(self) -> bytes:
        packed = SLOT_HEADER_STRUCT.pack(
            self.seq,
            self.epoch,
            self.batch,
            self.channels,
            self.frames,
            self.sample_rate,
        )
        return packed.ljust(SLOT_HEADER_BYTES, b"\0")


@dataclass(frozen=True)
class SlotArrays:
    """One slot's contents. ``audio`` is a view into the ring (valid while the slot is
    held); the small per-item arrays are copies, so they outlive the slot."""

    header: SlotHeader
    lengths: np.ndarray  # int64 [B]
    labels: np.ndarray  # int64 [B]
    indices: np.ndarray  # int64 [B]
    audio: np.ndarray  # float32 [B, T] or [B, C, T], a view of the ring


def shm_path(shm_name: str) -> str:
    """The file behind a POSIX shared-memory name (``/name`` → ``/dev/shm/name``)."""
    return os.path.join("/dev/shm", shm_name.lstrip("/"))


class Ring:
    """A mapped ring. ``mono`` says whether the stream asked for mono audio, in which case
    single-channel slots are shaped ``[B, T]`` rather than ``[B, 1, T]``."""

    def __init__(self, shm_name: str, geometry: RingGeometry, mono: bool) -> None:
        self.name = shm_name
        self.geometry = geometry
        self.mono = mono
        self._pinned_ptr: int | None = None
        path = shm_path(shm_name)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < geometry.total_bytes():
                raise ValueError(
                    f"{path}: {size} bytes, but the ring geometry needs {geometry.total_bytes()}"
                )
            # Read-write because torch refuses to wrap read-only memory; we never write.
            # Public: ``SlotBatches`` views each slot's header and arrays in it.
            self.mapping = mmap.mmap(fd, geometry.total_bytes(), mmap.MAP_SHARED)
        finally:
            os.close(fd)
        if self.mapping[: len(RING_MAGIC)] != RING_MAGIC:
            self.mapping.close()
            raise ValueError(f"{path} is not an audiodecode ring (bad magic)")
        g = geometry
        self.slot_bases = [g.slot_offset(k) for k in range(g.slots)]
        # Bytes from a slot's start to the end of its per-item arrays: the header and
        # everything but the audio, copied out in one piece per batch.
        self.meta_bytes = g.indices_offset + 8 * g.batch_capacity
        # Each slot's audio region at full capacity, viewed once: a batch's audio is a
        # reshaped prefix of one of these, so fetching it creates no buffer export.
        capacity = g.batch_capacity * g.channels * g.max_frames
        self.audio_slots: list[np.ndarray] | None = [
            np.frombuffer(self.mapping, "<f4", capacity, base + g.audio_offset)
            for base in self.slot_bases
        ]
        # The header's hand-off words as native u64s, indexed by byte offset // 8 (only used
        # where native is little-endian x86-64; see ``Stream``).
        header = memoryview(self.mapping)[:RING_HEADER_BYTES]
        self.words = header.cast("Q")
        header.release()

    def header(self, slot: int) -> SlotHeader:
        self._check_slot(slot)
        off = self.slot_bases[slot]
        return SlotHeader.parse(self.mapping[off : off + SLOT_HEADER_BYTES])

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.geometry.slots:
            raise IndexError(f"slot {slot} outside a ring of {self.geometry.slots}")

    def audio_shape(self, batch: int, channels: int, frames: int) -> tuple[int, ...]:
        if self.mono and channels == 1:
            return (batch, frames)
        return (batch, channels, frames)

    def check(self, batch: int, channels: int, frames: int) -> None:
        """Refuse a slot header that does not fit the ring (a corrupt or foreign slot)."""
        g = self.geometry
        if batch > g.batch_capacity or channels > g.channels or frames > g.max_frames:
            raise ValueError(
                f"slot header (B={batch}, C={channels}, T={frames}) exceeds the ring geometry "
                f"(B≤{g.batch_capacity}, C≤{g.channels}, T≤{g.max_frames})"
            )

    def read(self, slot: int) -> SlotArrays:
        """The slot's arrays; the audio is a zero-copy numpy view of the mapping. (The plain
        decoding of a slot, for tests and inspection; the loader uses ``SlotBatches``.)

        Wrap it with ``torch.from_numpy`` for a tensor: that shares the memory and keeps
        the numpy view (and so the mapping's buffer export) alive, whereas
        ``torch.frombuffer`` on the mmap itself would let the ring be unmapped under a
        live tensor.
        """
        self._check_slot(slot)
        base = self.slot_bases[slot]
        meta = self.mapping[base : base + self.meta_bytes]
        h = SlotHeader.parse(meta)
        self.check(h.batch, h.channels, h.frames)
        g = self.geometry

        def small(offset: int, dtype: str) -> np.ndarray:
            # A copy out of ``meta``: these outlive the slot.
            return np.frombuffer(meta, dtype, h.batch, offset).astype(np.int64)

        assert self.audio_slots is not None, "ring is closed"
        audio = self.audio_slots[slot][: h.batch * h.channels * h.frames]
        return SlotArrays(
            header=h,
            lengths=small(g.lengths_offset, "<u4"),
            labels=small(g.labels_offset, "<i8"),
            indices=small(g.indices_offset, "<u8"),
            audio=audio.reshape(self.audio_shape(h.batch, h.channels, h.frames)),
        )

    def pin(self) -> None:
        """Register the whole mapping as page-locked host memory, once, so that
        ``tensor.to("cuda", non_blocking=True)`` is a real asynchronous DMA rather than a
        synchronous copy through a staging buffer."""
        if self._pinned_ptr is not None:
            return
        import torch

        ptr = np.frombuffer(self.mapping, dtype=np.uint8).ctypes.data
        err = torch.cuda.cudart().cudaHostRegister(ptr, self.geometry.total_bytes(), 0)
        if int(err) != 0:
            raise RuntimeError(f"cudaHostRegister failed on ring {self.name}: error {err}")
        self._pinned_ptr = ptr

    def close(self) -> None:
        if self._pinned_ptr is not None:
            import torch

            torch.cuda.cudart().cudaHostUnregister(self._pinned_ptr)
            self._pinned_ptr = None
        # Our own views hold the mapping's buffer export; drop them so it can be unmapped.
        self.audio_slots = None
        self.words.release()
        try:
            self.mapping.close()
        except BufferError:
            # A caller still holds a view of a batch (numpy or torch); the mapping is
            # released when that view is garbage collected.
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
