"""Datasets as the daemon sees them: file lists (with labels), manifests, directories."""

from __future__ import annotations

import os
from collections.abc import Sequence, Sized
from pathlib import Path

import numpy as np

from audiodecode._manifest import MANIFEST_SUFFIXES, check_manifest, has_audio
from audiodecode._paths import absolute, is_url, local_path, named
from audiodecode._protocol import AnyDataset, Dataset
from audiodecode._shards import holds_shards, shard_dataset

PathLike = str | os.PathLike[str]


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


def resolve_dataset(
    files: PathLike | Sequence[PathLike],
    label_field: str | None,
    name: str = "files",
    dataset_format: str = "auto",
) -> AnyDataset:
    """A list of files, a manifest (.jsonl/.json/.csv/.tsv), a directory, or a sharded
    dataset (see ``_shards``: a path ending in ``.tar`` is a WebDataset; ``dataset_format``
    names Shar and NeMo). Paths are made absolute: the daemon's working directory is not
    ours. One that gives no items raises ``ValueError`` naming ``name`` (the argument): an
    empty epoch would hide the mistake. URLs pass as written: a URL ending in ``/`` is a
    prefix (a directory) and one with a manifest's suffix a manifest, both read by the
    daemon."""
    files = (
        local_path(files)
        if isinstance(files, (str, os.PathLike))
        else [local_path(f) for f in files]
    )
    shards = shard_dataset(files, label_field, dataset_format, name)
    if shards is not None:
        return shards
    if isinstance(files, (str, os.PathLike)) and is_url(files):
        url = os.fspath(files)
        if named(url).endswith("/"):
            return Dataset.Directory(path=url)
        if Path(named(url)).suffix.lower() in MANIFEST_SUFFIXES:
            return Dataset.Manifest(path=url, label_field=label_field)
        raise ValueError(
            f"{url}: expected a prefix ending in '/', a manifest "
            f"({', '.join(MANIFEST_SUFFIXES)}) or a list of files"
        )
    if isinstance(files, (str, os.PathLike)):
        path = Path(files)
        if path.is_dir():
            if has_audio(path):
                return Dataset.Directory(path=os.path.abspath(path))
            if holds_shards(path):  # Note [Directories of shards]
                return Dataset.Shards(
                    format="webdataset", sources=[os.path.abspath(path)], label_field=label_field
                )
            raise ValueError(f"{name}: no audio files in the directory {path}")
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            check_manifest(path, name)
            return Dataset.Manifest(path=os.path.abspath(path), label_field=label_field)
        raise ValueError(
            f"{path}: expected a directory, a manifest ({', '.join(MANIFEST_SUFFIXES)}) "
            "or a list of files"
        )
    paths = [absolute(p) for p in files]
    require_files(paths, name)
    return Dataset.Files(paths=paths)


def require_files(files: Sized, name: str = "files") -> None:
    if len(files) == 0:
        raise ValueError(f"{name} is empty: a dataset needs at least one file")
