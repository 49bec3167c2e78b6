"""``label``, ``decode``, ``read_audio`` and ``write_manifest``: the Ray Data side. Ray is
imported when they are called (importing the package needs only pyarrow, which Ray Data
brings)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from audiodecode._binary import find_binary
from audiodecode._manifest import MANIFEST_SUFFIXES
from audiodecode._paths import absolute, named
from audiodecode._shards import TAR_SUFFIXES
from audiodecode._whisper_options import canonical_options, transcribe_options
from audiodecode.ray._decoder import decode_batch
from audiodecode.ray._inputs import PathLike, expand_inputs
from audiodecode.ray._label_paths import PathRule
from audiodecode.ray._labeler import DAEMON_MODES, LABEL_FIELDS, Labeler
from audiodecode.ray._shards import read_shards, shard_units

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.data import Dataset

    Source = Iterable[PathLike] | Dataset


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ImportError(
            "audiodecode.ray needs Ray Data: pip install 'audiodecode[ray]' (or 'ray[data]')"
        ) from e
    return ray


def gpus_per_actor(resources: dict[str, float]) -> float:
    """GPUs a labeling actor reserves by default: one where the cluster (its total
    ``resources``) has a GPU, so the model runs there; none on a CPU cluster."""
    return 1 if resources.get("GPU", 0) >= 1 else 0


def _dataset(source: Source, rows_per_block: int) -> Dataset:
    """``source`` if it is a Dataset (it needs a ``path`` column), else one row per path:
    ``index`` (input order, for ``write_manifest``), ``audio_filepath`` (as given;
    ``write_manifest`` names it from the manifest's directory) and ``path`` (absolute: a
    worker's working directory is not the driver's)."""
    ray = _ray()
    if isinstance(source, ray.data.Dataset):
        if "path" not in source.columns():
            raise ValueError(f"the dataset needs a 'path' column; it has {source.columns()}")
        return source
    if isinstance(source, (str, os.PathLike)):
        raise TypeError("give a list of paths (or read_audio(path) for a manifest or directory)")
    if rows_per_block < 1:
        raise ValueError(f"batch_size must be at least 1, not {rows_per_block}")
    given = [os.fspath(p) for p in source]
    if not given:
        raise ValueError("no input files")
    import pyarrow as pa

    # Blocks of exactly one batch of consecutive rows: Ray then neither splits nor merges
    # blocks to make batches, so label's batches are the CLI's blocks of the same size.
    blocks = [
        pa.table(
            {
                "index": pa.array(range(start, start + len(chunk)), pa.int64()),
                "audio_filepath": pa.array(chunk, pa.string()),
                "path": pa.array([absolute(p) for p in chunk], pa.string()),
            }
        )
        for start in range(0, len(given), rows_per_block)
        for chunk in [given[start : start + rows_per_block]]
    ]
    return ray.data.from_arrow(blocks)


def label(
    source: Source,
    model: str = "base",
    *,
    concurrency: int | tuple[int, int] = 1,
    batch_size: int = 16,
    num_cpus: float = 1,
    num_gpus: float | None = None,
    daemon: str = "actor",
    **whisper_options: Any,
) -> Dataset:
    """Transcribe every file of ``source`` (paths, or a Dataset with a ``path`` column) on
    the Ray cluster; returns the lazy Dataset of the input columns plus ``LABEL_FIELDS``.

    ``concurrency`` actors (or an autoscaling ``(min, max)``) each reserve ``num_cpus``
    CPUs and ``num_gpus`` GPUs (default: one when the cluster has GPUs, none otherwise;
    with ``device="auto"`` the model then runs on it); the model runs on round(num_cpus) threads unless
    ``threads`` is given. ``batch_size`` files go to the model together (packing short
    files into shared 30 s windows works within a batch; ``audiodecode label`` uses 64).
    ``whisper_options`` are ``transcribe_batch``'s (faster-whisper's names). A file that
    cannot be labelled gives a row with ``error`` set; the job does not fail."""
    _ray()  # a missing Ray fails here, with how to install it
    if daemon not in DAEMON_MODES:
        raise ValueError(f"daemon must be one of {DAEMON_MODES}, not {daemon!r}")
    options = canonical_options({"model": model, **whisper_options})
    transcribe_options(**options)  # bad option names and values fail here, not in actors
    # Stated for either daemon: a shared daemon would otherwise size the model by its own
    # worker count, and thread counts change int8 results slightly.
    options["threads"] = threads = options.get("threads") or max(1, round(num_cpus))
    if num_gpus is None:
        ray = _ray()
        if not ray.is_initialized():
            ray.init()  # what Ray Data does at the first execution anyway
        num_gpus = gpus_per_actor(ray.cluster_resources())
    ds = _dataset(source, batch_size)
    return ds.map_batches(
        Labeler,
        fn_constructor_kwargs={"options": options, "threads": threads, "daemon": daemon},
        batch_size=batch_size,
        batch_format="pyarrow",
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        # Fault tolerance is Ray Data's default for actor pools (max_restarts=-1,
        # max_task_retries=-1): a dead actor is restarted and the batch it was on runs
        # again. Passing them here is deprecated (Ray 2.60 warns, 2.64 drops it).
    )


def decode(
    source: Source,
    sr: int | None = 16000,
    mono: bool = True,
    *,
    batch_size: int = 16,
    num_cpus: float = 1,
    **load_options: Any,
) -> Dataset:
    """Decode every file of ``source`` (paths, or a Dataset with a ``path`` column) in Ray
    tasks: the input columns plus ``audio`` (a tensor column, see ``decode_batch``),
    ``sample_rate``, ``duration`` and ``error``. ``load_options`` are ``load``'s
    (``quality``, ``downmix``, ``strict``, ``offset``, ``duration``)."""
    ds = _dataset(source, batch_size)
    return ds.map_batches(
        decode_batch,
        fn_kwargs={"sr": sr, "mono": mono, **load_options},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=num_cpus,
    )


def read_audio(
    source: PathLike | Iterable[PathLike],
    *,
    sr: int | None = 16000,
    mono: bool = True,
    decode_audio: bool = True,
    rows_per_block: int = 16,
    format: str | None = None,
    label_field: str | None = None,
    **load_options: Any,
) -> Dataset:
    """A Dataset over audio files: a manifest (JSONL/JSON/CSV/TSV with an
    ``audio_filepath``/``path``/``audio``/``file`` field, relative paths taken from its
    directory, error rows of a labeling manifest left out), a directory (searched
    recursively), a file, or a list of those, read as ``audiodecode label`` reads its
    inputs. Listing happens on the driver (one path per row is cheap); decoding runs in
    one task per ``rows_per_block`` files. ``decode_audio=False`` gives only the rows
    (``index``, ``audio_filepath``, ``path``), e.g. for ``label``.

    Sharded datasets (``format="webdataset"``, implied by ``.tar``/``.tar.gz`` paths or patterns,
    ``"shar"``, or ``"nemo"`` with ``[manifest, tars...]``) are read one task per shard,
    each streaming its shard through its node's daemon, local or from object storage:
    rows ``shard``, ``path`` (``SHARD#MEMBER``), ``audio``, ``sample_rate``, ``duration``,
    ``label``, ``text``, ``error``."""
    inputs = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if (
        format is None
        and inputs
        and all(named(os.fspath(i)).lower().endswith(TAR_SUFFIXES) for i in inputs)
    ):
        format = "webdataset"
    if format is not None:
        if sr is None or not decode_audio or load_options:
            raise ValueError("sharded read_audio takes sr (a rate), mono and label_field only")
        units = shard_units(inputs, format)
        ds = _ray().data.from_items([{"shard": u} for u in units], override_num_blocks=len(units))
        return ds.map_batches(
            read_shards,
            batch_size=1,
            fn_kwargs={
                "fmt": format,
                "sr": sr,
                "mono": mono,
                "label_field": label_field,
                "rows_per_read": rows_per_block,
                "nemo_manifest": absolute(inputs[0]) if format == "nemo" else None,
            },
        )
    ds = _dataset(expand_inputs(inputs, manifests=MANIFEST_SUFFIXES), rows_per_block)
    if not decode_audio:
        return ds
    return decode(ds, sr, mono, batch_size=rows_per_block, **load_options)


def manifest_line(row: dict[str, Any]) -> str:
    """The JSONL line ``audiodecode label`` writes for a labelled row: its fields in the
    CLI's order, absent rather than null, compact like serde_json."""
    record = {}
    for field in LABEL_FIELDS:
        value = row.get(field)
        if value is None:
            continue
        record[field] = json.loads(value) if field == "segments" else value
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def write_manifest(ds: Dataset, path: PathLike, *, append: bool = False) -> int:
    """Write the labelled rows of ``ds`` (from ``label``) as ``audiodecode label``'s JSONL
    manifest, one line per row, in ``index`` order when the rows have one; returns the
    number of lines. A relative ``audio_filepath`` (relative to the working directory, as
    given to ``label``) is written relative to the manifest's directory, as the CLI writes
    it and as manifests are read. Lines go out as results arrive, a batch per write, so if
    the driver dies the file holds whole batches (and at most one torn line, which
    ``--resume`` of either CLI cuts) that a resumed run skips."""
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8", newline="") as f:
        rule = PathRule(path)  # once the file is open: its directory exists

        def to_line(row: dict[str, Any]) -> str:
            name = row.get("audio_filepath")
            return manifest_line(
                {**row, "audio_filepath": rule.written(name)} if isinstance(name, str) else row
            )

        batches = ds.iter_batches(batch_format="pyarrow", batch_size=None)
        for lines in _ordered_lines(batches, to_line):
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            count += len(lines)
        os.fsync(f.fileno())
    return count


def write_shards(
    ds: Dataset,
    out_dir: PathLike,
    *,
    format: str = "webdataset",
    shard_size: str = "1GB",
    sr: int | None = None,
    codec: str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Pack the labelled rows of ``ds`` (from ``label``) into shards with ``audiodecode
    shard``: each row's audio file with its transcript (a ``.txt`` member, or a Shar
    supervision). The rows go through ``write_manifest`` (error rows are left out, as the
    loader leaves them out of a manifest); the packing runs on the driver. Returns the
    shards' paths; a failure raises ``RuntimeError`` with the tool's message (as does an
    ``out_dir`` holding an earlier run's shards, unless ``overwrite``)."""
    out = os.fspath(out_dir)
    with tempfile.TemporaryDirectory(prefix="audiodecode-shards-") as tmp:
        manifest = os.path.join(tmp, "labels.jsonl")
        write_manifest(ds, manifest)
        command = [str(find_binary()), "shard", manifest, "--out", out, "--format", format]
        command += ["--shard-size", shard_size, "-q"]
        command += ["--sr", str(sr)] if sr is not None else []
        command += ["--codec", codec] if codec is not None else []
        command += ["--overwrite"] if overwrite else []
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"audiodecode shard failed: {done.stderr.strip()}")
    pattern = "recording.*.tar" if format == "shar" else "shard-*.tar"
    return sorted(glob.glob(os.path.join(out, pattern)))


def _ordered_lines(
    batches: Iterable[pa.Table], to_line: Callable[[dict[str, Any]], str]
) -> Iterator[list[str]]:
    """Each row's ``to_line``, per batch, held back until every lower ``index`` is out
    (batches finish out of order); rows without an index go out as they come. Indices that
    never arrive (a filtered dataset) release what waits behind them at the end, in order."""
    waiting: dict[int, str] = {}
    following = 0
    for batch in batches:
        rows = batch.to_pylist()
        if "index" not in batch.column_names:
            yield [to_line(r) for r in rows]
            continue
        for r in rows:
            waiting[int(r["index"])] = to_line(r)
        ready = []
        while following in waiting:
            ready.append(waiting.pop(following))
            following += 1
        if ready:
            yield ready
    if waiting:
        yield [waiting[i] for i in sorted(waiting)]
