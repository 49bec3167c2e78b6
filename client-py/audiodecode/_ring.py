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

from audiodecode._protocol import RING_MAGIC, SLOT_HEADER_BYTES, RingGeometry

_SLOT_HEADER = struct.Struct("<QQIIQI")


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
        return cls(*_SLOT_HEADER.unpack_from(raw))

    def to_bytes(self) -> bytes:
        packed = _SLOT_HEADER.pack(
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
            self._mmap = mmap.mmap(fd, geometry.total_bytes(), mmap.MAP_SHARED)
        finally:
            os.close(fd)
        if self._mmap[: len(RING_MAGIC)] != RING_MAGIC:
            self._mmap.close()
            raise ValueError(f"{path} is not an audiodecode ring (bad magic)")

    def header(self, slot: int) -> SlotHeader:
        self._check_slot(slot)
        off = self.geometry.slot_offset(slot)
        return SlotHeader.parse(self._mmap[off : off + SLOT_HEADER_BYTES])

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.geometry.slots:
            raise IndexError(f"slot {slot} outside a ring of {self.geometry.slots}")

    def _audio_shape(self, h: SlotHeader) -> tuple[int, ...]:
        if self.mono and h.channels == 1:
            return (h.batch, h.frames)
        return (h.batch, h.channels, h.frames)

    def _validate(self, h: SlotHeader) -> None:
        g = self.geometry
        if h.batch > g.batch_capacity or h.channels > g.channels or h.frames > g.max_frames:
            raise ValueError(
                f"slot header {h} exceeds the ring geometry "
                f"(B≤{g.batch_capacity}, C≤{g.channels}, T≤{g.max_frames})"
            )

    def read(self, slot: int) -> SlotArrays:
        """The slot's arrays; the audio is a zero-copy numpy view of the mapping.

        Wrap it with ``torch.from_numpy`` for a tensor: that shares the memory and keeps
        the numpy view (and so the mapping's buffer export) alive, whereas
        ``torch.frombuffer`` on the mmap itself would let the ring be unmapped under a
        live tensor.
        """
        h = self.header(slot)
        self._validate(h)
        g = self.geometry
        base = g.slot_offset(slot)

        def small(offset: int, dtype: str) -> np.ndarray:
            view = np.frombuffer(self._mmap, dtype=dtype, count=h.batch, offset=base + offset)
            return view.astype(np.int64)  # always a copy: these outlive the slot

        audio = np.frombuffer(
            self._mmap,
            dtype="<f4",
            count=h.batch * h.channels * h.frames,
            offset=base + g.audio_offset,
        ).reshape(self._audio_shape(h))
        return SlotArrays(
            header=h,
            lengths=small(g.lengths_offset, "<u4"),
            labels=small(g.labels_offset, "<i8"),
            indices=small(g.indices_offset, "<u8"),
            audio=audio,
        )

    def pin(self) -> None:
        """Register the whole mapping as page-locked host memory, once, so that
        ``tensor.to("cuda", non_blocking=True)`` is a real asynchronous DMA rather than a
        synchronous copy through a staging buffer."""
        if self._pinned_ptr is not None:
            return
        import torch

        ptr = np.frombuffer(self._mmap, dtype=np.uint8).ctypes.data
        err = torch.cuda.cudart().cudaHostRegister(ptr, self.geometry.total_bytes(), 0)
        if int(err) != 0:
            raise RuntimeError(f"cudaHostRegister failed on ring {self.name}: error {err}")
        self._pinned_ptr = ptr

    def close(self) -> None:
        if self._pinned_ptr is not None:
            import torch

            torch.cuda.cudart().cudaHostUnregister(self._pinned_ptr)
            self._pinned_ptr = None
        try:
            self._mmap.close()
        except BufferError:
            # A caller still holds a view of a batch (numpy or torch); the mapping is
            # released when that view is garbage collected.
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
