"""Transcription results: the daemon's per-file JSON record as dataclasses, and subtitles.

A record is the line ``audiodecode label`` writes to its JSONL manifest, so ``to_dict`` gives
that same shape back, and SRT/WebVTT match the files the CLI writes byte for byte.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from audiodecode._errors import TranscriptionError


@dataclasses.dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Word:
        return cls(
            start=float(d["start"]),
            end=float(d["end"]),
            word=d["word"],
            probability=float(d["probability"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Segment:
    """A stretch of speech; times are seconds from the start of the file."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    # Only in multilingual mode, where every piece has its own language.
    language: str | None = None
    # Only with word_timestamps.
    words: list[Word] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Segment:
        words = d.get("words")
        return cls(
            start=float(d["start"]),
            end=float(d["end"]),
            text=d["text"],
            avg_logprob=float(d["avg_logprob"]),
            no_speech_prob=float(d["no_speech_prob"]),
            compression_ratio=float(d["compression_ratio"]),
            language=d.get("language"),
            words=None if words is None else [Word.from_dict(w) for w in words],
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "avg_logprob": self.avg_logprob,
            "no_speech_prob": self.no_speech_prob,
            "compression_ratio": self.compression_ratio,
        }
        # Absent rather than null, as in the daemon's records.
        if self.language is not None:
            out["language"] = self.language
        if self.words is not None:
            out["words"] = [w.to_dict() for w in self.words]
        return out


@dataclasses.dataclass
class Transcription:
    """One file's transcript. ``language`` is the detected (or given) language and, in
    multilingual mode, the one spoken longest."""

    path: str
    duration: float
    text: str
    language: str
    language_probability: float
    segments: list[Segment]
    # With voice activity detection: seconds of the file transcribed and removed
    # (faster-whisper's ``duration_after_vad`` and the rest).
    speech_kept: float | None = None
    speech_removed: float | None = None
    # The damage decoding met (a truncated or corrupt stretch); the transcript is of the
    # audio around it. ``None`` for an intact file.
    damage: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Transcription:
        """Parse a record (a daemon message or a line of ``audiodecode label`` output);
        a failed file's record raises ``TranscriptionError``."""
        path = record["audio_filepath"]
        if "error" in record:
            raise TranscriptionError(record["error"], path=path)
        return cls(
            path=path,
            duration=float(record.get("duration", 0.0)),
            text=record.get("text", ""),
            language=record.get("language", ""),
            language_probability=float(record.get("language_probability", 0.0)),
            segments=[Segment.from_dict(s) for s in record.get("segments", [])],
            speech_kept=_seconds(record.get("speech_kept")),
            speech_removed=_seconds(record.get("speech_removed")),
            damage=record.get("damage"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The record this was parsed from (``json.dumps`` it for a manifest line)."""
        return {
            "audio_filepath": self.path,
            "duration": self.duration,
            "text": self.text,
            "language": self.language,
            "language_probability": self.language_probability,
            "segments": [s.to_dict() for s in self.segments],
        } | {
            k: v
            for k, v in (
                ("speech_kept", self.speech_kept),
                ("speech_removed", self.speech_removed),
                ("damage", self.damage),
            )
            if v is not None
        }

    def to_srt(self) -> str:
        return "".join(
            f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
            for i, s in enumerate(self.segments, start=1)
        )

    def to_vtt(self) -> str:
        cues = "".join(
            f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n"
            for s in self.segments
        )
        return "WEBVTT\n\n" + cues

    def save_srt(self, path: str | os.PathLike[str]) -> None:
        _write(path, self.to_srt())

    def save_vtt(self, path: str | os.PathLike[str]) -> None:
        _write(path, self.to_vtt())


def _write(path: str | os.PathLike[str], text: str) -> None:
    # newline="": "\n" on every platform, as the CLI writes.
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _clock(seconds: float, separator: str) -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (WebVTT), milliseconds rounded half up
    like Rust's ``f64::round`` (Python's ``round`` rounds half to even)."""
    scaled = max(seconds, 0.0) * 1000.0
    whole = math.floor(scaled)
    ms = whole + (1 if scaled - whole >= 0.5 else 0)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)
