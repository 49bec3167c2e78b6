"""The batches a loader yields, and how they are made from ring slots."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import Any

import numpy as np

from audiodecode._protocol import StreamInfo
from audiodecode._ring import SLOT_HEADER_STRUCT, Ring

# Only batch, channels and frames: what picks the audio view.
_SHAPE = struct.Struct("<16xIIQ")


@dataclass
class Batch:
    """One batch. ``audio`` is ``[B, T]`` for mono streams, else ``[B, C, T]``, zero padded
    to the longest item (or to ``max_seconds`` with ``pad_to_max``); ``lengths`` holds each
    item's real length in frames. Arrays are torch tensors when torch is importable, else
    numpy.

    Unless the loader was made with ``copy=True`` or a GPU ``device``, ``audio`` is a view of
    shared memory that the daemon refills once the next batch is requested: keep it longer
    only as a copy (``audio.clone()``). ``lengths``, ``labels``, ``indices`` and ``paths``
    are always owned (the loader decodes them on first access, from a copy taken when the
    batch was fetched).
    """

    audio: Any
    lengths: Any
    # Class ids (int64, -1 for none), or transcripts when the dataset's labels are text.
    labels: Any
    paths: list[str]
    indices: Any
    sample_rate: int

    def __len__(self) -> int:
        return len(self.paths)


def text_labels(info: StreamInfo) -> bool:
    """Whether a stream's labels are transcripts: items carry text, no item has a class id
    (the daemon uses -1 for none) and the dataset defines no classes."""
    return (
        not info.classes
        and any(item.text is not None for item in info.items)
        and all(item.label == -1 for item in info.items)
    )


class _Layout:
    """What a ``RingBatch`` needs to decode its per-item fields, shared by a stream's
    batches."""

    def __init__(self, ring: Ring, info: StreamInfo, torch: ModuleType | None, texts: bool):
        g = ring.geometry
        self.lengths_offset = g.lengths_offset
        self.labels_offset = g.labels_offset
        self.indices_offset = g.indices_offset
        self.items = info.items
        self.texts = texts
        self.torch = torch

    def ints(self, meta: bytearray, count: int, offset: int, wide: bool) -> Any:
        """``count`` int64 values from a batch's own copy of its slot: sharing that copy
        where the ring stores 8 bytes a value, widened from the 4-byte lengths. One or two
        calls, as each costs ~25 us right after a training step."""
        torch = self.torch
        if torch is None:
            values = np.frombuffer(meta, "<i8" if wide else "<u4", count, offset)
            return values if wide else values.astype(np.int64)
        if count == 0:  # torch.frombuffer refuses an empty range
            return torch.zeros(0, dtype=torch.int64)
        if wide:
            return torch.frombuffer(meta, dtype=torch.int64, count=count, offset=offset)
        # Lengths fit in 31 bits: an item that long would not fit a ring.
        return torch.frombuffer(meta, dtype=torch.int32, count=count, offset=offset).long()


class RingBatch(Batch):
    """A batch straight from a ring slot. ``audio`` is set when it is made; the other
    fields are decoded on first access from ``_meta``, an owned copy of the slot's header
    and per-item arrays taken while the slot was held. So they stay valid after the slot is
    handed back, and fetching a batch costs only the fields the training loop reads."""

    _meta: bytearray
    _layout: _Layout

    def __len__(self) -> int:
        try:
            return self._count
        except AttributeError:  # made by dataclasses.replace: every field is set
            return len(self.paths)

    @cached_property
    def _count(self) -> int:
        return int(SLOT_HEADER_STRUCT.unpack_from(self._meta)[2])

    @cached_property
    def sample_rate(self) -> int:  # type: ignore[override]
        return int(SLOT_HEADER_STRUCT.unpack_from(self._meta)[5])

    @cached_property
    def lengths(self) -> Any:  # type: ignore[override]
        layout = self._layout
        return layout.ints(self._meta, self._count, layout.lengths_offset, wide=False)

    @cached_property
    def indices(self) -> Any:  # type: ignore[override]
        layout = self._layout
        return layout.ints(self._meta, self._count, layout.indices_offset, wide=True)

    @cached_property
    def labels(self) -> Any:  # type: ignore[override]
        layout = self._layout
        if layout.texts:
            return [layout.items[i].text or "" for i in self._item_indices()]
        return layout.ints(self._meta, self._count, layout.labels_offset, wide=True)

    @cached_property
    def paths(self) -> list[str]:  # type: ignore[override]
        items = self._layout.items
        return [items[i].path for i in self._item_indices()]

    def _item_indices(self) -> list[int]:
        layout = self._layout
        return np.frombuffer(self._meta, "<u8", self._count, layout.indices_offset).tolist()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles (and deep-copies) as a plain Batch: the layout holds the torch module.
        return (Batch, self._fields())

    def _fields(self) -> tuple[Any, ...]:
        return (self.audio, self.lengths, self.labels, self.paths, self.indices, self.sample_rate)


_new = object.__new__


class SlotBatches:
    """Makes batches from one stream's ring slots with little per-batch work: each slot's
    audio tensor is created once, and its ``[B, (C,) T]`` view is kept while B, C and T
    repeat (they usually do), so a batch costs one copy of the slot's header and per-item
    arrays and one object. ``copy`` gives owned audio instead of the view."""

    def __init__(
        self, ring: Ring, info: StreamInfo, torch: ModuleType | None, *, texts: bool, copy: bool
    ) -> None:
        assert ring.audio_slots is not None, "ring is closed"
        self._ring = ring
        # Each slot's header and per-item arrays; a batch takes a bytearray copy (writable,
        # so torch can share it without a warning).
        self._metas: list[memoryview] = [
            memoryview(ring.mapping)[base : base + ring.meta_bytes] for base in ring.slot_bases
        ]
        self._layout = _Layout(ring, info, torch, texts)
        self._copy = copy
        self._flat: list[Any] = (
            list(ring.audio_slots)
            if torch is None
            else [torch.from_numpy(a) for a in ring.audio_slots]
        )
        self._keys: list[tuple[int, int, int] | None] = [None] * len(self._flat)
        self._views: list[Any] = [None] * len(self._flat)
        # A slot's first batch would otherwise pay a page fault on its header and the making
        # of its view: do both now, for the full shape (every batch when items are cropped
        # or padded to max_seconds).
        g = ring.geometry
        for slot, base in enumerate(ring.slot_bases):
            for offset in range(0, ring.meta_bytes, mmap.PAGESIZE):
                ring.mapping[base + offset]
            self._view(slot, g.batch_capacity, g.channels, g.max_frames)

    def make(self, slot: int) -> RingBatch:
        meta = bytearray(self._metas[slot])
        b, c, t = _SHAPE.unpack_from(meta)
        if self._keys[slot] == (b, c, t):
            audio = self._views[slot]
        else:
            audio = self._view(slot, b, c, t)
        if self._copy:
            audio = audio.copy() if self._layout.torch is None else audio.clone()
        batch: RingBatch = _new(RingBatch)
        batch.audio = audio
        batch._meta = meta
        batch._layout = self._layout
        return batch

    def _view(self, slot: int, b: int, c: int, t: int) -> Any:
        ring = self._ring
        ring.check(b, c, t)
        shape = ring.audio_shape(b, c, t)
        flat = self._flat[slot]
        if self._layout.torch is None:
            view = flat[: b * c * t].reshape(shape)
        else:
            # One op (slicing and reshaping a tensor takes two, each costly when cold).
            strides = (c * t, 1) if len(shape) == 2 else (c * t, t, 1)
            view = flat.as_strided(shape, strides)
        self._views[slot] = view
        self._keys[slot] = (b, c, t)
        return view

    def close(self) -> None:
        """Drop the views, so that the ring can be unmapped."""
        for meta in self._metas:
            meta.release()
        self._flat, self._views, self._metas = [], [], []


def to_device(batch: Batch, device: str, non_blocking: bool) -> Batch:
    """The batch moved to ``device`` (torch tensors). ``non_blocking`` is for a pinned ring
    and a CUDA device: the copy is then asynchronous, and the caller keeps the slot until it
    has completed."""
    texts = isinstance(batch.labels, list)
    return Batch(
        audio=batch.audio.to(device, non_blocking=non_blocking),
        lengths=batch.lengths.to(device, non_blocking=non_blocking),
        labels=batch.labels if texts else batch.labels.to(device, non_blocking=non_blocking),
        paths=batch.paths,
        indices=batch.indices,
        sample_rate=batch.sample_rate,
    )
