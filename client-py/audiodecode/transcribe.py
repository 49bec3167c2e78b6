"""Whisper transcription in the daemon: ``transcribe_file``, ``transcribe_batch`` and the
faster-whisper-like ``WhisperInference``.

The daemon keeps the last model loaded, so later calls (from any client) skip the model
load. Options take faster-whisper's keyword names (see ``_whisper_options``); the daemon
checks them against the model and rejects what does not fit with ``BadRequestError``.

Each call uses its own connection: a transcription keeps a connection busy until it ends,
and closing it (an exception, Ctrl-C) makes the daemon stop working on the request.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from audiodecode import _daemon
from audiodecode._errors import DaemonError, TranscriptionError
from audiodecode._paths import absolute
from audiodecode._protocol import Request, Response, TranscribeOptions, TranscribeSpec
from audiodecode._transcript import Segment, Transcription, Word
from audiodecode._whisper_options import canonical_options, transcribe_options

# The one definition of the defaults, mirrored from the daemon's (a golden vector checks it).
_DEFAULTS = TranscribeOptions()

PathLike = str | os.PathLike[str]


class _Progress:
    """tqdm when it is installed, else a one-line counter on an interactive stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._bar: Any = None
        self._line = False
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._line = sys.stderr.isatty()
        else:
            self._bar = tqdm(total=total, unit="file", desc="transcribing")

    def update(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self._line:
            rate = self.done / max(time.monotonic() - self.started, 1e-9)
            sys.stderr.write(f"\rtranscribed {self.done}/{self.total} files ({rate:.2f} files/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._line and self.done:
            sys.stderr.write("\n")


def _transcribe(
    files: Sequence[PathLike],
    options: TranscribeOptions,
    on_error: str,
    show_progress: bool,
) -> tuple[list[Transcription | None], list[tuple[str, str]]]:
    """Results in input order (None for failed files with ``on_error="skip"``) and the
    failures as ``(path, message)``."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be raise or skip, not {on_error!r}")
    if isinstance(files, (str, os.PathLike)):
        raise TypeError("files must be a list of paths (transcribe_file takes one)")
    paths = [absolute(p) for p in files]
    results: list[Transcription | None] = [None] * len(paths)
    seen = [False] * len(paths)
    failed: list[tuple[str, str]] = []
    if not paths:
        return results, failed

    def on_record(msg: Response.Transcribed) -> None:
        i = msg.index
        if i >= len(paths) or seen[i]:
            raise DaemonError(f"audiodecode daemon sent transcript {i} twice or out of range")
        seen[i] = True
        try:
            record = json.loads(msg.record)
            results[i] = None if "error" in record else Transcription.from_record(record)
        except (ValueError, KeyError, TypeError) as e:
            raise DaemonError(f"malformed transcript from the audiodecode daemon: {e!r}") from None
        progress.update()
        if "error" in record:
            if on_error == "raise":
                # Raising closes the connection, which stops the daemon's work on the rest.
                raise TranscriptionError(record["error"], path=paths[i])
            failed.append((paths[i], record["error"]))

    progress = _Progress(len(paths), show_progress)
    request = Request.Transcribe(TranscribeSpec(paths=paths, options=options))
    try:
        with _daemon.connect() as conn:
            conn.request(request, Response.TranscribeDone, on_progress=on_record)
    finally:
        progress.close()
    if not all(seen):
        raise DaemonError(
            f"the audiodecode daemon finished with {seen.count(False)} of {len(paths)} files "
            "not transcribed"
        )
    return results, failed


def transcribe_file(path: PathLike, model: str = _DEFAULTS.model, **options: Any) -> Transcription:
    """Transcribe one file. ``options`` are faster-whisper's keywords (``language``,
    ``beam_size``, ``temperature``, ``word_timestamps``, ``device``, ``compute_type``...).
    A file that cannot be transcribed raises ``TranscriptionError``; options the model
    rejects (or a model that cannot load) raise ``BadRequestError``."""
    results, _ = _transcribe([path], transcribe_options(model=model, **options), "raise", False)
    assert results[0] is not None
    return results[0]


def transcribe_batch(
    files: Sequence[PathLike],
    show_progress: bool = True,
    *,
    model: str = _DEFAULTS.model,
    on_error: str = "raise",
    **options: Any,
) -> list[Transcription | None]:
    """Transcribe ``files`` in one request (the daemon batches them through the model) and
    return their transcripts in input order. The first file that cannot be transcribed
    raises ``TranscriptionError`` (and stops the rest) unless ``on_error="skip"``, which
    leaves None in its place (``WhisperInference.skipped`` keeps the messages). Progress
    goes to stderr: a tqdm bar when tqdm is installed, else a counter line on a terminal."""
    opts = transcribe_options(model=model, **options)
    return _transcribe(files, opts, on_error, show_progress)[0]


class WhisperInference:
    """A model and its options, like faster-whisper's ``WhisperModel``::

        whisper = WhisperInference("large-v3", language="de", word_timestamps=True)
        for t in whisper.transcribe_batch(paths):
            t.save_srt(t.path + ".srt")

    Options given here apply to every call; keywords of a call override them. Options are
    checked on construction; the model itself loads in the daemon at the first call and
    stays loaded until another model is used.
    """

    def __init__(
        self,
        model_size: str = _DEFAULTS.model,
        device: str = _DEFAULTS.device,
        compute_type: str = _DEFAULTS.compute_type,
        batch_size: int | None = None,
        beam_size: int = _DEFAULTS.beam_size,
        language: str | None = None,
        **options: Any,
    ) -> None:
        self.options = canonical_options(
            {
                "model": model_size,
                "device": device,
                "compute_type": compute_type,
                "batch_size": batch_size,
                "beam_size": beam_size,
                "language": language,
                **options,
            }
        )
        self._resolved = transcribe_options(**self.options)
        # (path, message) of the files the last transcribe_batch skipped.
        self.skipped: list[tuple[str, str]] = []

    def _options(self, overrides: Mapping[str, Any]) -> TranscribeOptions:
        if not overrides:
            return self._resolved
        return transcribe_options(**{**self.options, **canonical_options(overrides)})

    def transcribe_file(self, path: PathLike, **overrides: Any) -> Transcription:
        """See ``audiodecode.transcribe_file``."""
        results, _ = _transcribe([path], self._options(overrides), "raise", False)
        assert results[0] is not None
        return results[0]

    def transcribe_batch(
        self,
        files: Sequence[PathLike],
        show_progress: bool = True,
        *,
        on_error: str = "raise",
        **overrides: Any,
    ) -> list[Transcription | None]:
        """See ``audiodecode.transcribe_batch``."""
        results, self.skipped = _transcribe(
            files, self._options(overrides), on_error, show_progress
        )
        return results


__all__ = [
    "Segment",
    "Transcription",
    "TranscriptionError",
    "WhisperInference",
    "Word",
    "transcribe_batch",
    "transcribe_file",
    "transcribe_options",
]
