"""Ring mapping on a synthetic ring written with numpy per the documented layout."""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
from typing import Any

import numpy as np
import pytest
from audiodecode._batch import Batch, SlotBatches
from audiodecode._protocol import RING_MAGIC, ItemInfo, RingGeometry, StreamInfo
from audiodecode._ring import Ring, SlotHeader, shm_path

GEOMETRY = RingGeometry.new(3, 4, 2, 100, 16000)


def write_slot(
    path: str,
    g: RingGeometry,
    slot: int,
    header: SlotHeader,
    lengths: list[int],
    labels: list[int],
    indices: list[int],
    audio: np.ndarray,
) -> None:
    base = g.slot_offset(slot)
    with open(path, "r+b") as f:
        f.seek(base)
        f.write(header.to_bytes())
        f.seek(base + g.lengths_offset)
        f.write(np.asarray(lengths, "<u4").tobytes())
        f.seek(base + g.labels_offset)
        f.write(np.asarray(labels, "<i8").tobytes())
        f.seek(base + g.indices_offset)
        f.write(np.asarray(indices, "<u8").tobytes())
        f.seek(base + g.audio_offset)
        f.write(np.ascontiguousarray(audio, "<f4").tobytes())


def make_ring_file(name: str, g: RingGeometry, magic: bytes = RING_MAGIC) -> str:
    path = shm_path(name)
    with open(path, "wb") as f:
        f.write(magic)
        f.truncate(g.total_bytes())
    return path


def test_shm_path() -> None:
    assert shm_path("/audiodecode-1-2-abc") == "/dev/shm/audiodecode-1-2-abc"
    assert shm_path("x") == "/dev/shm/x"


def test_slot_header_byte_offsets() -> None:
    h = SlotHeader(seq=7, epoch=2, batch=31, channels=1, frames=123_456, sample_rate=16000)
    raw = h.to_bytes()
    assert len(raw) == 64
    assert struct.unpack_from("<Q", raw, 0)[0] == 7
    assert struct.unpack_from("<Q", raw, 8)[0] == 2
    assert struct.unpack_from("<I", raw, 16)[0] == 31
    assert struct.unpack_from("<I", raw, 20)[0] == 1
    assert struct.unpack_from("<Q", raw, 24)[0] == 123_456
    assert struct.unpack_from("<I", raw, 32)[0] == 16000
    assert SlotHeader.parse(raw) == h


def test_views_match_and_share_memory(shm_name: str) -> None:
    path = make_ring_file(shm_name, GEOMETRY)
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((3, 2, 50)).astype(np.float32)
    header = SlotHeader(seq=5, epoch=2, batch=3, channels=2, frames=50, sample_rate=16000)
    write_slot(path, GEOMETRY, 1, header, [50, 20, 35], [-1, 7, 2**40], [9, 0, 2], audio)

    with Ring(shm_name, GEOMETRY, mono=False) as ring:
        slot = ring.read(1)
        assert slot.header == header
        np.testing.assert_array_equal(slot.audio, audio)
        assert slot.lengths.tolist() == [50, 20, 35]
        assert slot.labels.tolist() == [-1, 7, 2**40]
        assert slot.indices.tolist() == [9, 0, 2]
        assert slot.lengths.dtype == slot.labels.dtype == slot.indices.dtype == np.int64

        # Zero copy: a write to the shared memory shows through the audio view...
        with open(path, "r+b") as f:
            f.seek(GEOMETRY.slot_offset(1) + GEOMETRY.audio_offset)
            f.write(np.float32(42.0).tobytes())
            f.seek(GEOMETRY.slot_offset(1) + GEOMETRY.lengths_offset)
            f.write(np.uint32(1).tobytes())
        assert slot.audio[0, 0, 0] == 42.0
        # ...while the small per-item arrays are owned copies.
        assert slot.lengths[0] == 50
        # Other slots are untouched (zeroed).
        assert ring.header(0) == SlotHeader(0, 0, 0, 0, 0, 0)


def test_mono_stream_gives_batch_by_time(shm_name: str) -> None:
    g = RingGeometry.new(2, 4, 1, 64, 8000)
    path = make_ring_file(shm_name, g)
    audio = np.arange(2 * 64, dtype=np.float32).reshape(2, 1, 64)
    header = SlotHeader(seq=0, epoch=0, batch=2, channels=1, frames=64, sample_rate=8000)
    write_slot(path, g, 1, header, [64, 10], [0, 1], [1, 0], audio)
    with Ring(shm_name, g, mono=True) as ring:
        assert ring.read(1).audio.shape == (2, 64)
    with Ring(shm_name, g, mono=False) as ring:
        # One kept channel of a multi-channel request stays [B, C, T].
        assert ring.read(1).audio.shape == (2, 1, 64)


def test_torch_batch_is_zero_copy(shm_name: str) -> None:
    torch = pytest.importorskip("torch")
    g = RingGeometry.new(1, 2, 1, 8, 16000)
    path = make_ring_file(shm_name, g)
    header = SlotHeader(seq=0, epoch=0, batch=2, channels=1, frames=8, sample_rate=16000)
    write_slot(path, g, 0, header, [8, 4], [1, 0], [1, 0], np.ones((2, 1, 8), np.float32))
    info = StreamInfo(
        stream=1,
        shm_name=shm_name,
        ring=g,
        batches_per_epoch=1,
        items=[ItemInfo("/a.wav", 0, None), ItemInfo("/b.wav", 1, None)],
        classes=[],
    )
    with Ring(shm_name, g, mono=True) as ring:
        view = SlotBatches(ring, info, torch, texts=False, copy=False).make(0)
        owned = SlotBatches(ring, info, torch, texts=False, copy=True).make(0)
        assert view.paths == ["/b.wav", "/a.wav"]
        assert view.labels.tolist() == [1, 0] and view.labels.dtype == torch.int64
        with open(path, "r+b") as f:
            f.seek(g.slot_offset(0) + g.audio_offset)
            f.write(np.float32(-3.0).tobytes())
        assert view.audio[0, 0].item() == -3.0
        assert owned.audio[0, 0].item() == 1.0
    # Closing the ring under a live view must not unmap it (no crash on access).
    assert view.audio.sum().item() == 16.0 - 4.0


def test_closing_with_live_views_keeps_them_valid(shm_name: str) -> None:
    path = make_ring_file(shm_name, GEOMETRY)
    header = SlotHeader(seq=0, epoch=0, batch=1, channels=2, frames=3, sample_rate=16000)
    write_slot(path, GEOMETRY, 0, header, [3], [0], [0], np.full((1, 2, 3), 0.5))
    ring = Ring(shm_name, GEOMETRY, mono=False)
    audio = ring.read(0).audio
    ring.close()
    os.unlink(path)  # like the daemon closing the stream
    assert audio.sum() == 3.0


def test_bad_rings_are_errors(shm_name: str) -> None:
    path = make_ring_file(shm_name, GEOMETRY)
    with Ring(shm_name, GEOMETRY, mono=False) as ring, pytest.raises(IndexError):
        ring.read(3)
    too_big = SlotHeader(seq=0, epoch=0, batch=5, channels=2, frames=10, sample_rate=16000)
    write_slot(path, GEOMETRY, 0, too_big, [], [], [], np.zeros(0))
    with (
        Ring(shm_name, GEOMETRY, mono=False) as ring,
        pytest.raises(ValueError, match="exceeds the ring geometry"),
    ):
        ring.read(0)
    bigger = RingGeometry.new(4, 4, 2, 100, 16000)
    with pytest.raises(ValueError, match="bytes, but the ring geometry needs"):
        Ring(shm_name, bigger, mono=False)
    with pytest.raises(FileNotFoundError):
        Ring(shm_name + "-missing", GEOMETRY, mono=False)
    make_ring_file(shm_name, GEOMETRY, magic=b"NOTARING")
    with pytest.raises(ValueError, match="bad magic"):
        Ring(shm_name, GEOMETRY, mono=False)


def stream_info(name: str, g: RingGeometry, items: list[ItemInfo]) -> StreamInfo:
    return StreamInfo(stream=1, shm_name=name, ring=g, batches_per_epoch=1, items=items, classes=[])


@pytest.mark.parametrize("use_torch", [False, True])
def test_batch_fields_are_snapshots_taken_at_fetch(shm_name: str, use_torch: bool) -> None:
    """lengths/labels/indices/paths are decoded lazily, but from a copy taken when the
    batch was made: a slot refilled before the first access does not change them."""
    torch = optional_torch(use_torch)
    path = make_ring_file(shm_name, GEOMETRY)
    header = SlotHeader(seq=0, epoch=0, batch=2, channels=2, frames=4, sample_rate=8000)
    write_slot(path, GEOMETRY, 2, header, [4, 3], [5, -1], [1, 0], np.ones((2, 2, 4)))
    items = [ItemInfo("/a.wav", 0, None), ItemInfo("/b.wav", 5, None)]
    with Ring(shm_name, GEOMETRY, mono=False) as ring:
        batches = SlotBatches(
            ring, stream_info(shm_name, GEOMETRY, items), torch, texts=False, copy=False
        )
        batch = batches.make(2)
        refill = SlotHeader(seq=1, epoch=0, batch=1, channels=2, frames=2, sample_rate=8000)
        write_slot(path, GEOMETRY, 2, refill, [2], [0], [0], np.zeros((1, 2, 2)))
        assert len(batch) == 2 and batch.sample_rate == 8000
        lengths = as_np(batch.lengths)
        assert lengths.tolist() == [4, 3] and lengths.dtype == np.int64
        assert as_np(batch.labels).tolist() == [5, -1]
        assert as_np(batch.indices).tolist() == [1, 0]
        assert batch.paths == ["/b.wav", "/a.wav"]
        # The audio is the view: it shows the refill (the documented lifetime).
        audio = as_np(batch.audio)
        assert audio.shape == (2, 2, 4) and audio[0, 0, 0] == 0.0
        assert not audio[0, 0].any() and audio[0, 1].all()  # the refill wrote 4 zeros
        batches.close()


def optional_torch(use: bool) -> Any:
    return pytest.importorskip("torch") if use else None


def as_np(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


@pytest.mark.parametrize("use_torch", [False, True])
def test_slot_views_are_reused_and_reshaped(shm_name: str, use_torch: bool) -> None:
    torch = optional_torch(use_torch)
    g = RingGeometry.new(2, 4, 1, 16, 16000)
    path = make_ring_file(shm_name, g)
    items = [ItemInfo(f"/{i}.wav", -1, f"text {i}") for i in range(4)]
    batches = None
    with Ring(shm_name, g, mono=True) as ring:
        batches = SlotBatches(ring, stream_info(shm_name, g, items), torch, texts=True, copy=False)
        for seq, (b, t) in enumerate([(3, 16), (3, 16), (2, 5), (4, 16)]):
            audio = np.arange(b * t, dtype=np.float32).reshape(b, 1, t) + seq
            h = SlotHeader(seq=seq, epoch=0, batch=b, channels=1, frames=t, sample_rate=16000)
            write_slot(path, g, 1, h, [t] * b, [-1] * b, list(range(b)), audio)
            batch = batches.make(1)
            np.testing.assert_array_equal(as_np(batch.audio), audio[:, 0])
            assert batch.labels == [f"text {i}" for i in range(b)]
        too_long = SlotHeader(seq=4, epoch=0, batch=1, channels=1, frames=17, sample_rate=16000)
        write_slot(path, g, 0, too_long, [17], [-1], [0], np.zeros(17))
        with pytest.raises(ValueError, match="exceeds the ring geometry"):
            batches.make(0)
        batches.close()


def test_ring_batches_copy_replace_and_pickle(shm_name: str) -> None:
    path = make_ring_file(shm_name, GEOMETRY)
    header = SlotHeader(seq=0, epoch=0, batch=1, channels=2, frames=3, sample_rate=16000)
    write_slot(path, GEOMETRY, 0, header, [3], [2], [0], np.full((1, 2, 3), 0.25))
    info = stream_info(shm_name, GEOMETRY, [ItemInfo("/a.wav", 2, None)])
    with Ring(shm_name, GEOMETRY, mono=False) as ring:
        owned = SlotBatches(ring, info, None, texts=False, copy=True).make(0)
        view = SlotBatches(ring, info, None, texts=False, copy=False).make(0)
        write_slot(path, GEOMETRY, 0, header, [3], [2], [0], np.zeros((1, 2, 3)))
        assert owned.audio.sum() == 1.5 and view.audio.sum() == 0.0
        quiet = dataclasses.replace(owned, audio=owned.audio * 0)
        assert quiet.paths == ["/a.wav"] and len(quiet) == 1 and quiet.audio.sum() == 0.0
        back = pickle.loads(pickle.dumps(owned))
        assert type(back) is Batch and back.paths == ["/a.wav"]
        assert back.lengths.tolist() == [3] and back.audio.sum() == 1.5


@pytest.mark.parametrize("use_torch", [False, True])
def test_an_empty_batch_has_empty_fields(shm_name: str, use_torch: bool) -> None:
    torch = optional_torch(use_torch)
    path = make_ring_file(shm_name, GEOMETRY)
    header = SlotHeader(seq=0, epoch=0, batch=0, channels=2, frames=0, sample_rate=16000)
    write_slot(path, GEOMETRY, 0, header, [], [], [], np.zeros(0))
    with Ring(shm_name, GEOMETRY, mono=False) as ring:
        batches = SlotBatches(
            ring, stream_info(shm_name, GEOMETRY, []), torch, texts=False, copy=False
        )
        batch = batches.make(0)
        assert len(batch) == 0 and tuple(batch.audio.shape) == (0, 2, 0)
        assert as_np(batch.lengths).dtype == as_np(batch.labels).dtype == np.int64
        assert as_np(batch.indices).tolist() == [] and batch.paths == []
        batches.close()
