"""``AudioDataLoader`` against a real daemon: contents, order, resume, DDP shards, error
policies, and what happens when either side dies."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import audiodecode
import audiodecode._stream
import numpy as np
import pytest
from audiodecode import AudioDataLoader, AudioFileError, Daemon, DaemonError, load
from conftest import REPO, Corpus

SR = 16000
MAX_S = 0.8


def as_np(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def epoch_indices(loader: AudioDataLoader) -> list[list[int]]:
    return [as_np(b.indices).tolist() for b in loader]


def flatten(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


def expected_item(path: str, max_seconds: float | None = MAX_S, mono: bool = True) -> np.ndarray:
    """What a crop="start" stream must hold for a file: its first max_seconds."""
    y, _ = load(path, sr=SR, mono=mono, duration=max_seconds)
    return y


def check_batch(batch: Any, max_seconds: float | None = MAX_S) -> None:
    """Every row equals load() of its file, cropped, then zero padded."""
    audio = as_np(batch.audio)
    lengths = as_np(batch.lengths)
    assert audio.shape[0] == len(batch) == len(lengths) == len(batch.paths)
    assert audio.shape[-1] == lengths.max()
    for row, n, path in zip(audio, lengths, batch.paths, strict=True):
        ref = expected_item(path, max_seconds, mono=audio.ndim == 2)
        assert n == ref.shape[-1], path
        np.testing.assert_array_equal(row[..., :n], ref, err_msg=path)
        assert not row[..., n:].any(), f"{path}: padding is not zero"


def sorted_shm(daemon_pid: int) -> list[str]:
    """A daemon's ring segments in /dev/shm (their names carry its pid)."""
    return sorted(glob.glob(f"/dev/shm/audiodecode-{os.geteuid()}-{daemon_pid}-*"))


@pytest.fixture(params=["ring header", "socket"])
def handoff(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both slot hand-offs: through the ring header (x86-64) and over the socket (the one
    weakly ordered CPUs use)."""
    if request.param == "ring header" and not audiodecode._stream.SHARED_HANDOFF:
        pytest.skip("the ring-header hand-off is for x86-64")
    monkeypatch.setattr(audiodecode._stream, "SHARED_HANDOFF", request.param == "ring header")
    return str(request.param)


def test_batches_equal_load_of_their_files(daemon: Daemon, corpus: Corpus, handoff: str) -> None:
    files = corpus.clips + corpus.resampled + [corpus.encoded["flac"], corpus.encoded["mp3"]]
    loader = AudioDataLoader(files, batch_size=4, crop="start", max_seconds=MAX_S)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(files) // 4)
    for batch in batches[-1:]:
        assert batch.sample_rate == SR
    seen = []
    for batch in AudioDataLoader(files, batch_size=4, crop="start", max_seconds=MAX_S):
        check_batch(batch)  # checked before the next batch reuses the slot
        seen += batch.paths
    assert sorted(seen) == sorted(str(f) for f in files)


def test_stereo_and_pad_to_max(daemon: Daemon, corpus: Corpus) -> None:
    files = [corpus.stereo, corpus.clips[0]]
    loader = AudioDataLoader(
        files, batch_size=2, mono=False, channels=2, crop="start", max_seconds=0.5, pad_to_max=True
    )
    (batch,) = list(loader)
    audio = as_np(batch.audio)
    assert audio.shape == (2, 2, round(0.5 * SR))
    for row, n, path in zip(audio, as_np(batch.lengths), batch.paths, strict=True):
        ref = np.atleast_2d(expected_item(path, 0.5, mono=False))
        np.testing.assert_array_equal(row[: ref.shape[0], :n], ref)
        # A mono file in a two-channel stream: the missing channel is silent.
        assert not row[ref.shape[0] :].any()


def test_every_item_once_in_a_seeded_order(daemon: Daemon, corpus: Corpus) -> None:
    def loader(seed: int) -> AudioDataLoader:
        return AudioDataLoader(corpus.clips, batch_size=3, seed=seed, max_seconds=0.2)

    a = loader(seed=3)
    epoch0, epoch1 = epoch_indices(a), epoch_indices(a)  # a finished epoch advances
    assert a.epoch == 2
    for order in (epoch0, epoch1):
        flat = flatten(order)
        assert sorted(flat) == list(range(len(corpus.clips)))
    assert epoch0 != epoch1
    assert epoch_indices(loader(seed=3)) == epoch0
    assert epoch_indices(loader(seed=4)) != epoch0
    b = loader(seed=3)
    b.set_epoch(1)
    assert epoch_indices(b) == epoch1
    unshuffled = AudioDataLoader(corpus.clips, batch_size=3, shuffle=False, max_seconds=0.2)
    assert flatten(epoch_indices(unshuffled)) == list(range(len(corpus.clips)))


def test_resume_yields_exactly_the_remaining_batches(daemon: Daemon, corpus: Corpus) -> None:
    def loader() -> AudioDataLoader:
        return AudioDataLoader(corpus.clips, batch_size=3, seed=7, crop="start", max_seconds=0.4)

    full = loader()
    full.set_epoch(2)
    reference = [(as_np(b.indices).tolist(), as_np(b.audio).copy()) for b in full]

    first = loader()
    first.set_epoch(2)
    for i, _ in enumerate(first):
        if i == 1:
            break
    state = first.state_dict()
    assert state == {"epoch": 2, "batches_done": 2, "seed": 7}

    resumed = loader()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the training loop's usual call keeps the position
    rest = [(as_np(b.indices).tolist(), as_np(b.audio).copy()) for b in resumed]
    assert [r[0] for r in rest] == [r[0] for r in reference[2:]]
    for (_, got), (_, want) in zip(rest, reference[2:], strict=True):
        np.testing.assert_array_equal(got, want)
    assert resumed.state_dict() == {"epoch": 3, "batches_done": 0, "seed": 7}


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_shards(daemon: Daemon, corpus: Corpus, world_size: int, drop_last: bool) -> None:
    n = len(corpus.clips)
    shards = []
    for rank in range(world_size):
        loader = AudioDataLoader(
            corpus.clips,
            batch_size=2,
            seed=1,
            max_seconds=0.2,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
        )
        batches = epoch_indices(loader)
        assert len(batches) == len(loader)
        if drop_last:
            assert all(len(b) == 2 for b in batches)
        shards.append(batches)
    assert len({len(s) for s in shards}) == 1, "every rank gets the same number of batches"
    seen = [i for shard in shards for batch in shard for i in batch]
    counts = Counter(seen)
    if drop_last:
        assert max(counts.values()) == 1, "shards are disjoint"
        # DistributedSampler semantics: the uneven tail, then partial batches, are dropped.
        assert len(seen) == world_size * 2 * ((n // world_size) // 2)
    else:
        assert set(counts) == set(range(n)), "shards cover every item"
        assert len(seen) - n < world_size


def test_ddp_ranks_keep_equal_batch_counts_when_whole_batches_fail(
    daemon: Daemon, corpus: Corpus, tmp_path: Path
) -> None:
    """Note [Equal batch counts under skip]: with ``on_error="skip"`` a batch whose every
    item failed is replaced on its rank by a batch that decoded (the rank's last, or the
    next when none came before), so no rank runs short while the others wait for it. A
    rank on which nothing decodes fails with that reason instead."""
    gone = [str(tmp_path / f"gone{i}.wav") for i in range(2)]
    clip = [str(c) for c in corpus.clips[:4]]
    common = {"batch_size": 1, "shuffle": False, "max_seconds": 0.2, "world_size": 2}
    files = [gone[0], clip[0], clip[1], clip[2], gone[1], clip[3]]
    epochs = []
    for rank in range(2):
        loader = AudioDataLoader(files, rank=rank, **common)
        epochs.append([list(b.paths) for b in loader])
        assert len(epochs[-1]) == len(loader) == 3
    # Rank 0 reads gone0, clip1, gone1: clip1 stands in before and after itself.
    assert epochs == [[[clip[1]]] * 3, [[clip[0]], [clip[2]], [clip[3]]]]
    # Alone, a failed batch is skipped as before.
    alone = AudioDataLoader(files, batch_size=1, shuffle=False, max_seconds=0.2)
    assert [list(b.paths) for b in alone] == [[c] for c in clip]
    # Rank 0 reads gone0 and gone1 only: nothing can stand in.
    nothing = AudioDataLoader([gone[0], clip[0], gone[1], clip[1]], rank=0, **common)
    with pytest.raises(audiodecode.AudioDecodeError, match=r"rank 0 of 2: every item"):
        list(nothing)


def test_string_labels_and_directory_classes(daemon: Daemon, corpus: Corpus) -> None:
    loader = AudioDataLoader(corpus.clips, labels=corpus.classes, batch_size=5, max_seconds=0.2)
    assert loader.classes == ["bird", "cat", "dog"]
    label_of = {str(p): loader.class_to_idx[c] for p, c in zip(corpus.clips, corpus.classes)}
    for batch in loader:
        assert as_np(batch.labels).tolist() == [label_of[p] for p in batch.paths]
        assert as_np(batch.labels).dtype == np.int64

    by_dir = AudioDataLoader(corpus.root / "classes", batch_size=5, max_seconds=0.2)
    assert by_dir.classes == ["bird", "cat", "dog"]
    for batch in by_dir:
        for path, label in zip(batch.paths, as_np(batch.labels), strict=True):
            assert by_dir.classes[label] == Path(path).parent.name


def test_manifest_text_labels(daemon: Daemon, corpus: Corpus, tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    lines = [
        f'{{"audio_filepath": "{p}", "text": "clip number {i}"}}'
        for i, p in enumerate(corpus.clips[:5])
    ]
    manifest.write_text("\n".join(lines) + "\n")
    loader = AudioDataLoader.from_manifest(manifest, batch_size=2, max_seconds=0.2)
    texts = {}
    for batch in loader:
        assert isinstance(batch.labels, list)
        texts.update(zip(batch.paths, batch.labels, strict=True))
    assert texts == {str(p): f"clip number {i}" for i, p in enumerate(corpus.clips[:5])}


def test_copy_gives_owned_batches(daemon: Daemon, corpus: Corpus) -> None:
    loader = AudioDataLoader(
        corpus.clips, batch_size=2, crop="start", max_seconds=MAX_S, copy=True, prefetch=1
    )
    kept = list(loader)  # with one slot, every batch reuses the same shared memory
    for batch in kept:
        check_batch(batch)


def test_numpy_without_torch(daemon: Daemon, corpus: Corpus) -> None:
    loader = AudioDataLoader(corpus.clips[:4], batch_size=2, crop="start", max_seconds=MAX_S)
    loader.torch = None
    for batch in loader:
        assert isinstance(batch.audio, np.ndarray) and isinstance(batch.lengths, np.ndarray)
        check_batch(batch)


def test_cpu_device_gives_tensors(daemon: Daemon, corpus: Corpus) -> None:
    torch = pytest.importorskip("torch")
    loader = AudioDataLoader(
        corpus.clips[:4], batch_size=2, crop="start", max_seconds=MAX_S, device="cpu"
    )
    for batch in loader:
        assert isinstance(batch.audio, torch.Tensor) and batch.audio.device.type == "cpu"
        check_batch(batch)


def test_len_opens_the_stream_once(daemon: Daemon, corpus: Corpus) -> None:
    loader = AudioDataLoader(corpus.clips, batch_size=4, max_seconds=0.2)
    assert len(loader) == 4
    assert len(daemon.status().streams) == 1
    assert len(list(loader)) == 4
    assert daemon.status().streams == []  # closed at the end of the epoch
    assert len(loader) == 4  # known now; no stream needed
    assert daemon.status().streams == []


def test_skip_policy_reports_broken_files(daemon: Daemon, corpus: Corpus) -> None:
    files = corpus.clips[:6] + [corpus.garbage, corpus.truncated, corpus.root / "nope.wav"]
    unreadable = {str(corpus.garbage), str(corpus.root / "nope.wav")}
    for strict in (False, True):
        loader = AudioDataLoader(
            files, batch_size=4, crop="start", max_seconds=MAX_S, strict=strict
        )
        seen = []
        for batch in loader:
            check_batch(batch)
            seen += batch.paths
        skipped = dict(loader.skipped)
        if strict:  # the truncated file is a failure, skipped like the unreadable ones
            assert sorted(seen) == sorted(str(p) for p in corpus.clips[:6])
            assert set(skipped) == unreadable | {str(corpus.truncated)}
            assert loader.damaged == []
        else:  # what survived the cut is used, and the damage reported
            assert sorted(seen) == sorted(str(p) for p in corpus.clips[:6] + [corpus.truncated])
            assert set(skipped) == unreadable
            [(path, damage)] = loader.damaged
            assert path == str(corpus.truncated) and "truncated.wav: truncated" in damage
        assert all(Path(path).name in message for path, message in skipped.items())


def test_a_batch_of_only_broken_files_is_left_out(
    daemon: Daemon, corpus: Corpus, handoff: str
) -> None:
    broken = [corpus.garbage, corpus.truncated]
    files = corpus.clips[:2] + broken + corpus.clips[2:4]
    loader = AudioDataLoader(
        files,
        batch_size=2,
        shuffle=False,
        crop="start",
        max_seconds=MAX_S,
        prefetch=2,
        strict=True,
    )
    got = []
    for batch in loader:
        check_batch(batch)
        got.append((as_np(batch.indices).tolist(), loader.state_dict()["batches_done"]))
    # Batch 1 is gone; the position still counts it, so a resume lands right.
    assert got == [([0, 1], 1), ([4, 5], 3)]
    assert sorted(path for path, _ in loader.skipped) == sorted(str(p) for p in broken)


def test_raise_policy_names_the_file(daemon: Daemon, corpus: Corpus) -> None:
    files = corpus.clips[:3] + [corpus.truncated]
    loader = AudioDataLoader(files, batch_size=2, on_error="raise", max_seconds=MAX_S, strict=True)
    with pytest.raises(AudioFileError, match="truncated.wav") as e:
        list(loader)
    assert e.value.path == str(corpus.truncated)
    assert daemon.status().streams == []


def test_breaking_out_frees_the_stream(daemon: Daemon, corpus: Corpus) -> None:
    loader = AudioDataLoader(corpus.clips, batch_size=2, max_seconds=0.2)
    for _ in loader:
        assert len(sorted_shm(daemon.pid)) == 1
        break
    assert daemon.status().streams == []
    assert sorted_shm(daemon.pid) == []


CLIENT = """
import sys
sys.path.insert(0, {client!r})
from audiodecode import AudioDataLoader
loader = AudioDataLoader({files!r}, batch_size=2, max_seconds=0.2, daemon={sock!r})
it = iter(loader)
next(it)
print("ready", flush=True)
sys.stdin.read()
"""


def test_killed_client_frees_its_shared_memory(daemon: Daemon, corpus: Corpus) -> None:
    script = CLIENT.format(
        client=str(REPO / "client-py"),
        files=[str(p) for p in corpus.clips],
        sock=str(daemon.socket_path),
    )
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert len(sorted_shm(daemon.pid)) == 1
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 1.5
        while sorted_shm(daemon.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted_shm(daemon.pid) == []
        assert daemon.status().streams == []
    finally:
        child.kill()
        child.wait()


def test_killed_daemon_wakes_a_blocked_client(binary: Path, corpus: Corpus, tmp_path: Path) -> None:
    # A stopped daemon delivers nothing more: once the batches already in the ring are taken,
    # next() waits on the daemon. (A FIFO used to stand in for a stuck decode; the daemon now
    # refuses FIFOs, and abandons a stuck decode at its item deadline.)
    outcome: dict[str, Any] = {}
    with Daemon(workers=1) as d:
        files = [corpus.clips[i % len(corpus.clips)] for i in range(200)]
        loader = AudioDataLoader(files, batch_size=1, max_seconds=0.2, crop="start")
        batches = iter(loader)
        next(batches)  # the stream and its ring exist
        os.kill(d.pid, signal.SIGSTOP)

        def consume() -> None:
            try:
                for _ in batches:
                    pass
            except BaseException as e:  # noqa: BLE001 - inspected below
                outcome["error"] = e
            outcome["at"] = time.monotonic()

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), f"next() should block: {outcome}"
        killed_at = time.monotonic()
        pid = d.pid
        os.kill(pid, signal.SIGKILL)
        t.join(5)
        assert not t.is_alive(), "next() still blocked after the daemon died"
    assert isinstance(outcome.get("error"), DaemonError), outcome
    assert "closed the connection" in str(outcome["error"])
    assert outcome["at"] - killed_at < 1.2
    # The dead daemon could not unlink its ring; the next daemon to start does.
    with Daemon(workers=1):
        assert sorted_shm(pid) == []
