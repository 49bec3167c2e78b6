"""Early checks that a manifest or directory gives the daemon at least one item.

They follow the daemon's reading (``daemon/src/feed/manifest.rs``) but stop at the first
usable row or audio file, so a large dataset costs one short read here.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from audiodecode._paths import walk_visible

T = TypeVar("T")

MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
# The fields (JSONL) or columns (CSV/TSV) the daemon takes the audio path from.
PATH_FIELDS = ("audio_filepath", "path", "audio", "file")
# The daemon's AUDIO_EXTENSIONS (daemon/src/decode/mod.rs): the files it picks up when
# scanning a directory.
AUDIO_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "m4b", "aac", "aif"}
    | {"aiff", "aifc", "caf", "mkv", "mka", "webm", "sph", "nist", "w64", "rf64", "bw64"}
    | {"au", "snd", "wv", "wma", "asf", "ape", "tta", "mpc", "spx", "amr", "awb", "3gp"}
    | {"3g2", "ac3", "eac3", "mp2", "mp1", "mpa", "m4r", "gsm", "voc", "dsf", "mov", "avi"}
    | {"mpg", "mpeg", "m4v", "flv", "wmv", "bwf", "weba", "3ga"}
)


def has_audio(root: Path) -> bool:
    """Whether the tree under ``root`` holds a file the daemon would load (symlinked
    directories are not followed and hidden names are skipped, as in the daemon)."""
    for _, names in walk_visible(root):
        if any(os.path.splitext(n)[1][1:].lower() in AUDIO_EXTENSIONS for n in names):
            return True
    return False


def read_manifest_with(
    path: str | os.PathLike[str],
    csv_reader: Callable[[TextIO, str], T],
    jsonl_reader: Callable[[TextIO], T],
) -> T:
    """Open a manifest and hand it to the reader of its kind: CSV/TSV (with the
    delimiter) or JSONL (any other suffix)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        if suffix in (".csv", ".tsv"):
            return csv_reader(f, "\t" if suffix == ".tsv" else ",")
        return jsonl_reader(f)


def check_manifest(path: Path, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the manifest unless it names the audio
    path and has a row (a missing manifest raises ``FileNotFoundError``)."""
    fields = ", ".join(PATH_FIELDS)
    problem = read_manifest_with(
        path,
        lambda f, delimiter: _csv_problem(f, delimiter, fields),
        lambda f: _jsonl_problem(f, fields),
    )
    if problem:
        raise ValueError(f"{name}: manifest {path}: {problem}")


def _csv_problem(lines: Iterable[str], delimiter: str, fields: str) -> str | None:
    rows = (r for r in csv.reader(lines, delimiter=delimiter) if any(c.strip() for c in r))
    try:
        header = next(rows, None)
        if header is None:
            return "empty (expected a header and rows)"
        if not any(h.strip() in PATH_FIELDS for h in header):
            return f"no path column (one of {fields}) in the header {header}"
        if next(rows, None) is None:
            return "a header but no rows"
    except csv.Error as e:
        return f"unreadable CSV ({e})"
    return None


def jsonl_records(lines: Iterable[str]) -> Iterator[tuple[int, Any, ValueError | None]]:
    """(line number, record, parse error) of each non-blank JSONL line."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line), None
        except ValueError as e:
            yield n, None, e


def path_field(record: Any) -> str | None:
    """The audio path a manifest record names (the first of ``PATH_FIELDS``), if any."""
    if not isinstance(record, dict):
        return None
    return next((record[k] for k in PATH_FIELDS if isinstance(record.get(k), str)), None)


def _jsonl_problem(lines: Iterable[str], fields: str) -> str | None:
    for n, record, error in jsonl_records(lines):
        if error is not None:
            return f"line {n}: invalid JSON ({error})"
        if path_field(record) is None:
            return f"line {n}: no path field (one of {fields})"
        # Labeling manifests keep files that failed, with "error"; the daemon skips them.
        if record.get("error") is None:
            return None
    return "no rows"
