"""Sharded datasets as the daemon reads them (``Dataset.Shards``): WebDataset tar shards,
Lhotse Shar directories, NeMo tarred manifests with their tars — local paths or URLs."""

from __future__ import annotations

import os
from collections.abc import Sequence

from audiodecode._paths import absolute, is_url, named, walk_visible
from audiodecode._protocol import Dataset

PathLike = str | os.PathLike[str]

# "auto": paths ending in ``.tar`` (or ``.tar.gz``/``.tgz``; braces allowed) are a
# WebDataset; other inputs are files, manifests or directories.
DATASET_FORMATS = ("auto", "webdataset", "shar", "nemo")


def sources_of(files: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(files, (str, os.PathLike)):
        return [absolute(files)]
    return [absolute(f) for f in files]


# Tar shard names: plain, and gzip-compressed (inflated whole by the daemon, Note
# [Compressed shards]). WebDataset reads the other compressions too; the daemon does not.
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
UNREAD_COMPRESSIONS = (".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst")


def shard_dataset(
    files: PathLike | Sequence[PathLike], label_field: str | None, dataset_format: str, name: str
) -> Dataset.Shards | None:
    """The sharded dataset ``files`` names in ``dataset_format``, or ``None`` when it is not
    one (``"auto"`` and no ``.tar``). A signed URL's query is not part of its name."""
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(
            f"format must be one of {', '.join(DATASET_FORMATS)}, not {dataset_format!r}"
        )
    sources = sources_of(files)
    names = [named(s) for s in sources]
    unread = [s for s, n in zip(sources, names) if n.lower().endswith(UNREAD_COMPRESSIONS)]
    if unread and dataset_format in ("auto", "webdataset"):
        raise ValueError(
            f"{name}: {unread[0]}: only plain and gzip-compressed tar shards are read "
            "(.tar, .tar.gz, .tgz); decompress these (audio members are compressed already) "
            "or repack them with `audiodecode shard`"
        )
    if dataset_format == "auto":
        tars = [n.lower().endswith(TAR_SUFFIXES) for n in names]
        if tars and all(tars):
            dataset_format = "webdataset"
        elif any(tars):
            # A tar among audio files would be decoded as one clip (its first member).
            raise ValueError(
                f"{name}: {sources[tars.index(True)]} is a tar shard among other files; "
                "give the shards alone (format='webdataset') or the files alone"
            )
        else:
            return None
    if not sources:
        raise ValueError(f"{name} is empty: a dataset needs at least one source")
    if dataset_format == "webdataset" and not all(
        n.lower().endswith(TAR_SUFFIXES) or is_directory(n) for n in names
    ):
        raise ValueError(
            f"{name}: WebDataset shards are named by paths or patterns ending in .tar, "
            ".tar.gz or .tgz, or by a directory (a prefix ending in '/') that holds them"
        )
    if dataset_format == "nemo" and (
        len(sources) < 2 or not names[0].endswith((".json", ".jsonl"))
    ):
        raise ValueError(
            f"{name}: a NeMo tarred dataset is (manifest.json, tar paths or patterns...)"
        )
    return Dataset.Shards(format=dataset_format, sources=sources, label_field=label_field)


def is_directory(source: str) -> bool:
    """A WebDataset source that is a directory of shards: a prefix URL ending in ``/`` or a
    local directory (Note [Directories of shards])."""
    return source.endswith("/") if is_url(source) else os.path.isdir(source)


def holds_shards(root: str | os.PathLike[str]) -> bool:
    """Whether the tree under ``root`` holds a tar shard (an index sidecar's directory
    aside), so a directory without audio files is read as their WebDataset."""
    for _, names in walk_visible(root):  # the index sidecars' directory is hidden too
        if any(n.lower().endswith(TAR_SUFFIXES) for n in names):
            return True
    return False
