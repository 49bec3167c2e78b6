"""Transcription options: faster-whisper's keyword names to ``TranscribeOptions``.

Checked here (unknown names, types, ranges) so that mistakes fail at the call, with the
keyword's name; the daemon checks them again against the model.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from audiodecode._protocol import TranscribeOptions

U32_MAX = (1 << 32) - 1
I32_RANGE = range(-(1 << 31), 1 << 31)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not 0 <= value <= U32_MAX:
        raise ValueError(f"{name} must be between 0 and {U32_MAX}, not {value}")
    return int(value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {value!r}")
    return float(value)


def _optional(convert: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: None if value is None else convert(name, value)


def _auto_count(name: str, value: Any) -> int:
    # None, like 0, leaves the choice to the daemon.
    return 0 if value is None else _count(name, value)


def _sequence(name: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence, not {value!r}")
    return list(value)


def _temperatures(name: str, value: Any) -> list[float]:
    # faster-whisper's ``temperature``: one value, or the fallback sequence.
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [float(value)]
    values = [_real(name, t) for t in _sequence(name, value)]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def _tokens(name: str, value: Any) -> list[int]:
    # None suppresses nothing; -1 stands for the model's non-speech symbols.
    if value is None:
        return []
    tokens = _sequence(name, value)
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t not in I32_RANGE:
            raise TypeError(f"{name} must hold token ids (32-bit integers), not {t!r}")
    return [int(t) for t in tokens]


_CONVERT: dict[str, Callable[[str, Any], Any]] = {
    "model": _text,
    "device": _text,
    "compute_type": _text,
    "threads": _auto_count,
    "batch_size": _auto_count,
    "language": _optional(_text),
    "multilingual": _flag,
    "task": _text,
    "beam_size": _count,
    "best_of": _count,
    "patience": _real,
    "length_penalty": _real,
    "repetition_penalty": _real,
    "no_repeat_ngram_size": _count,
    "temperatures": _temperatures,
    "compression_ratio_threshold": _optional(_real),
    "log_prob_threshold": _optional(_real),
    "no_speech_threshold": _optional(_real),
    "initial_prompt": _optional(_text),
    "hotwords": _optional(_text),
    "word_timestamps": _flag,
    "without_timestamps": _flag,
    "suppress_blank": _flag,
    "suppress_tokens": _tokens,
    "max_initial_timestamp": _real,
}
# faster-whisper's names where the wire field differs.
_ALIASES = {"temperature": "temperatures", "cpu_threads": "threads"}


def canonical_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keywords under their TranscribeOptions names; unknown or doubled ones raise."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in options.items():
        name = _ALIASES.get(key, key)
        if name not in _CONVERT:
            raise TypeError(f"unknown transcription option {key!r}")
        if name in given:
            raise TypeError(f"transcription options {given[name]!r} and {key!r} are the same")
        given[name] = key
        out[name] = value
    return out


def transcribe_options(**options: Any) -> TranscribeOptions:
    """``TranscribeOptions`` from faster-whisper-style keywords (``temperature`` may be one
    value or a sequence, ``cpu_threads`` is ``threads``); the rest keep their defaults."""
    return TranscribeOptions(
        **{k: _CONVERT[k](k, v) for k, v in canonical_options(options).items()}
    )
