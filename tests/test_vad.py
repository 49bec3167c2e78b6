"""``audiodecode.speech_segments`` and VAD in transcription, on espeak-ng speech placed
between silence and a tone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audiodecode import AudioFileError, Daemon, speech_segments, transcribe_file
from conftest import read_wav, speak, tone, write_wav

RATE = 16000


@pytest.fixture(scope="module")
def speech_between(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[float, float]]:
    """3 s of silence, a sentence, 3 s of a 440 Hz tone, 2 s of silence; and where the
    sentence's audible part lies (seconds)."""
    root = tmp_path_factory.mktemp("vad")
    raw = speak(root / "raw.wav", "The green bottle stands on the kitchen table.", rate=140)
    said, rate = read_wav(raw)
    said = said[0]
    # espeak-ng speaks at 22.05 kHz: bring it to 16 kHz by linear interpolation.
    t = np.arange(int(len(said) * RATE / rate)) * rate / RATE
    said = np.interp(t, np.arange(len(said)), said).astype(np.float32)
    loud = np.flatnonzero(np.abs(said) > 0.01)
    lead = 3.0
    audible = (lead + loud[0] / RATE, lead + loud[-1] / RATE)
    samples = np.concatenate(
        [np.zeros(3 * RATE), said, tone(3.0, RATE, 440.0, 0.3), np.zeros(2 * RATE)]
    ).astype(np.float32)
    path = root / "between.wav"
    write_wav(path, samples, RATE)
    return path, audible


def test_speech_segments_find_the_sentence(
    binary: Path, speech_between: tuple[Path, tuple[float, float]]
) -> None:
    path, (a, b) = speech_between
    found = speech_segments(path, speech_pad_ms=0)
    assert len(found) == 1, found
    start, end = found[0]
    assert abs(start - a) < 0.15 and abs(end - b) < 0.15, (found, a, b)
    padded = speech_segments(path)
    assert padded[0][0] < start and padded[0][1] > end
    assert speech_segments(path, threshold=0.99, min_speech_duration_ms=5000) == []


def test_speech_segments_errors(binary: Path, tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="missing.wav"):
        speech_segments(tmp_path / "missing.wav")
    with pytest.raises(TypeError, match="window_size_samples"):
        speech_segments(tmp_path / "x.wav", window_size_samples=512)
    with pytest.raises(ValueError, match="threshold"):
        speech_segments(tmp_path / "x.wav", threshold=1.5)


def test_transcription_keeps_only_speech(
    daemon: Daemon, speech_between: tuple[Path, tuple[float, float]]
) -> None:
    path, (a, b) = speech_between
    t = transcribe_file(path, model="tiny.en")
    assert "kitchen table" in t.text.lower(), t.text
    assert t.speech_kept is not None and t.speech_removed is not None
    assert abs(t.speech_kept + t.speech_removed - t.duration) < 0.01
    assert t.speech_kept < 4.5
    for s in t.segments:
        assert a - 0.5 <= s.start <= s.end <= b + 0.5, (s, a, b)
    everything = transcribe_file(path, model="tiny.en", vad_filter=False)
    assert everything.speech_kept is None
    strict = transcribe_file(path, model="tiny.en", vad_parameters={"min_speech_duration_ms": 9000})
    assert strict.text == "" and strict.speech_kept == 0.0
