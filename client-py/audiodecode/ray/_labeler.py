"""The labeling actor: one daemon with the model loaded once, a daemon request per batch.

Plain Python (no Ray import): Ray Data instantiates the class in each actor and calls it
with ``pyarrow.Table`` batches. A batch is one ``Transcribe`` request, so the daemon packs
and batches that batch's files together, as ``audiodecode label`` does within a block.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from audiodecode import _daemon
from audiodecode._client import Connection
from audiodecode._errors import DaemonError
from audiodecode._protocol import Request, Response, TranscribeSpec
from audiodecode._whisper_options import transcribe_options
from audiodecode.ray._owned import ActorDaemon

# The fields of an ``audiodecode label`` line, in the order the CLI writes them. Every row
# gets every column (null where the line has no such field) so all batches share a schema.
LABEL_SCHEMA = pa.schema(
    [
        ("audio_filepath", pa.string()),
        ("duration", pa.float64()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_probability", pa.float64()),
        # JSON text: segments' optional fields (words, language) would otherwise give
        # batches different Arrow types.
        ("segments", pa.string()),
        ("error", pa.string()),
        ("speech_kept", pa.float64()),
        ("speech_removed", pa.float64()),
    ]
)
LABEL_FIELDS = tuple(LABEL_SCHEMA.names)

# Where the daemon runs: "actor" (a private one per actor, see the package docstring for
# why it is the default) or "node" (the per-user daemon every actor of a node shares).
DAEMON_MODES = ("actor", "node")


class Labeler:
    """Ray Data callable class: adds the label columns to a batch with a ``path`` column
    (the file to read, absolute) and, optionally, ``audio_filepath`` (the name to write;
    ``path`` when absent)."""

    def __init__(self, options: dict[str, Any], threads: int, daemon: str = "actor") -> None:
        if daemon not in DAEMON_MODES:
            raise ValueError(f"daemon must be one of {DAEMON_MODES}, not {daemon!r}")
        self._options = transcribe_options(**options)
        self._threads = max(1, threads)
        self._mode = daemon
        self._daemon: ActorDaemon | None = None
        self._start()

    def _start(self) -> None:
        if self._mode == "actor":
            self._daemon = ActorDaemon(self._threads).__enter__()

    def _restart(self) -> None:
        self.close()
        self._start()

    def _connect(self) -> Connection:
        return self._daemon.connect() if self._daemon is not None else _daemon.connect()

    def close(self) -> None:
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            daemon.close()

    def __del__(self) -> None:
        # Ray Data drops the instance when the actor exits gracefully (a failed __init__
        # leaves no _daemon).
        if hasattr(self, "_daemon"):
            self.close()

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = [str(p) for p in batch.column("path").to_pylist()]
        names = (
            batch.column("audio_filepath").to_pylist()
            if "audio_filepath" in batch.column_names
            else paths
        )
        records = self.label(paths)
        columns = {field: [] for field in LABEL_FIELDS}
        for name, record in zip(names, records, strict=True):
            record["audio_filepath"] = name
            if "segments" in record:
                record["segments"] = json.dumps(
                    record["segments"], ensure_ascii=False, separators=(",", ":")
                )
            for field in LABEL_FIELDS:
                columns[field].append(record.get(field))
        kept = batch.drop_columns([f for f in LABEL_FIELDS if f in batch.column_names])
        labels = pa.Table.from_pydict(columns, schema=LABEL_SCHEMA)
        for field in LABEL_SCHEMA:
            kept = kept.append_column(field, labels.column(field.name))
        return kept

    def label(self, paths: list[str]) -> list[dict[str, Any]]:
        """The daemon's record for each of ``paths``, in order. A daemon that dies on the
        batch is restarted and the batch is labelled again file by file, so a file that
        kills it becomes an error row instead of failing the job."""
        try:
            return self._request(paths)
        except DaemonError:
            self._restart()
        records = []
        for path in paths:
            try:
                records += self._request([path])
            except DaemonError as e:
                self._restart()
                records.append({"audio_filepath": path, "error": f"{path}: {e}"})
        return records

    def _request(self, paths: list[str]) -> list[dict[str, Any]]:
        records: list[dict[str, Any] | None] = [None] * len(paths)

        def on_record(msg: Response.Transcribed) -> None:
            if msg.index >= len(paths) or records[msg.index] is not None:
                raise DaemonError(f"the daemon sent record {msg.index} twice or out of range")
            records[msg.index] = json.loads(msg.record)

        request = Request.Transcribe(TranscribeSpec(paths=paths, options=self._options))
        with self._connect() as conn:
            conn.request(request, Response.TranscribeDone, on_progress=on_record)
        missing = [paths[i] for i, r in enumerate(records) if r is None]
        if missing:
            raise DaemonError(f"the daemon finished without labelling {missing}")
        return [r for r in records if r is not None]
