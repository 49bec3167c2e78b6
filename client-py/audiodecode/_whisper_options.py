"""Transcription options: faster-whisper's keyword names to ``TranscribeOptions``.

Checked here (unknown names, types, ranges) so that mistakes fail at the call, with the
keyword's name; the daemon checks them again against the model.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from audiodecode._protocol import TranscribeOptions, VadOptions
from audiodecode._validate import flag, integer, number, text

I32_RANGE = range(-(1 << 31), 1 << 31)
# The largest finite f32: the wire's floats are f32.
F32_MAX = 3.4028234663852886e38


def _count(name: str, value: Any) -> int:
    return integer(name, value)


def _positive_count(name: str, value: Any) -> int:
    return integer(name, value, 1)


def _real(name: str, value: Any) -> float:
    return number(name, value, at_least=-F32_MAX, at_most=F32_MAX)


def _non_negative(name: str, value: Any) -> float:
    return number(name, value, at_least=0, at_most=F32_MAX)


def _positive(name: str, value: Any) -> float:
    return number(name, value, above=0, at_most=F32_MAX)


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
        return [_non_negative(name, value)]
    values = [_non_negative(name, t) for t in _sequence(name, value)]
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


_VAD_CONVERT: dict[str, Callable[[str, Any], Any]] = {
    "threshold": lambda n, v: number(n, v, at_least=0, at_most=1),
    "neg_threshold": _optional(lambda n, v: number(n, v, at_least=0, at_most=1)),
    "min_speech_duration_ms": _count,
    # inf (faster-whisper's "never split") is None on the wire.
    "max_speech_duration_s": lambda n, v: (
        None if v is None or v == float("inf") else number(n, v, above=0.1, at_most=F32_MAX)
    ),
    "min_silence_duration_ms": _count,
    "speech_pad_ms": _count,
}


def _vad_parameters(_: str, value: Any) -> VadOptions:
    """faster-whisper's ``vad_parameters``: a dict, or an object with ``VadOptions``'
    attributes (its own ``VadOptions`` dataclass); unnamed options keep the batched
    pipeline's defaults."""
    name = "vad_parameters"
    if value is None:
        return VadOptions()
    if isinstance(value, VadOptions):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of VAD options, not {value!r}")
    fields = {}
    for key, v in value.items():
        if key not in _VAD_CONVERT:
            raise TypeError(f"unknown VAD option {key!r} in {name}")
        fields[key] = _VAD_CONVERT[key](f"{name}[{key!r}]", v)
    return VadOptions(**fields)


_CONVERT: dict[str, Callable[[str, Any], Any]] = {
    "model": text,
    "device": text,
    "compute_type": text,
    "threads": _auto_count,
    "batch_size": _auto_count,
    "language": _optional(text),
    "multilingual": flag,
    "task": text,
    "beam_size": _positive_count,
    "best_of": _count,  # the daemon reads 0 as 1
    "patience": _positive,
    "length_penalty": _real,
    "repetition_penalty": _positive,
    "no_repeat_ngram_size": _count,
    "temperatures": _temperatures,
    "compression_ratio_threshold": _optional(_real),
    "log_prob_threshold": _optional(_real),
    "no_speech_threshold": _optional(_real),
    "initial_prompt": _optional(text),
    "hotwords": _optional(text),
    "word_timestamps": flag,
    "without_timestamps": flag,
    "suppress_blank": flag,
    "suppress_tokens": _tokens,
    "max_initial_timestamp": _non_negative,
    "vad_filter": flag,
    "vad": _vad_parameters,
}
# faster-whisper's names where the wire field differs.
_ALIASES = {"temperature": "temperatures", "cpu_threads": "threads", "vad_parameters": "vad"}


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
