"""Deterministic train/validation splits, stratified by label."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from audiodecode._datasets import require_files
from audiodecode._validate import U64_MAX, integer, number
from audiodecode.loader import AudioDataLoader, PathLike, map_labels


def split_indices(
    labels: Sequence[int], val_split: float, stratify: bool, seed: int
) -> tuple[list[int], list[int]]:
    """(train, val) item indices. Stratified: each class contributes ``val_split`` of its
    items to validation (rounded, at least one when the class has two or more), so label
    proportions match in both parts. Same inputs, same split."""
    val_split = number("val_split", val_split, at_least=0, below=1)
    rng = np.random.default_rng(seed)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label if stratify else 0].append(i)
    val: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        order = rng.permutation(len(members))
        take = round(len(members) * val_split)
        if stratify and val_split > 0 and take == 0 and len(members) >= 2:
            take = 1
        val.extend(members[j] for j in order[:take])
    chosen = set(val)
    train = [i for i in range(len(labels)) if i not in chosen]
    return train, sorted(val)


def create_train_val_loaders(
    files: Sequence[PathLike],
    labels: Sequence[int] | Sequence[str] | np.ndarray,
    batch_size: int = 32,
    val_split: float = 0.2,
    stratify: bool = True,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[AudioDataLoader, AudioDataLoader]:
    """Two loaders on one daemon over a deterministic split of ``files``. String labels get
    class ids from the whole dataset, so both loaders agree on them. The validation loader
    never shuffles and crops from the start, so every evaluation sees the same audio."""
    # Checked before splitting: numpy's own errors would not name the argument.
    val_split = number("val_split", val_split, above=0, below=1)
    seed = integer("seed", seed, 0, U64_MAX)
    require_files(files)
    ids, classes = map_labels(labels, len(files))
    if ids is None:
        raise ValueError("create_train_val_loaders needs labels")
    train, val = split_indices(ids, val_split, stratify, seed)
    if not val:
        raise ValueError(f"val_split={val_split} leaves no validation items")

    def subset(indices: list[int], **overrides: Any) -> AudioDataLoader:
        options = {**kwargs, **overrides}
        return AudioDataLoader(
            [files[i] for i in indices],
            labels=[ids[i] for i in indices],
            batch_size=batch_size,
            seed=seed,
            classes=classes or None,
            **options,
        )

    return subset(train), subset(val, shuffle=False, crop="start")
