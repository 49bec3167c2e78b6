"""Datasets as the daemon sees them: file lists (with labels), manifests, directories."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audiodecode._protocol import AnyDataset, Dataset

PathLike = str | os.PathLike[str]
MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


def map_labels(
    labels: Sequence[int] | Sequence[str] | np.ndarray | None, n_files: int
) -> tuple[list[int] | None, list[str]]:
    """Integer labels as given, or string labels as class ids in sorted class order.
    Returns (ids, classes); classes is empty for integer labels."""
    if labels is None:
        return None, []
    values = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
    if len(values) != n_files:
        raise ValueError(f"{len(values)} labels for {n_files} files")
    if all(isinstance(v, str) for v in values):
        classes = sorted(set(values))
        index = {c: i for i, c in enumerate(classes)}
        return [index[v] for v in values], classes
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return [int(v) for v in values], []
    raise TypeError("labels must be all integers or all strings")


def resolve_dataset(files: PathLike | Sequence[PathLike], label_field: str | None) -> AnyDataset:
    """A list of files, a manifest (.jsonl/.json/.csv/.tsv) or a directory. Paths are made
    absolute: the daemon's working directory is not ours."""
    if isinstance(files, (str, os.PathLike)):
        path = Path(files)
        if path.is_dir():
            return Dataset.Directory(path=os.path.abspath(path))
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return Dataset.Manifest(path=os.path.abspath(path), label_field=label_field)
        raise ValueError(
            f"{path}: expected a directory, a manifest ({', '.join(MANIFEST_SUFFIXES)}) "
            "or a list of files"
        )
    return Dataset.Files(paths=[os.path.abspath(p) for p in files])
