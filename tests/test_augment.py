"""Augmentation from Python: the daemon applies it reproducibly; ``transform`` runs on
every batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audiodecode import AudioDataLoader, Daemon, Gain, Noise, Reverb, Shift, Speed
from conftest import Corpus, tone, write_wav


def audio_of(loader: AudioDataLoader) -> dict[int, np.ndarray]:
    out = {}
    for b in loader:
        audio = b.audio.numpy() if hasattr(b.audio, "numpy") else np.asarray(b.audio)
        lengths = b.lengths.tolist()
        for row, index in enumerate(b.indices.tolist()):
            out[index] = audio[row, : lengths[row]].copy()
    return out


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    noise = tmp_path / "noise"
    write_wav(noise / "a.wav", tone(1.0, 16000, 60.0, 0.5), 16000)
    rir = np.zeros(1600, dtype=np.float32)
    rir[50] = 1.0
    rir[51:] = 0.2 * np.exp(-np.arange(1549) / 300.0)
    write_wav(tmp_path / "rirs" / "room.wav", rir, 16000)
    return {"noise": noise, "rirs": tmp_path / "rirs"}


def test_augmented_epochs_are_reproducible(
    corpus: Corpus, daemon: Daemon, sources: dict[str, Path]
) -> None:
    augment = [
        Speed([1.25]),
        Gain(-6, 6),
        Noise(snr=(10, 20), noise=sources["noise"]),
        Shift(0.05),
        Reverb(sources["rirs"], p=0.5),
    ]
    make: Any = lambda seed: AudioDataLoader(
        corpus.clips, batch_size=4, shuffle=False, seed=seed, augment=augment
    )
    plain = audio_of(AudioDataLoader(corpus.clips, batch_size=4, shuffle=False))
    a, b, c = audio_of(make(0)), audio_of(make(0)), audio_of(make(1))
    assert a.keys() == plain.keys()
    for i in a:
        np.testing.assert_array_equal(a[i], b[i])
        assert abs(len(a[i]) - len(plain[i]) / 1.25) <= 1
    assert any(not np.array_equal(a[i], c[i]) for i in a)


def test_bad_augmentations_fail_early() -> None:
    with pytest.raises(ValueError, match="probability"):
        AudioDataLoader(["x.wav"], augment=[Gain(p=1.5)])
    with pytest.raises(ValueError, match="min above max"):
        AudioDataLoader(["x.wav"], augment=[Noise(snr=(20, 5))])


def test_transform_sees_every_batch(corpus: Corpus, daemon: Daemon) -> None:
    seen = []

    def transform(batch: Any) -> Any:
        seen.append(len(batch))
        batch.audio = batch.audio * 0
        return batch

    loader = AudioDataLoader(corpus.clips, batch_size=5, transform=transform)
    for b in loader:
        assert float(abs(b.audio).max()) == 0.0
    assert sum(seen) == len(corpus.clips)
