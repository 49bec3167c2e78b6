"""The decoding step of ``decode``/``read_audio``: ``audiodecode.load`` per row, in Ray
tasks (no Ray import here).

Tasks, not actors: decoding holds no model, so nothing is worth keeping between batches
but the connection ``load`` already caches per process. The daemon is the node's per-user
one, started on demand by the first task and shared by all of them (as by DDP ranks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audiodecode._errors import AudioFileError
from audiodecode.api import load


def decode_batch(
    batch: dict[str, np.ndarray], *, sr: int | None, mono: bool, **load_options: Any
) -> dict[str, np.ndarray]:
    """Adds ``audio`` (float32 ``[T]``, or ``[C, T]`` for every row when ``mono=False``,
    so the column has one number of dimensions), ``sample_rate``, ``duration`` (seconds)
    and ``error`` (null, or why the file could not be decoded; its audio is then empty)."""
    empty = np.zeros((0,) if mono else (0, 0), np.float32)
    audio, rates, durations, errors = [], [], [], []
    for path in batch["path"]:
        try:
            samples, rate = load(str(path), sr=sr, mono=mono, **load_options)
        except AudioFileError as e:
            audio.append(empty)
            rates.append(0)
            durations.append(0.0)
            errors.append(str(e))
            continue
        if not mono:
            samples = np.atleast_2d(samples)
        audio.append(samples)
        rates.append(rate)
        durations.append(samples.shape[-1] / rate)
        errors.append(None)
    column = np.empty(len(audio), dtype=object)
    column[:] = audio  # element-wise: np.array(audio) would stack equal-length rows
    return {
        **batch,
        "audio": column,
        "sample_rate": np.array(rates, dtype=np.int64),
        "duration": np.array(durations, dtype=np.float64),
        "error": np.array(errors, dtype=object),
    }
