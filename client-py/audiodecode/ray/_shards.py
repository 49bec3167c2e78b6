"""``read_audio`` over sharded datasets: one Ray read task per shard (a WebDataset tar, a
Lhotse Shar ``cuts``/``recording`` pair, a NeMo tar read with its tarred manifest), each
reading its shard through its node's daemon in order (``AudioDataLoader``), so shards
stream from disk or object storage to the workers and nothing passes through the driver
but their names."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from audiodecode._paths import absolute, is_url

SHARD_FORMATS = ("webdataset", "shar", "nemo")
_RANGE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` → three names, ``{x,y}`` lists, several braces multiplied (the
    first varies slowest), as the daemon expands them (``feed/webdataset.rs``)."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    if ".." in body:
        first, last = (part.strip() for part in body.split("..", 1))
        if not (first.isdigit() and last.isdigit()) or int(last) < int(first):
            raise ValueError(f"{pattern}: a range needs whole numbers, in order")
        width = len(first) if first.startswith("0") else 0
        choices = [f"{n:0{width}d}" for n in range(int(first), int(last) + 1)]
    else:
        choices = body.split(",")
    rests = expand_braces(tail)
    return [head + choice + rest for choice in choices for rest in rests]


def nemo_tars(sources: list[str]) -> tuple[str, list[str]]:
    """A NeMo tarred dataset's (manifest, tars): the manifest first, then tar paths or
    patterns (NeMo's ``_OP_``/``_CL_`` for braces), expanded. Each tar is read with the
    whole manifest; the daemon keeps the lines whose ``shard_id`` is the number in the
    tar's name (``audio_3.tar``), as NeMo names them (``feed/nemo.rs``)."""
    if len(sources) < 2 or not sources[0].endswith((".json", ".jsonl")):
        raise ValueError("a NeMo tarred dataset is (manifest.json, tar paths or patterns...)")
    tars: list[str] = []
    for pattern in sources[1:]:
        tars += expand_braces(pattern.replace("_OP_", "{").replace("_CL_", "}"))
    return sources[0], tars


def shard_units(sources: Iterable[str | os.PathLike[str]], fmt: str) -> list[str]:
    """The shards ``sources`` name, one read task each: WebDataset tars (patterns
    expanded), Shar ``cuts.*.jsonl(.gz)`` files (a local Shar directory is listed; a
    remote one must be given as its cuts files' URLs), or a NeMo dataset's tars."""
    if fmt not in SHARD_FORMATS:
        raise ValueError(f"format must be one of {', '.join(SHARD_FORMATS)}, not {fmt!r}")
    if fmt == "nemo":
        return nemo_tars([absolute(s) for s in sources])[1]
    units: list[str] = []
    for source in sources:
        text = absolute(source)
        if fmt == "webdataset":
            units += expand_braces(text)
        elif os.path.basename(text).startswith("cuts."):
            units.append(text)
        elif is_url(text):
            raise ValueError(
                f"{text}: give a remote Shar dataset as the URLs of its cuts.*.jsonl.gz files"
            )
        else:
            found = sorted(glob.glob(os.path.join(text, "cuts.*.jsonl*")))
            if not found:
                raise ValueError(f"{text}: no cuts.*.jsonl(.gz): not a Lhotse Shar directory")
            units += found
    if not units:
        raise ValueError("no shards given")
    return units


def read_shards(
    batch: dict[str, np.ndarray],
    *,
    fmt: str,
    sr: int,
    mono: bool,
    label_field: str | None,
    rows_per_read: int,
    nemo_manifest: str | None = None,
) -> dict[str, np.ndarray]:
    """Every sample of each shard in ``batch["shard"]``, in shard order: ``shard``,
    ``path`` (``SHARD#MEMBER``), ``audio`` (float32 ``[T]``, or ``[C, T]``),
    ``sample_rate``, ``duration``, ``label`` (-1 for none), ``text`` and ``error`` (a
    sample that cannot be read is a row with its reason and empty audio)."""
    from audiodecode.loader import AudioDataLoader

    rows: dict[str, list[Any]] = {
        k: []
        for k in ("shard", "path", "audio", "sample_rate", "duration", "label", "text", "error")
    }

    def add(shard: str, path: str, audio: np.ndarray, label: Any, error: str | None) -> None:
        rows["shard"].append(shard)
        rows["path"].append(path)
        rows["audio"].append(audio)
        rows["sample_rate"].append(sr if error is None else 0)
        rows["duration"].append(audio.shape[-1] / sr)
        is_text = isinstance(label, str)
        rows["label"].append(-1 if is_text else int(label))
        rows["text"].append(label if is_text else None)
        rows["error"].append(error)

    empty = np.zeros((0,) if mono else (0, 0), np.float32)
    for shard in batch["shard"]:
        # A NeMo tar is read with its manifest, whose lines of other shards are left out.
        source = [nemo_manifest, str(shard)] if fmt == "nemo" else str(shard)
        loader = AudioDataLoader(
            source,
            format=fmt,
            batch_size=rows_per_read,
            target_sr=sr,
            mono=mono,
            shuffle=False,
            on_error="skip",
            copy=True,
            label_field=label_field,
            rank=0,
            world_size=1,
        )
        for b in loader:
            audio = np.asarray(b.audio)
            for k, path in enumerate(b.paths):
                length = int(b.lengths[k])
                add(str(shard), path, audio[k][..., :length].copy(), b.labels[k], None)
        for path, message in loader.skipped:
            add(str(shard), path, empty, -1, message)
    column = np.empty(len(rows["audio"]), dtype=object)
    column[:] = rows["audio"]
    return {
        "shard": np.array(rows["shard"], dtype=object),
        "path": np.array(rows["path"], dtype=object),
        "audio": column,
        "sample_rate": np.array(rows["sample_rate"], dtype=np.int64),
        "duration": np.array(rows["duration"], dtype=np.float64),
        "label": np.array(rows["label"], dtype=np.int64),
        "text": np.array(rows["text"], dtype=object),
        "error": np.array(rows["error"], dtype=object),
    }
