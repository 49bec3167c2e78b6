"""``AudioDataLoader``: batches of decoded audio from the daemon's shared-memory ring."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import numpy as np

from audiodecode._batch import Batch, SlotBatches, text_labels, to_device
from audiodecode._client import Connection
from audiodecode._daemon import Daemon, active_daemon, connect
from audiodecode._datasets import PathLike, map_labels, resolve_dataset
from audiodecode._protocol import (
    CropMode,
    Dataset,
    Downmix,
    OnError,
    Quality,
    StreamSpec,
)
from audiodecode._stream import Stream
from audiodecode._torch import optional_torch
from audiodecode._validate import MAX_PREFETCH, U64_MAX, choice, integer, number, sample_rate
from audiodecode.augment import AugmentLike


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size): from an initialised ``torch.distributed``, else the ``RANK`` and
    ``WORLD_SIZE`` variables torchrun sets, else a single process."""
    torch = optional_torch()
    if torch is not None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class AudioDataLoader:
    """Iterate over batches decoded, resampled and cropped by the audiodecode daemon.

    ``files`` is a list of audio files, a JSONL/CSV manifest, a directory (labels from
    first-level subdirectories), or a sharded dataset: WebDataset tar shards in brace
    notation (``"shards-{000000..000127}.tar"``; ``label_field`` names the member, e.g.
    ``"cls"`` or ``"txt"``, or a key of the sample's ``.json``), a Lhotse Shar directory
    (``format="shar"``, or :meth:`from_shar`) or a NeMo tarred dataset (``format="nemo"``,
    or :meth:`from_nemo`). Paths may be URLs (``s3://``, ``gs://``,
    ``az://``, ``http(s)://``; credentials and endpoints from the usual ``AWS_*``,
    ``GOOGLE_*``, ``AZURE_*`` variables) or ``file:///`` URLs of local files. ``labels``
    (for a list of files) are integers or strings; strings become class ids in sorted
    order (``classes``, ``class_to_idx``). Labels that mix integers and names (in
    ``labels``, a manifest or ``.cls`` members) are refused: a name's id could be one an
    integer already means.
    Shards are read a few at a time in a seeded shard order, dealt to DDP ranks whole, with
    equal batch counts per rank.

    Each iteration is one epoch in a seeded order (``seed``, ``epoch``), this rank's shard
    under DDP. A completed epoch advances ``epoch``; ``set_epoch`` sets it. ``state_dict``/
    ``load_state_dict`` resume mid-epoch at the exact batch.

    By default a batch's audio is a zero-copy view of shared memory, valid until the next
    batch is requested; ``copy=True`` gives owned arrays, and ``device="cuda"`` moves each
    batch to the GPU asynchronously from the ring, registered as pinned memory (other
    devices get a plain ``.to(device)``; ``"cpu"`` is the same as no device).

    A damaged file is used (what decodes around the damage) and listed in ``damaged``;
    ``strict=True`` makes it a failure for ``on_error``. With ``mono``, ``downmix="itu"``
    weights channels as ITU-R BS.775 does instead of taking their mean.
    """

    def __init__(
        self,
        files: PathLike | Sequence[PathLike],
        labels: Sequence[int] | Sequence[str] | np.ndarray | None = None,
        batch_size: int = 32,
        target_sr: int = 16000,
        mono: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        max_seconds: float | None = None,
        crop: str = "random",
        pad_to_max: bool = False,
        drop_last: bool = False,
        device: str | None = None,
        copy: bool = False,
        on_error: str = "skip",
        quality: str = "hq",
        prefetch: int = 0,
        channels: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        daemon: Daemon | PathLike | None = None,
        *,
        label_field: str | None = None,
        cache: bool = True,
        max_batch_seconds: float | None = None,
        classes: Sequence[str] | None = None,
        augment: Sequence[AugmentLike] = (),
        transform: Callable[[Batch], Batch] | None = None,
        strict: bool = False,
        downmix: str = "mean",
        format: str = "auto",
    ) -> None:
        # Plain values first: nothing reaches the daemon before every argument is checked.
        batch_size = integer("batch_size", batch_size, 1)
        target_sr = sample_rate("target_sr", target_sr)
        seed = integer("seed", seed, 0, U64_MAX)
        prefetch = integer("prefetch", prefetch, 0, MAX_PREFETCH)
        if max_seconds is not None:
            max_seconds = number("max_seconds", max_seconds, above=0)
        if max_batch_seconds is not None:
            max_batch_seconds = number("max_batch_seconds", max_batch_seconds, above=0)
        if channels is not None:
            channels = integer("channels", channels, 1)
        if mono and channels not in (None, 1):
            raise ValueError(f"mono=True gives one channel, not channels={channels}")
        if pad_to_max and max_seconds is None:
            raise ValueError("pad_to_max needs max_seconds")
        if labels is not None and isinstance(files, (str, os.PathLike)):
            raise ValueError("labels can only be given with a list of files")
        crop_mode = choice("crop", crop, CropMode)
        on_error_mode = choice("on_error", on_error, OnError)
        quality_mode = choice("quality", quality, Quality)
        downmix_mode = choice("downmix", downmix, Downmix)
        if rank is None or world_size is None:
            auto_rank, auto_world = distributed_rank()
            rank = auto_rank if rank is None else rank
            world_size = auto_world if world_size is None else world_size
        world_size = integer("world_size", world_size, 1)
        rank = integer("rank", rank)
        if rank >= world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}: rank must be below it")

        self._dataset = resolve_dataset(files, label_field, dataset_format=format)
        if isinstance(self._dataset, Dataset.Files):
            ids, self._classes = map_labels(labels, len(self._dataset.paths))
            self._dataset = Dataset.Files(paths=self._dataset.paths, labels=ids)
        else:
            self._classes = []
        if classes is not None:
            # Names for integer labels, e.g. shared by the loaders of a train/val split.
            if self._classes:
                raise ValueError("classes= is for integer labels; string labels name themselves")
            self._classes = list(classes)
        self.torch = optional_torch()
        if device is not None and self.torch is None:
            raise ValueError(f"device={device!r} needs torch, which is not installed")
        # CUDA gets the pinned ring and asynchronous copies; other devices plain copies.
        self._cuda = device is not None and self.torch.device(device).type == "cuda"
        if self._cuda and not self.torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but torch sees no CUDA device")

        self.batch_size = batch_size
        self.target_sr = target_sr
        self.mono = mono
        # Without mono the daemon needs a channel count; stereo is the common case.
        self.channels = 1 if mono else (channels or 2)
        self.shuffle = shuffle
        self.seed = seed
        self.max_seconds = max_seconds
        self.crop = crop_mode
        self.pad_to_max = pad_to_max
        self.drop_last = drop_last
        self.device = device
        self.copy = copy
        self.on_error = on_error_mode
        self.quality = quality_mode
        # With mono, how channels are combined: the mean, or ITU-R BS.775 weights.
        self.downmix = downmix_mode
        self.prefetch = prefetch
        # Keep decoded audio in the daemon's memory so later epochs decode nothing.
        self.cache = cache
        # Duration bucketing: batches of similar-length clips holding at most this much
        # padded audio, instead of batch_size clips.
        self.max_batch_seconds = max_batch_seconds
        # Converted now so that a bad augmentation fails here, not at the first batch.
        self.augment = [a.to_wire() for a in augment]
        # The escape hatch: a Python callable applied to every batch before it is yielded.
        self.transform = transform
        # Damaged files are used (what decodes around the damage) and listed in `damaged`;
        # strict makes them failures, which `on_error` then skips or raises.
        self.strict = bool(strict)
        self.rank = rank
        self.world_size = world_size
        # Bound now: a loader made inside a ``Daemon`` block keeps using that daemon.
        self._daemon = daemon if daemon is not None else active_daemon()

        self.epoch = 0
        # Batches of ``epoch`` yielded so far, and where the next iteration starts when a
        # state dict was loaded (otherwise an iteration starts at the epoch's first batch).
        self._batches_done = 0
        self._resume: int | None = None
        self._active = False
        # The stream being iterated, which counts the batches taken.
        self._stream: Stream | None = None
        self._batches_per_epoch: int | None = None
        self._conn: Connection | None = None
        # A stream opened ahead of iteration (by len() or classes) and kept for it.
        self._pending: Stream | None = None
        self._server_classes: list[str] | None = None
        self.skipped: list[tuple[str, str]] = []
        # (path, what and where) of the files the last epoch used although damaged.
        self.damaged: list[tuple[str, str]] = []
        # Size of the shared-memory ring of the latest stream (for memory accounting).
        self.ring_bytes = 0

    @classmethod
    def from_manifest(cls, path: PathLike, label_field: str = "text", **kwargs: Any) -> Self:
        """A loader over a JSONL/CSV manifest; ``label_field`` names the label column
        (``text`` and other transcript fields give string labels, others class ids)."""
        return cls(path, label_field=label_field, **kwargs)

    # --- Labels. ----------------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        """Class names by id (from string labels, a manifest or directory names)."""
        if self._classes:
            return self._classes
        if self._server_classes is None:
            self._peek()
        return self._server_classes or []

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    # --- Epochs and resuming. ---------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (the shuffle order) of the next iteration. Setting the epoch
        that a loaded state dict points to keeps its resume position."""
        epoch = integer("epoch", epoch, 0, U64_MAX)
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches_done = 0
            self._resume = None

    def state_dict(self) -> dict[str, int]:
        """The position: batches of ``epoch`` yielded so far (also after leaving an
        iteration early). A finished epoch reads as the next epoch at batch 0."""
        if self._stream is not None:
            done = self._stream.batches_taken
        else:
            done = self._batches_done if self._resume is None else self._resume
        return {"epoch": self.epoch, "batches_done": done, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration start at the saved batch of the saved epoch."""
        # int() first: a state dict may hold numpy or torch scalars.
        self.seed = integer("seed", int(state["seed"]), 0, U64_MAX)
        self.epoch = integer("epoch", int(state["epoch"]), 0, U64_MAX)
        self._resume = integer("batches_done", int(state["batches_done"]), 0, U64_MAX)

    @classmethod
    def from_shar(cls, path: PathLike | Sequence[PathLike], **kwargs: Any) -> AudioDataLoader:
        """A Lhotse Shar dataset (``cuts.*.jsonl.gz`` + ``recording.*.tar``; a directory or
        an object prefix, or several): one item per cut, labelled by its supervisions' text,
        or by ``label_field``: a custom field or a supervision's (``"speaker"``)."""
        return cls(path, format="shar", **kwargs)

    @classmethod
    def from_nemo(
        cls,
        manifest: PathLike,
        tarred_audio_filepaths: PathLike | Sequence[PathLike],
        **kwargs: Any,
    ) -> AudioDataLoader:
        """A NeMo tarred dataset: its manifest and tars (``"audio_{0..127}.tar"``, NeMo's
        ``_OP_``/``_CL_`` spelling too)."""
        tars = (
            [tarred_audio_filepaths]
            if isinstance(tarred_audio_filepaths, (str, os.PathLike))
            else list(tarred_audio_filepaths)
        )
        return cls([manifest, *tars], format="nemo", **kwargs)

    # --- Iteration. -------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch for this rank (the daemon computes the sharding)."""
        if self._batches_per_epoch is None:
            self._peek()
        assert self._batches_per_epoch is not None
        return self._batches_per_epoch

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            if isinstance(self._daemon, Daemon):
                self._conn = self._daemon.connect()
            else:
                self._conn = connect(self._daemon)
        return self._conn

    def _spec(self) -> StreamSpec:
        return StreamSpec(
            dataset=self._dataset,
            sample_rate=self.target_sr,
            mono=self.mono,
            channels=self.channels,
            batch_size=self.batch_size,
            max_seconds=None if self.max_seconds is None else float(self.max_seconds),
            crop=self.crop,
            pad_to_max=self.pad_to_max,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            start_batch=self._resume or 0,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            on_error=self.on_error,
            quality=self.quality,
            prefetch=self.prefetch,
            cache=self.cache,
            max_batch_seconds=self.max_batch_seconds,
            augment=self.augment,
            strict=self.strict,
            downmix=self.downmix,
        )

    def _open(self) -> Stream:
        """The stream for the next iteration: the one opened ahead if it still matches."""
        spec = self._spec()
        pending, self._pending = self._pending, None
        if pending is not None:
            if pending.spec == spec:
                return pending
            pending.close()
        stream = Stream(self._connection(), spec)
        self._batches_per_epoch = stream.info.batches_per_epoch
        self._server_classes = stream.info.classes
        self.ring_bytes = stream.info.ring.total_bytes()
        return stream

    def _peek(self) -> None:
        """Open the next iteration's stream now, to learn its size and classes."""
        self._pending = self._open()

    def __iter__(self) -> Iterator[Batch]:
        if self._active:
            raise RuntimeError("this loader is already being iterated")
        stream = self._open()
        self._active, self._stream, self._resume = True, stream, None
        self.skipped, self.damaged = [], []
        batches = SlotBatches(
            stream.ring, stream.info, self.torch, texts=text_labels(stream.info), copy=self.copy
        )
        try:
            if self._cuda:
                stream.ring.pin()
            if self.device is None and not self.copy and self.transform is None:
                # The common case adds no step per batch (see Stream.batches).
                yield from stream.batches(batches.make)
            else:
                yield from self._adapted(stream, batches)
            self._stream = None
            self.skipped = [(s.path, s.message) for s in stream.skipped]
            self.damaged = [(s.path, s.message) for s in stream.damaged]
            self.epoch += 1
            self._batches_done = 0
        finally:
            if self._stream is not None:  # left early: keep the position for state_dict
                self._batches_done = stream.batches_taken
                self._stream = None
            self._active = False
            batches.close()
            stream.close()

    def _adapted(self, stream: Stream, batches: SlotBatches) -> Iterator[Batch]:
        """The batches moved to ``device``, copied out (the slot then goes back at once), or
        transformed, as the loader was asked."""
        torch, device, cuda, transform = self.torch, self.device, self._cuda, self.transform
        taken = stream.batches(batches.make)
        # On CUDA the copy out of the slot is asynchronous: this event says when it has
        # finished, and so when the slot may be handed back (by the next step of ``taken``).
        copied: Any = None
        try:
            while True:
                if copied is not None:
                    copied.synchronize()
                    copied = None
                batch = next(taken, None)
                if batch is None:
                    return
                if device is not None:
                    batch = to_device(batch, device, non_blocking=cuda)
                if self.copy:
                    stream.release()
                elif cuda:
                    copied = torch.cuda.Event()
                    copied.record()
                yield batch if transform is None else transform(batch)
        finally:
            if copied is not None:
                copied.synchronize()
            taken.close()

    def close(self) -> None:
        """Close the connection (the daemon frees this loader's streams)."""
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
