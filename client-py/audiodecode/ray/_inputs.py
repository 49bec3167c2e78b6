"""Inputs as ``audiodecode label`` reads them (files, directories, manifests) and the
paths a resumed run finds done in its output. No Ray here: the driver does this before
any task starts, so usage errors come before a cluster is touched.

The rules mirror ``daemon/src/cli/label.rs`` and ``daemon/src/feed/manifest.rs``: a row's
``audio_filepath`` must be the input as the CLI expands it (relative to the working
directory), since ``_label_paths`` turns that into the string the CLI would write, and
``--resume`` would not recognise lines written by the other tool otherwise.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from audiodecode._manifest import (
    AUDIO_EXTENSIONS,
    PATH_FIELDS,
    jsonl_records,
    path_field,
    read_manifest_with,
)
from audiodecode._paths import is_url, walk_visible

# ``audiodecode label`` reads these inputs as manifests (a .tsv input is an audio file to
# it; ``read_audio`` takes TSV manifests too).
LABEL_MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv")

PathLike = str | os.PathLike[str]


def expand_inputs(
    inputs: Iterable[PathLike], manifests: Sequence[str] = LABEL_MANIFEST_SUFFIXES
) -> list[str]:
    """Files, directories (searched recursively, sorted) and manifests (files ending in
    one of ``manifests``) as one list of paths, each once, in input order. A missing file
    stays in the list: it becomes an error row, not a refusal to start."""
    files: list[str] = []
    seen: set[str] = set()
    for given in inputs:
        text = os.fspath(given)
        if os.path.isdir(text):
            paths = scan_directory(text)
        elif os.path.splitext(text)[1].lower() in manifests:
            paths = manifest_paths(text)
        else:
            paths = [text]
        for path in paths:
            if path not in seen:
                seen.add(path)
                files.append(path)
    return files


def scan_directory(root: str) -> list[str]:
    """Audio files under ``root``; symlinked directories are not followed (they can form
    cycles), symlinked files are kept, hidden names skipped (Note [Hidden files]). Sorted by
    path components, as Rust sorts paths."""
    found = [
        os.path.join(directory, name)
        for directory, names in walk_visible(root)
        for name in names
        if os.path.splitext(name)[1][1:].lower() in AUDIO_EXTENSIONS
    ]
    if not found:
        raise ValueError(f"{root}: no audio files found")
    return sorted(found, key=lambda p: Path(p).parts)


def manifest_paths(manifest: PathLike) -> list[str]:
    """The audio paths of a JSONL or CSV/TSV manifest, relative ones taken from the
    manifest's directory; rows of a labeling manifest that record an error are left out."""
    text = os.fspath(manifest)
    base = os.path.dirname(text)
    rows = read_manifest_with(
        text,
        lambda f, delimiter: _csv_paths(text, f, delimiter),
        lambda f: _jsonl_paths(text, f),
    )
    if not rows:
        raise ValueError(f"{text}: manifest has no items")
    return [p if os.path.isabs(p) or is_url(p) else os.path.join(base, p) for p in rows]


def _jsonl_paths(name: str, lines: Iterable[str]) -> list[str]:
    paths = []
    for n, record, error in jsonl_records(lines):
        if error is not None:
            raise ValueError(f"{name}:{n}: invalid JSON: {error}") from None
        path = path_field(record)
        if path is None:
            raise ValueError(f'{name}:{n}: no "audio_filepath" field')
        if record.get("error") is None:
            paths.append(path)
    return paths


def _csv_paths(name: str, lines: Iterable[str], delimiter: str) -> list[str]:
    reader = csv.reader(lines, delimiter=delimiter)
    header = next(reader, None)
    column = next((i for i, h in enumerate(header or []) if h.strip() in PATH_FIELDS), None)
    if column is None:
        raise ValueError(f"{name}: no path column (one of {', '.join(PATH_FIELDS)})")
    paths = []
    for n, row in enumerate(reader, 2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines, which Rust's csv reader skips
        path = row[column].strip() if column < len(row) else ""
        if not path:
            raise ValueError(f"{name}:{n}: empty path")
        paths.append(path)
    return paths


def labelled_paths(out: PathLike) -> set[str]:
    """The ``audio_filepath`` of every whole line of a JSONL output; a torn last line (a
    crash mid-write) is cut off, as ``audiodecode label --resume`` does."""
    done: set[str] = set()
    if not os.path.exists(out):
        return done
    with open(out, "r+b") as f:
        good = 0
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                path = json.loads(line).get("audio_filepath")
            except (ValueError, AttributeError):
                path = None
            if isinstance(path, str):
                done.add(path)
            good += len(line)
        if f.seek(0, os.SEEK_END) > good:
            f.truncate(good)
    return done
