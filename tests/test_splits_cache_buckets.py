"""Train/validation splits, the daemon's decoded-audio cache and duration bucketing, seen
from the Python loader."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from audiodecode import AudioDataLoader, Daemon, create_train_val_loaders
from audiodecode.splits import split_indices
from conftest import Corpus


def as_list(x: Any) -> list[int]:
    return (x.numpy() if hasattr(x, "numpy") else np.asarray(x)).tolist()


def test_stratified_split_keeps_proportions_and_is_deterministic() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 20
    train, val = split_indices(labels, 0.2, stratify=True, seed=3)
    assert sorted(train + val) == list(range(100))
    assert not set(train) & set(val)
    assert Counter(labels[i] for i in val) == {0: 10, 1: 6, 2: 4}
    assert (train, val) == split_indices(labels, 0.2, stratify=True, seed=3)
    assert val != split_indices(labels, 0.2, stratify=True, seed=4)[1]
    _, plain = split_indices(labels, 0.2, stratify=False, seed=3)
    assert len(plain) == 20


def test_split_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="val_split"):
        split_indices([0, 1], 1.0, stratify=True, seed=0)


def test_train_val_loaders_share_a_daemon_and_class_ids(corpus: Corpus, daemon: Daemon) -> None:
    train, val = create_train_val_loaders(
        corpus.clips, corpus.classes, batch_size=4, val_split=0.3, seed=1, max_seconds=0.3
    )
    assert train.classes == val.classes == ["bird", "cat", "dog"]
    seen_train = [p for b in train for p in b.paths]
    seen_val = [p for b in val for p in b.paths]
    assert not set(seen_train) & set(seen_val)
    assert sorted(seen_train + seen_val) == sorted(str(p) for p in corpus.clips)
    # Each class of 4-5 clips gives 1-2 to validation: every class is represented.
    val_classes = {corpus.classes[[str(c) for c in corpus.clips].index(p)] for p in seen_val}
    assert val_classes == {"bird", "cat", "dog"}
    # Labels agree with the class names across both loaders.
    for loader in (train, val):
        for b in loader:
            for path, label in zip(b.paths, as_list(b.labels), strict=True):
                name = corpus.classes[[str(c) for c in corpus.clips].index(path)]
                assert loader.classes[label] == name
    train.close()
    val.close()


def test_second_epoch_is_served_from_the_cache(corpus: Corpus, daemon: Daemon) -> None:
    loader = AudioDataLoader(corpus.clips, batch_size=4, max_seconds=0.3, cache=True)
    first = sorted(i for b in loader for i in as_list(b.indices))
    decodes = daemon.status().decodes
    assert decodes >= len(corpus.clips)
    second = sorted(i for b in loader for i in as_list(b.indices))
    assert daemon.status().decodes == decodes, "the second epoch decoded files again"
    assert first == second == list(range(len(corpus.clips)))
    loader.close()


def test_bucketed_batches_respect_the_budget(corpus: Corpus, daemon: Daemon) -> None:
    loader = AudioDataLoader(corpus.clips, max_batch_seconds=2.0, shuffle=True)
    seen = []
    for b in loader:
        seen += as_list(b.indices)
        frames = b.audio.shape[-1]
        assert len(b.paths) == 1 or len(b.paths) * frames / 16000 <= 2.0 + 1e-3
    assert sorted(seen) == list(range(len(corpus.clips)))
    loader.close()
