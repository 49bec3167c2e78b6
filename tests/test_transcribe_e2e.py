"""Transcription through a real daemon with the offline English ``tiny.en`` model, and the
loop closed: a labeling manifest feeds ``AudioDataLoader.from_manifest``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from audiodecode import (
    AudioDataLoader,
    BadRequestError,
    Daemon,
    TranscriptionError,
    WhisperInference,
    transcribe_batch,
    transcribe_file,
)
from conftest import SENTENCES as ALL_SENTENCES
from conftest import speak

SENTENCES = ALL_SENTENCES[:3]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("speech")
    paths = [speak(root / f"s{i}.wav", text) for i, text in enumerate(SENTENCES)]
    return paths


def key_words(text: str) -> set[str]:
    """Content words by stem (first five letters), so "stand" counts for "stands"."""
    return {w.strip(".,").lower()[:5] for w in text.split() if len(w.strip(".,")) > 4}


def heard(sentence: str, text: str) -> bool:
    """Most content words of the sentence are in the text (tiny.en on a synthetic voice
    misses some)."""
    want = key_words(sentence)
    return len(want & key_words(text)) * 3 >= len(want) * 2


def test_transcribe_file_and_batch(daemon: Daemon, speech: list[Path], tmp_path: Path) -> None:
    one = transcribe_file(speech[0], model="tiny.en", word_timestamps=True, beam_size=2)
    assert one.language == "en" and one.duration > 1.0
    assert heard(SENTENCES[0], one.text), one.text
    words = [w for s in one.segments for w in (s.words or [])]
    assert words and all(w.start <= w.end for w in words)
    one.save_srt(tmp_path / "a.srt")
    assert (tmp_path / "a.srt").read_text().startswith("1\n00:00:0")
    assert one.to_dict()["text"] == one.text

    many = transcribe_batch(speech, model="tiny.en", show_progress=False)
    assert [Path(t.path).name for t in many] == [p.name for p in speech]
    for sentence, t in zip(SENTENCES, many, strict=True):
        assert heard(sentence, t.text), t.text


def test_whisper_inference_keeps_its_options(daemon: Daemon, speech: list[Path]) -> None:
    whisper = WhisperInference(model_size="tiny.en", beam_size=1, batch_size=2)
    texts = [t.text for t in whisper.transcribe_batch(speech, show_progress=False)]
    assert len(texts) == len(SENTENCES)
    assert heard(SENTENCES[1], whisper.transcribe_file(speech[1]).text)


def test_errors_name_the_file_and_the_model(
    daemon: Daemon, speech: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"\x00" * 4096)
    with pytest.raises(TranscriptionError, match="broken.mp3"):
        transcribe_file(broken, model="tiny.en")
    skipped = transcribe_batch(
        [broken, speech[0]], model="tiny.en", on_error="skip", show_progress=False
    )
    assert skipped[0] is None and skipped[1] is not None
    with pytest.raises(BadRequestError, match="English-only"):
        transcribe_file(speech[0], model="tiny.en", language="de")
    with pytest.raises(BadRequestError, match="/no/such/model"):
        transcribe_file(speech[0], model="/no/such/model")


def test_a_labeling_manifest_trains_the_loader(
    daemon: Daemon, binary: Path, speech: list[Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "labels.jsonl"
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00")
    subprocess.run(
        [
            str(binary),
            "label",
            *map(str, speech),
            str(broken),
            "--out",
            str(manifest),
            "--model",
            "tiny.en",
            "--quiet",
        ],
        check=True,
    )
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(records) == len(speech) + 1 and "error" in records[-1]

    loader = AudioDataLoader.from_manifest(
        manifest, label_field="text", batch_size=2, target_sr=16000
    )
    seen = []
    for batch in loader:
        seen += list(batch.labels)
    assert sorted(seen) == sorted(r["text"] for r in records if "error" not in r)
