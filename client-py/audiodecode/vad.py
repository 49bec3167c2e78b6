"""Voice activity detection: where files hold speech (Silero VAD, run by the daemon binary).

``speech_segments`` takes faster-whisper's ``VadOptions`` names and Silero's defaults (those
of ``faster_whisper.vad.get_speech_timestamps``), and returns ``(start, end)`` seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from audiodecode._binary import find_binary
from audiodecode._errors import AudioFileError
from audiodecode._validate import integer, number

PathLike = str | os.PathLike[str]

# Keyword → (command-line flag, check).
_FLAGS = {
    "threshold": ("--vad-threshold", lambda n, v: number(n, v, at_least=0, at_most=1)),
    "neg_threshold": ("--vad-neg-threshold", lambda n, v: number(n, v, at_least=0, at_most=1)),
    "min_speech_duration_ms": ("--min-speech-duration-ms", integer),
    "max_speech_duration_s": ("--max-speech-duration-s", lambda n, v: number(n, v, above=0.1)),
    "min_silence_duration_ms": ("--min-silence-duration-ms", integer),
    "speech_pad_ms": ("--speech-pad-ms", integer),
}


def speech_segments(path: PathLike, **options: Any) -> list[tuple[float, float]]:
    """The speech in ``path`` as ``(start, end)`` seconds, in order. ``options`` are
    faster-whisper's VAD options (``threshold``, ``min_silence_duration_ms``, ...); a file
    that cannot be read raises ``AudioFileError`` naming it, and a missing ONNX Runtime or
    Silero model raises ``RuntimeError`` saying what to install."""
    args = [str(find_binary()), "vad"]
    for key, value in options.items():
        if key not in _FLAGS:
            raise TypeError(f"unknown VAD option {key!r}")
        flag, check = _FLAGS[key]
        if value is None or value == float("inf"):
            continue  # the default: threshold - 0.15, or never split
        args += [flag, str(check(key, value))]
    args += ["--", os.fspath(path)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = done.stderr.strip().removeprefix("error: ") or f"exit status {done.returncode}"
        if "ONNX Runtime" in message or "Silero" in message:
            raise RuntimeError(message)
        raise AudioFileError(message, path=os.fspath(path))
    record = json.loads(done.stdout)
    return [(float(start), float(end)) for start, end in record["speech"]]
