"""The batches a loader yields, built from a ring slot."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from audiodecode._protocol import StreamInfo
from audiodecode._ring import SlotArrays


@dataclass
class Batch:
    """One batch. ``audio`` is ``[B, T]`` for mono streams, else ``[B, C, T]``, zero padded
    to the longest item (or to ``max_seconds`` with ``pad_to_max``); ``lengths`` holds each
    item's real length in frames. Arrays are torch tensors when torch is importable, else
    numpy.

    Unless the loader was made with ``copy=True`` or a GPU ``device``, ``audio`` is a view of
    shared memory that the daemon refills once the next batch is requested: keep it longer
    only as a copy (``audio.clone()``). ``lengths``, ``labels`` and ``indices`` are always
    owned.
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


def make_batch(
    arrays: SlotArrays,
    info: StreamInfo,
    torch: ModuleType | None,
    *,
    copy: bool,
    device: str | None,
    texts: bool,
    non_blocking: bool = False,
) -> Batch:
    """A batch from a slot, moved to ``device`` (needs torch) if given. ``non_blocking``
    is for a pinned ring and a CUDA device: the copy is then asynchronous, and the caller
    keeps the slot until it has completed."""
    items = [info.items[i] for i in arrays.indices]
    labels: Any = [item.text or "" for item in items] if texts else arrays.labels
    audio: Any = np.array(arrays.audio) if copy else arrays.audio
    lengths: Any = arrays.lengths
    indices: Any = arrays.indices
    if torch is not None:
        audio = torch.from_numpy(audio)
        lengths, indices = torch.from_numpy(lengths), torch.from_numpy(indices)
        if not texts:
            labels = torch.from_numpy(labels)
        if device is not None:
            audio = audio.to(device, non_blocking=non_blocking)
            lengths = lengths.to(device, non_blocking=non_blocking)
            if not texts:
                labels = labels.to(device, non_blocking=non_blocking)
    return Batch(
        audio=audio,
        lengths=lengths,
        labels=labels,
        paths=[item.path for item in items],
        indices=indices,
        sample_rate=arrays.header.sample_rate,
    )
