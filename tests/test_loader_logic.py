"""Loader logic that needs no daemon: datasets, labels, ranks, options and resume state."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from audiodecode import AudioDataLoader
from audiodecode._batch import text_labels
from audiodecode._manifest import AUDIO_EXTENSIONS
from audiodecode._protocol import (
    CropMode,
    Dataset,
    ItemInfo,
    OnError,
    Quality,
    RingGeometry,
    StreamInfo,
)
from audiodecode.loader import distributed_rank, map_labels, resolve_dataset


def test_string_labels_become_sorted_class_ids() -> None:
    ids, classes = map_labels(["dog", "cat", "dog", "bird"], 4)
    assert classes == ["bird", "cat", "dog"]
    assert ids == [2, 1, 2, 0]
    assert map_labels([3, -1, np.int64(7)], 3) == ([3, -1, 7], [])
    assert map_labels(np.array([1, 2]), 2) == ([1, 2], [])
    assert map_labels(None, 5) == (None, [])
    with pytest.raises(ValueError, match="2 labels for 3 files"):
        map_labels([1, 2], 3)
    with pytest.raises(TypeError, match="all integers or all strings"):
        map_labels([1, "a"], 2)
    with pytest.raises(TypeError):
        map_labels([True, False], 2)


def test_datasets_from_files_manifests_and_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    files = resolve_dataset(["a.wav", Path("sub/b.flac")], None)
    assert files == Dataset.Files(paths=[str(tmp_path / "a.wav"), str(tmp_path / "sub/b.flac")])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/b.flac").touch()
    for name in ("m.jsonl", "M.JSON"):
        (tmp_path / name).write_text('{"audio_filepath": "sub/b.flac"}\n')
    (tmp_path / "m.csv").write_text("path,label\nsub/b.flac,1\n")
    (tmp_path / "m.tsv").write_text("audio\tlabel\nsub/b.flac\t1\n")
    for name in ("m.jsonl", "m.csv", "M.JSON", "m.tsv"):
        got = resolve_dataset(name, "text")
        assert got == Dataset.Manifest(path=str(tmp_path / name), label_field="text")
    assert resolve_dataset(".", None) == Dataset.Directory(path=str(tmp_path))
    with pytest.raises(ValueError, match="expected a directory, a manifest"):
        resolve_dataset("clip.wav", None)


def test_loader_options_map_to_the_stream_spec(tmp_path: Path) -> None:
    loader = AudioDataLoader(
        [tmp_path / "a.wav", tmp_path / "b.wav"],
        labels=["y", "x"],
        batch_size=8,
        target_sr=22050,
        mono=False,
        crop="start",
        on_error="raise",
        quality="vhq",
        max_seconds=2,
        pad_to_max=True,
        rank=1,
        world_size=2,
        seed=9,
        prefetch=3,
    )
    assert loader.classes == ["x", "y"] and loader.class_to_idx == {"x": 0, "y": 1}
    spec = loader._spec()
    assert spec.dataset == Dataset.Files(
        paths=[str(tmp_path / "a.wav"), str(tmp_path / "b.wav")], labels=[1, 0]
    )
    assert (spec.sample_rate, spec.mono, spec.channels, spec.batch_size) == (22050, False, 2, 8)
    assert spec.crop == CropMode.START and spec.on_error == OnError.RAISE
    assert spec.quality == Quality.VHQ and spec.max_seconds == 2.0 and spec.pad_to_max
    assert (spec.rank, spec.world_size, spec.seed, spec.prefetch) == (1, 2, 9, 3)
    assert AudioDataLoader(["a.wav"], mono=False, channels=6)._spec().channels == 6


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"crop": "middle"}, "crop must be one of random, start"),
        ({"on_error": "ignore"}, "on_error must be one of skip, raise"),
        ({"quality": "best"}, "quality must be one of fast, hq, vhq"),
        ({"mono": True, "channels": 2}, "mono=True gives one channel"),
        ({"pad_to_max": True}, "pad_to_max needs max_seconds"),
        ({"rank": 2, "world_size": 2}, "rank 2 outside world_size 2"),
    ],
)
def test_bad_options(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AudioDataLoader(["a.wav"], **kwargs)


@pytest.mark.parametrize("fmt", ["auto", "webdataset"])
def test_tar_shards_compressed_other_than_by_gzip_are_refused_by_name(fmt: str) -> None:
    with pytest.raises(ValueError, match=r"train-\{0..3\}\.tar\.zst: only plain and gzip"):
        AudioDataLoader("s3://b/train-{0..3}.tar.zst", format=fmt)
    with pytest.raises(ValueError, match=r"b\.tar\.xz: only plain .* decompress"):
        AudioDataLoader(["a.tar", "b.tar.xz"], format="webdataset")
    gzipped = ["s3://b/train-{0..3}.tar.gz", "s3://b/more.TGZ"]
    assert AudioDataLoader(gzipped)._spec().dataset == Dataset.Shards(
        format="webdataset", sources=gzipped, label_field=None
    )


def test_a_list_of_tar_shards_is_a_webdataset_named_without_queries() -> None:
    signed = "https://h/train-0001.tar?X-Amz-Signature=ab%2F&X-Amz-Expires=60"
    loader = AudioDataLoader(["s3://b/train-0000.tar", signed])
    assert loader._spec().dataset == Dataset.Shards(
        format="webdataset", sources=["s3://b/train-0000.tar", signed], label_field=None
    )
    with pytest.raises(ValueError, match=r"a\.tar is a tar shard among other files"):
        AudioDataLoader(["s3://b/a.wav", "s3://b/a.tar"])
    with pytest.raises(ValueError, match="only plain and gzip-compressed tar shards"):
        AudioDataLoader(["https://h/a.tar.bz2?sig=1"], format="webdataset")
    manifest = "https://h/train.jsonl?sig=1"
    assert AudioDataLoader(manifest)._spec().dataset == Dataset.Manifest(manifest, None)


def test_labels_need_a_file_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels can only be given with a list of files"):
        AudioDataLoader(tmp_path, labels=[1])


def test_from_manifest_defaults_to_text_labels(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav", "text": "hi"}\n')
    loader = AudioDataLoader.from_manifest(tmp_path / "m.jsonl", batch_size=4)
    assert loader._spec().dataset == Dataset.Manifest(str(tmp_path / "m.jsonl"), "text")
    assert loader.batch_size == 4


def test_rank_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed_rank() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed_rank() == (2, 4)
    loader = AudioDataLoader(["a.wav"])
    assert (loader.rank, loader.world_size) == (2, 4)
    assert AudioDataLoader(["a.wav"], rank=0, world_size=1).world_size == 1


def test_state_dict_round_trip_and_set_epoch() -> None:
    loader = AudioDataLoader(["a.wav"], seed=5)
    assert loader.state_dict() == {"epoch": 0, "batches_done": 0, "seed": 5}
    loader.load_state_dict({"epoch": 3, "batches_done": 7, "seed": 11})
    assert loader.state_dict() == {"epoch": 3, "batches_done": 7, "seed": 11}
    spec = loader._spec()
    assert (spec.epoch, spec.start_batch, spec.seed) == (3, 7, 11)
    # The usual `for epoch in ...: loader.set_epoch(epoch)` keeps a loaded position...
    loader.set_epoch(3)
    assert loader._spec().start_batch == 7
    # ...and moving to another epoch starts it at its first batch.
    loader.set_epoch(4)
    assert loader.state_dict() == {"epoch": 4, "batches_done": 0, "seed": 11}
    assert loader._spec().start_batch == 0


def test_text_label_rule() -> None:
    ring = RingGeometry.new(1, 1, 1, 1, 16000)

    def info(items: list[ItemInfo], classes: list[str]) -> StreamInfo:
        return StreamInfo(1, "/x", ring, 1, items, classes)

    texts = [ItemInfo("/a", -1, "hello"), ItemInfo("/b", -1, None)]
    assert text_labels(info(texts, []))
    assert not text_labels(info([ItemInfo("/a", 0, "hello")], []))  # class ids win
    assert not text_labels(info([ItemInfo("/a", -1, "x")], ["c"]))
    assert not text_labels(info([ItemInfo("/a", -1, None)], []))


def test_cuda_needs_a_gpu() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="sees no CUDA device"):
        AudioDataLoader(["a.wav"], device="cuda:0")


def test_device_needs_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("audiodecode.loader.optional_torch", lambda: None)
    with pytest.raises(ValueError, match="needs torch"):
        AudioDataLoader(["a.wav"], device="cuda")
    assert AudioDataLoader([os.devnull]).torch is None


def test_the_client_knows_the_audio_extensions_the_daemon_scans_for() -> None:
    """``has_audio`` (which decides whether a path is a dataset directory) must pick up what
    the daemon's directory scan picks up: the two lists are one list kept twice."""
    source = Path(__file__).parents[1] / "daemon" / "src" / "decode" / "mod.rs"
    body = re.search(r"AUDIO_EXTENSIONS: &\[&str\] = &\[(.*?)\];", source.read_text(), re.DOTALL)
    assert body is not None, f"no AUDIO_EXTENSIONS in {source}"
    assert set(re.findall(r'"([^"]+)"', body.group(1))) == set(AUDIO_EXTENSIONS)
