"""Arguments are checked in Python, before anything reaches a daemon: bad values raise
``ValueError`` (wrong types ``TypeError``) naming the argument, and a dataset without
items is an error. No daemon binary is needed: contacting one fails these tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audiodecode import (
    AudioDataLoader,
    Noise,
    Reverb,
    WhisperInference,
    _daemon,
    create_train_val_loaders,
    load,
    transcribe_file,
)
from audiodecode._whisper_options import transcribe_options


@pytest.fixture(autouse=True)
def no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a daemon was contacted before the arguments were checked")

    monkeypatch.setattr(_daemon, "connect", refuse)


CALLS: dict[str, Callable[..., Any]] = {
    "loader": lambda **kw: AudioDataLoader(["a.wav"], **kw),
    "load": lambda **kw: load("a.wav", **kw),
    "split": lambda **kw: create_train_val_loaders(["a", "b", "c", "d"], [0, 0, 1, 1], **kw),
    "options": transcribe_options,
    "transcribe_file": lambda **kw: transcribe_file("a.wav", **kw),
    "whisper": lambda **kw: WhisperInference("tiny", **kw),
    "set_epoch": lambda **kw: AudioDataLoader(["a.wav"]).set_epoch(**kw),
    "load_state_dict": lambda **kw: AudioDataLoader(["a.wav"]).load_state_dict(
        {"seed": 0, "epoch": 0, "batches_done": 0, **kw}
    ),
}
V, T = ValueError, TypeError
NAN, INF = math.nan, math.inf

BAD: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("loader", {"batch_size": 0}, V, "batch_size"),
    ("loader", {"batch_size": -1}, V, "batch_size"),
    ("loader", {"batch_size": 2.5}, T, "batch_size"),
    ("loader", {"batch_size": True}, T, "batch_size"),
    ("loader", {"target_sr": 0}, V, "target_sr"),
    ("loader", {"target_sr": -16000}, V, "target_sr"),
    ("loader", {"target_sr": 768_001}, V, "target_sr"),
    ("loader", {"target_sr": 999}, V, "target_sr"),
    ("loader", {"target_sr": 16000.0}, T, "target_sr"),
    ("loader", {"seed": -1}, V, "seed"),
    ("loader", {"seed": 1 << 64}, V, "seed"),
    ("loader", {"prefetch": -1}, V, "prefetch"),
    ("loader", {"prefetch": 481}, V, "prefetch"),
    ("loader", {"max_seconds": 0}, V, "max_seconds"),
    ("loader", {"max_seconds": -1.0}, V, "max_seconds"),
    ("loader", {"max_seconds": NAN}, V, "max_seconds"),
    ("loader", {"max_seconds": INF}, V, "max_seconds"),
    ("loader", {"max_seconds": "2"}, T, "max_seconds"),
    ("loader", {"max_batch_seconds": 0.0}, V, "max_batch_seconds"),
    ("loader", {"max_batch_seconds": NAN}, V, "max_batch_seconds"),
    ("loader", {"rank": -1, "world_size": 2}, V, "rank"),
    ("loader", {"rank": 2, "world_size": 2}, V, "rank"),
    ("loader", {"rank": 0, "world_size": 0}, V, "world_size"),
    ("loader", {"rank": 0, "world_size": 1.0}, T, "world_size"),
    ("loader", {"crop": "middle"}, V, "crop"),
    ("loader", {"crop": 1}, T, "crop"),
    ("loader", {"on_error": "ignore"}, V, "on_error"),
    ("loader", {"quality": "best"}, V, "quality"),
    ("loader", {"mono": False, "channels": 0}, V, "channels"),
    ("loader", {"mono": False, "channels": -2}, V, "channels"),
    ("loader", {"mono": True, "channels": 2}, V, "mono"),
    ("load", {"sr": 0}, V, "sr"),
    ("load", {"sr": -22050}, V, "sr"),
    ("load", {"sr": 768_001}, V, "sr"),
    ("load", {"sr": 16000.5}, T, "sr"),
    ("load", {"offset": -0.5}, V, "offset"),
    ("load", {"offset": NAN}, V, "offset"),
    ("load", {"offset": INF}, V, "offset"),
    ("load", {"duration": 0.0}, V, "duration"),
    ("load", {"duration": 1e-9}, V, "duration"),
    ("load", {"duration": 0.0009}, V, "duration"),
    ("load", {"duration": -1.0}, V, "duration"),
    ("load", {"duration": INF}, V, "duration"),
    ("load", {"sr": 100}, V, "sr"),  # below the daemon's 1 kHz floor
    ("load", {"quality": "best"}, V, "quality"),
    ("split", {"val_split": 0.0}, V, "val_split"),
    ("split", {"val_split": 1.0}, V, "val_split"),
    ("split", {"val_split": -0.2}, V, "val_split"),
    ("split", {"val_split": NAN}, V, "val_split"),
    ("split", {"seed": -1}, V, "seed"),
    ("split", {"batch_size": 0}, V, "batch_size"),
    ("options", {"beam_size": 0}, V, "beam_size"),
    ("options", {"temperature": -0.1}, V, "temperature"),
    ("options", {"temperature": NAN}, V, "temperature"),
    ("options", {"temperature": [0.0, INF]}, V, "temperature"),
    ("options", {"patience": 0.0}, V, "patience"),
    ("options", {"repetition_penalty": 0}, V, "repetition_penalty"),
    ("options", {"length_penalty": NAN}, V, "length_penalty"),
    ("options", {"length_penalty": 1e39}, V, "length_penalty"),  # beyond f32
    ("options", {"max_initial_timestamp": -1.0}, V, "max_initial_timestamp"),
    ("options", {"no_speech_threshold": INF}, V, "no_speech_threshold"),
    ("options", {"no_repeat_ngram_size": -1}, V, "no_repeat_ngram_size"),
    ("transcribe_file", {"beam_size": 0}, V, "beam_size"),
    ("whisper", {"beam_size": -5}, V, "beam_size"),
    ("set_epoch", {"epoch": -1}, V, "epoch"),
    ("load_state_dict", {"seed": -3}, V, "seed"),
    ("load_state_dict", {"batches_done": -1}, V, "batches_done"),
]


@pytest.mark.parametrize(
    ("call", "kwargs", "error", "name"),
    BAD,
    ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw, _, _ in BAD],
)
def test_bad_argument_is_named(
    call: str, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error) as e:
        CALLS[call](**kwargs)
    assert type(e.value) is error  # not a subclass such as struct.error or OverflowError
    assert str(e.value).startswith(name), str(e.value)


def test_edge_values_are_accepted() -> None:
    loader = AudioDataLoader(
        ["a.wav"], batch_size=1, target_sr=768_000, seed=(1 << 64) - 1, prefetch=480
    )
    spec = loader._spec()
    assert (spec.sample_rate, spec.seed, spec.prefetch) == (768_000, (1 << 64) - 1, 480)
    assert AudioDataLoader(["a.wav"], target_sr=1000, max_seconds=1e-3)._spec().max_seconds == 1e-3
    assert transcribe_options(temperature=0, beam_size=1).temperatures == [0.0]


# --- Datasets without items. ----------------------------------------------------------------


def manifest(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


EMPTY_MANIFESTS = {
    "csv-without-path-column": ("m.csv", "name,label\na.wav,1\n", "no path column"),
    "csv-header-only": ("m.csv", "audio_filepath,label\n", "no rows"),
    "csv-empty": ("m.csv", "", "empty"),
    "tsv-without-path-column": ("m.tsv", "label\tfoo\n1\ta.wav\n", "no path column"),
    "jsonl-empty": ("m.jsonl", "\n\n", "no rows"),
    "jsonl-without-path-field": ("m.jsonl", '{"label": 1, "text": "hi"}\n', "no path field"),
    "jsonl-only-failed-rows": (
        "m.jsonl",
        '{"audio_filepath": "a.wav", "error": "corrupt"}\n',
        "no rows",
    ),
    "jsonl-not-json": ("m.json", "[\n", "invalid JSON"),
}


@pytest.mark.parametrize("case", list(EMPTY_MANIFESTS))
def test_manifest_without_items_is_an_error(tmp_path: Path, case: str) -> None:
    name, content, why = EMPTY_MANIFESTS[case]
    path = manifest(tmp_path, name, content)
    with pytest.raises(ValueError, match=why) as e:
        AudioDataLoader(path)
    assert str(e.value).startswith("files") and str(path) in str(e.value)


def test_usable_manifests_pass(tmp_path: Path) -> None:
    AudioDataLoader(manifest(tmp_path, "a.csv", "label, path \n1,a.wav\n"))
    AudioDataLoader(manifest(tmp_path, "b.tsv", "\nfile\tlabel\n\na.wav\t1\n"))
    rows = '{"path": "a.wav", "error": "x"}\n\n{"audio": "b.wav", "error": null}\n'
    AudioDataLoader(manifest(tmp_path, "c.jsonl", rows))


def test_missing_manifest_is_reported_now(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="m.jsonl"):
        AudioDataLoader(tmp_path / "m.jsonl")


def test_empty_file_list_and_directories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^files is empty"):
        AudioDataLoader([])
    with pytest.raises(ValueError, match="^files is empty"):
        create_train_val_loaders([], [])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("not audio")
    (tmp_path / ".wav").touch()  # a name without an extension, as the daemon reads it
    with pytest.raises(ValueError, match="^files: no audio files") as e:
        AudioDataLoader(tmp_path)
    assert str(tmp_path) in str(e.value)
    (tmp_path / "sub" / "deep").mkdir()
    (tmp_path / "sub" / "deep" / "clip.FLAC").touch()
    assert AudioDataLoader(tmp_path)._spec().dataset.path == str(tmp_path)


def test_empty_augmentation_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^noise is empty"):
        AudioDataLoader(["a.wav"], augment=[Noise(noise=[])])
    with pytest.raises(ValueError, match="^rirs: no audio files"):
        AudioDataLoader(["a.wav"], augment=[Reverb(tmp_path)])
