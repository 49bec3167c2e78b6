"""WebDataset shards read natively by the daemon: shards written by ``webdataset``'s own
``ShardWriter``, local and behind a real S3-compatible server; every sample once per epoch
in a seeded shard-aware order, audio equal to ``load()`` of the original files, labels and
text from the samples' members, DDP ranks disjoint with equal batch counts on a shard count
the world size does not divide, exact mid-epoch resume, and damaged or missing shards as
per-item errors."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import audiodecode
import numpy as np
import pytest
from audiodecode import AudioDataLoader, Daemon
from conftest import tone, write_wav
from object_servers import HttpServer, S3Server

N_SAMPLES = 23
PER_SHARD = 5  # 5 shards: 5, 5, 5, 5, 3 samples


def wav_bytes(seconds: float, rate: int, freq: float, tmp: Path) -> bytes:
    path = tmp / f"{uuid.uuid4().hex}.wav"
    write_wav(path, tone(seconds, rate, freq), rate)
    return path.read_bytes()


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """Shards written by webdataset's ShardWriter; the originals by key."""
    wds = pytest.importorskip("webdataset")
    originals = tmp_path / "originals"
    originals.mkdir()
    out = tmp_path / "shards"
    out.mkdir()
    by_key: dict[str, Path] = {}
    with wds.ShardWriter(str(out / "train-%06d.tar"), maxcount=PER_SHARD, verbose=0) as sink:
        for i in range(N_SAMPLES):
            key = f"utt{i:04d}"
            rate = (16000, 22050)[i % 2]
            audio = wav_bytes(0.3 + 0.02 * i, rate, 200 + 30 * i, originals)
            (originals / f"{key}.wav").write_bytes(audio)
            by_key[key] = originals / f"{key}.wav"
            sink.write({"__key__": key, "wav": audio, "cls": i % 3, "txt": f"sample {i}"})
    return out, by_key


def pattern(root: Path | str, count: int = 5) -> str:
    return f"{root}/train-{{000000..{count - 1:06d}}}.tar"


def key_of(path: str) -> str:
    return path.rsplit("#", 1)[1].split(".", 1)[0]


@pytest.fixture
def private_daemon(binary: Path) -> Iterator[Daemon]:
    with Daemon(workers=2) as d:
        yield d


def test_every_sample_once_with_its_audio_labels_and_text(
    private_daemon: Daemon, dataset: tuple[Path, dict[str, Path]]
) -> None:
    root, originals = dataset
    loader = AudioDataLoader(pattern(root), batch_size=4, label_field="cls", seed=3)
    assert len(loader) == 6
    seen: list[str] = []
    for batch in loader:
        for k, path in enumerate(batch.paths):
            key = key_of(path)
            seen.append(key)
            expected, _ = audiodecode.load(originals[key], sr=16000)
            got = np.asarray(batch.audio[k][: int(batch.lengths[k])])
            np.testing.assert_array_equal(got, expected)
            assert int(batch.labels[k]) == int(key[3:]) % 3
    assert sorted(seen) == sorted(originals)
    # Seeded: the same order again for the same epoch; shards stay together in windows.
    again = [
        key_of(p) for b in AudioDataLoader(pattern(root), batch_size=4, seed=3) for p in b.paths
    ]
    assert again == seen
    texts = AudioDataLoader(pattern(root), batch_size=N_SAMPLES, label_field="txt", shuffle=False)
    [batch] = list(texts)
    assert [t for t in batch.labels] == [f"sample {int(key_of(p)[3:])}" for p in batch.paths]


def test_ranks_are_disjoint_complete_and_equal_on_uneven_shards(
    private_daemon: Daemon, dataset: tuple[Path, dict[str, Path]]
) -> None:
    root, originals = dataset
    world = 3  # 5 shards over 3 ranks
    per_rank = [
        [
            key_of(p)
            for b in AudioDataLoader(pattern(root), batch_size=2, rank=r, world_size=world)
            for p in b.paths
        ]
        for r in range(world)
    ]
    lengths = [
        len(AudioDataLoader(pattern(root), batch_size=2, rank=r, world_size=world))
        for r in range(world)
    ]
    assert len(set(lengths)) == 1, lengths
    assert all(len(keys) == len(per_rank[0]) for keys in per_rank)
    assert set().union(*map(set, per_rank)) == set(originals)
    shards = [{int(k[3:]) // PER_SHARD for k in keys} for keys in per_rank]
    for a in range(world):
        for b in range(a + 1, world):
            assert not shards[a] & shards[b], (a, b, shards)


def test_resume_mid_epoch_gives_exactly_the_remaining_batches(
    private_daemon: Daemon, dataset: tuple[Path, dict[str, Path]]
) -> None:
    root, _ = dataset
    whole = [list(b.paths) for b in AudioDataLoader(pattern(root), batch_size=3, seed=11)]
    first = AudioDataLoader(pattern(root), batch_size=3, seed=11)
    it = iter(first)
    done = [list(next(it).paths) for _ in range(3)]
    state = first.state_dict()
    del it
    resumed = AudioDataLoader(pattern(root), batch_size=3, seed=11)
    resumed.load_state_dict(state)
    rest = [list(b.paths) for b in resumed]
    assert done + rest == whole


def test_shards_behind_s3_give_the_local_batches(
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    binary: Path,
    dataset: tuple[Path, dict[str, Path]],
) -> None:
    root, _ = dataset
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    name = s3_server.bucket(f"t-{uuid.uuid4().hex[:12]}")
    for shard in sorted(root.glob("*.tar")):
        s3_server.put(name, f"wds/{shard.name}", shard)
    with Daemon(workers=2):
        common = {"batch_size": 4, "seed": 5, "max_seconds": 1.0, "pad_to_max": True}
        local = [
            (list(map(key_of, b.paths)), np.asarray(b.audio).copy())
            for b in AudioDataLoader(pattern(root), **common)
        ]
        remote_loader = AudioDataLoader(pattern(f"s3://{name}/wds"), label_field="cls", **common)
        remote = [(list(map(key_of, b.paths)), np.asarray(b.audio).copy()) for b in remote_loader]
        # Note [Directories of shards]: the prefix that holds them, as a directory or named
        # as a WebDataset source.
        prefixes = [
            [list(map(key_of, b.paths)) for b in AudioDataLoader(f"s3://{name}/wds/", **common)],
            [
                list(map(key_of, b.paths))
                for b in AudioDataLoader(f"s3://{name}/wds/", format="webdataset", **common)
            ],
        ]
    assert [k for k, _ in remote] == [k for k, _ in local]
    for (_, a), (_, b) in zip(local, remote):
        np.testing.assert_array_equal(a, b)
    assert prefixes == [[k for k, _ in local]] * 2


def test_a_shard_changed_between_epochs_is_read_anew(
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    binary: Path,
    tmp_path: Path,
) -> None:
    wds = pytest.importorskip("webdataset")
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    name = s3_server.bucket(f"t-{uuid.uuid4().hex[:12]}")

    def shard(freq: float) -> Path:
        path = tmp_path / f"shard-{freq}.tar"
        with wds.TarWriter(str(path)) as sink:
            sink.write({"__key__": "a", "wav": wav_bytes(0.5, 16000, freq, tmp_path)})
        return path

    first, second = shard(300), shard(900)
    s3_server.put(name, "s.tar", first)
    with Daemon(workers=2):
        loader = AudioDataLoader(f"s3://{name}/s.tar", batch_size=1, cache=True)
        [epoch0] = [np.asarray(b.audio).copy() for b in loader]
        time.sleep(1.2)  # past the window in which a checked copy is trusted
        s3_server.put(name, "s.tar", second)
        [epoch1] = [np.asarray(b.audio).copy() for b in loader]
    with tarfile.open(second) as tar:
        member = tar.extractfile("a.wav")
        assert member is not None
        (tmp_path / "second.wav").write_bytes(member.read())
    expected, _ = audiodecode.load(tmp_path / "second.wav")
    np.testing.assert_array_equal(epoch1[0], expected)
    assert not np.array_equal(epoch0, epoch1)


def test_damaged_member_truncated_archive_and_missing_shard_are_item_errors(
    private_daemon: Daemon, dataset: tuple[Path, dict[str, Path]]
) -> None:
    root, originals = dataset
    # Shard 1: one sample's audio replaced by garbage.
    bad = root / "train-000001.tar"
    with tarfile.open(bad) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(bad, "w") as tar:
        for member, data in members:
            if member.name == "utt0006.wav":
                data = b"RIFF" + bytes(range(256)) * 4
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    # Shard 4: cut in the middle of its second sample.
    cut = root / "train-000004.tar"
    cut.write_bytes(cut.read_bytes()[: 512 * 3 + 9000])
    # Shard 5 is named by the pattern but does not exist.
    loader = AudioDataLoader(pattern(root, count=6), batch_size=4, on_error="skip", shuffle=False)
    served = {key_of(p) for b in loader for p in b.paths}
    skipped = dict(loader.skipped)
    assert f"{root}/train-000001.tar#utt0006.wav" in skipped
    assert f"{root}/train-000005.tar#" in skipped
    assert "not found" in skipped[f"{root}/train-000005.tar#"]
    damaged = [p for p in skipped if p.startswith(f"{root}/train-000004.tar#")]
    assert damaged and "damaged" in skipped[damaged[0]], skipped
    assert "utt0006" not in served
    assert {f"utt{i:04d}" for i in range(20) if i != 6} <= served
    assert served <= set(originals)
    with pytest.raises(audiodecode.AudioDecodeError, match=r"train-00000[15]\.tar#"):
        list(AudioDataLoader(pattern(root, count=6), batch_size=4, on_error="raise", shuffle=False))


def shard_cli(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "shard", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_audiodecode_shard_packs_what_the_loader_and_webdataset_read_back(
    private_daemon: Daemon, binary: Path, tmp_path: Path
) -> None:
    wds = pytest.importorskip("webdataset")
    # A class directory, stored as the original bytes, in shards of about 20 kB.
    classes = tmp_path / "classes"
    originals = {}
    for i in range(6):
        path = classes / ("dog", "cat")[i % 2] / f"c{i}.wav"
        write_wav(path, tone(0.2 + 0.05 * i, 16000, 300 + 50 * i), 16000)
        originals[str(path)] = path
    (classes / "cat" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "packed"
    done = shard_cli(binary, str(classes), "--out", str(out), "--shard-size", "20KB")
    assert done.returncode == 1, done.stderr  # the broken file fails, named
    assert "broken.wav" in done.stderr
    shards = sorted(out.glob("shard-*.tar"))
    assert len(shards) >= 2
    assert not list(out.glob("*.partial"))
    # A second run into the same directory would leave this run's shards beside its own.
    again = shard_cli(binary, str(classes / "dog"), "--out", str(out), "-q")
    assert again.returncode == 1 and "holds shards of an earlier run" in again.stderr
    assert "--overwrite" in again.stderr and sorted(out.glob("shard-*.tar")) == shards
    remote = shard_cli(binary, str(classes), "--out", "s3://bucket/prefix/")
    assert remote.returncode == 1 and "local directory" in remote.stderr, remote.stderr
    done = shard_cli(binary, str(classes), "--out", str(out), "--shard-size", "20KB", "--overwrite")
    assert done.returncode == 1 and sorted(out.glob("shard-*.tar")) == shards, done.stderr
    loader = AudioDataLoader(
        f"{out}/shard-{{000000..{len(shards) - 1:06d}}}.tar", batch_size=6, label_field="cls"
    )
    assert loader.classes == []  # .cls members hold the class ids
    [batch] = list(loader)
    for k in range(len(batch)):
        ours = np.asarray(batch.audio[k][: int(batch.lengths[k])])
        matches = [
            p
            for p in originals.values()
            if len(audiodecode.load(p)[0]) == len(ours)
            and np.array_equal(audiodecode.load(p)[0], ours)
        ]
        assert len(matches) == 1
        assert int(batch.labels[k]) == (0 if matches[0].parent.name == "cat" else 1)
    # webdataset reads our shards: keys, members and the metadata.
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False))
    assert len(samples) == 6
    assert {"__key__", "wav", "cls", "json"} <= set(samples[0])
    assert json.loads(samples[0]["json"])["audio_filepath"] in originals

    # A labeling manifest, re-encoded at 16 kHz as FLAC: the transcripts come along.
    manifest = tmp_path / "labels.jsonl"
    lines = []
    for i in range(3):
        path = tmp_path / f"speech{i}.wav"
        write_wav(path, tone(0.4, 22050, 400 + 100 * i, amp=0.3), 22050)
        lines.append(json.dumps({"audio_filepath": str(path), "text": f"words {i}"}))
    manifest.write_text("\n".join(lines) + "\n")
    flac_out = tmp_path / "flac"
    done = shard_cli(binary, str(manifest), "--out", str(flac_out), "--sr", "16000", "-q")
    assert done.returncode == 0, done.stderr
    [batch] = list(
        AudioDataLoader(
            f"{flac_out}/shard-000000.tar", batch_size=3, label_field="txt", shuffle=False
        )
    )
    assert list(batch.labels) == ["words 0", "words 1", "words 2"]
    for k in range(3):
        expected, _ = audiodecode.load(tmp_path / f"speech{k}.wav", sr=16000)
        got = np.asarray(batch.audio[k][: int(batch.lengths[k])])
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= 1.0 / 32768 + 1e-6


def test_remote_shards_with_index_sidecars_are_read_by_ranged_gets(
    private_daemon: Daemon,
    binary: Path,
    http_server: HttpServer,
    dataset: tuple[Path, dict[str, Path]],
) -> None:
    """Note [Shard index sidecars]: shards written by webdataset's ShardWriter, given
    sidecars by ``audiodecode shard --index``, behind an HTTP server: members are read by
    ranged GETs of blocks, no shard is fetched whole, the batches are the local ones. A shard without
    a sidecar is fetched whole as before; a sidecar from another version of its shard is
    an error naming it, never wrong audio."""
    root, _ = dataset
    shards = sorted(root.glob("*.tar"))
    indexed = shard_cli(binary, "--index", *map(str, shards))
    assert indexed.returncode == 0, indexed.stderr
    served_index = http_server.root / ".audiodecode-index"
    served_index.mkdir()
    for path in shards:
        (http_server.root / path.name).write_bytes(path.read_bytes())
    for path in (root / ".audiodecode-index").glob("*.tar.idx"):
        (served_index / path.name).write_bytes(path.read_bytes())
    (served_index / "train-000004.tar.idx").unlink()  # this shard is fetched whole
    common = {"batch_size": 4, "seed": 5, "max_seconds": 0.5, "pad_to_max": True}

    def batches(source: str) -> list[tuple[list[str], np.ndarray]]:
        loader = AudioDataLoader(source, label_field="cls", **common)
        return [(list(map(key_of, b.paths)), np.asarray(b.audio).copy()) for b in loader]

    local = batches(pattern(root))
    remote = batches(pattern(http_server.base))
    assert [k for k, _ in remote] == [k for k, _ in local]
    for (_, a), (_, b) in zip(local, remote):
        np.testing.assert_array_equal(a, b)
    tar_gets = [(p, r) for m, p, r in http_server.log if m == "GET" and p.endswith(".tar")]
    whole = sorted(p for p, r in tar_gets if r is None)
    assert whole == ["/train-000004.tar"], tar_gets
    # The indexed shards come in ranged GETs of blocks, each serving several members.
    ranged = [p for p, r in tar_gets if r is not None]
    assert sorted(set(ranged)) == [f"/train-{i:06d}.tar" for i in range(4)], tar_gets
    assert len(ranged) < N_SAMPLES - PER_SHARD
    # A stream checks each shard's version once; a cropped member (an offset into it)
    # makes no request of its own.
    heads = [p for m, p, _ in http_server.log if m == "HEAD" and p.endswith(".tar")]
    assert len(heads) <= 2 * len(shards), heads

    # A sidecar left from another version of its shard: offsets shifted, so no member's
    # header is where it says.
    (http_server.root / "other.tar").write_bytes(shards[1].read_bytes())
    sidecar = json.loads((served_index / "train-000001.tar.idx").read_text())
    sidecar["members"] = [[n, o + 512, s] for n, o, s in sidecar["members"]]
    (served_index / "other.tar.idx").write_text(json.dumps(sidecar))
    # Its labels are read when its stream opens: that fails, naming the sidecar.
    with pytest.raises(audiodecode.BadRequestError, match=r"other\.tar\.idx does not match"):
        list(AudioDataLoader(f"{http_server.base}/other.tar", batch_size=8, label_field="cls"))


def test_a_remote_shard_without_a_sidecar_is_fetched_whole_once_per_version(
    binary: Path,
    http_server: HttpServer,
    dataset: tuple[Path, dict[str, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Note [Learnt shard indexes]: shards behind an HTTP server with no sidecars are
    fetched whole by the first daemon that streams them; a restarted daemon reads them by
    ranged GETs from the indexes the first one kept, with the same batches. A shard that
    changed is fetched and learnt again; an empty setting keeps nothing."""
    root, _ = dataset
    shards = sorted(root.glob("*.tar"))
    for path in shards:
        (http_server.root / path.name).write_bytes(path.read_bytes())
    indexes = tmp_path / "indexes"
    common = {"batch_size": 4, "seed": 5, "max_seconds": 0.5, "pad_to_max": True}
    names = [f"/{p.name}" for p in shards]

    def streamed(
        index_cache: Path | bool = indexes,
    ) -> tuple[list[tuple[list[str], np.ndarray]], list[str], list[str]]:
        """One epoch from a fresh daemon: its batches, and the shards fetched whole and by
        ranged GETs."""
        http_server.clear_log()
        with Daemon(workers=2, index_cache=index_cache):
            loader = AudioDataLoader(pattern(http_server.base), label_field="cls", **common)
            batches = [(list(map(key_of, b.paths)), np.asarray(b.audio).copy()) for b in loader]
        gets = [(p, r) for m, p, r in http_server.log if m == "GET" and p.endswith(".tar")]
        whole = sorted({p for p, r in gets if r is None})
        ranged = sorted({p for p, r in gets if r is not None})
        return batches, whole, ranged

    first, whole, ranged = streamed()
    assert whole == names and ranged == []
    assert len(list(indexes.glob("*.idx"))) == len(shards)
    again, whole, ranged = streamed()
    assert whole == [] and ranged == names
    assert [k for k, _ in again] == [k for k, _ in first]
    for (_, a), (_, b) in zip(first, again):
        np.testing.assert_array_equal(a, b)

    # Learnt indexes that do not match their shards (a shard rewritten at its size within
    # its version's resolution, offsets shifted here): each is forgotten at its first
    # read, the shard fetched and indexed again, and the batches are still the shards'.
    for kept in indexes.glob("*.idx"):
        learnt = json.loads(kept.read_text())
        learnt["members"] = [[n, o + 512, s] for n, o, s in learnt["members"]]
        kept.write_text(json.dumps(learnt))
    relearnt, whole, _ = streamed()
    assert whole == names
    assert [k for k, _ in relearnt] == [k for k, _ in first]
    for (_, a), (_, b) in zip(first, relearnt):
        np.testing.assert_array_equal(a, b)
    _, whole, ranged = streamed()
    assert whole == [] and ranged == names

    # Shard 1 now holds shard 0's samples (another size): fetched whole, learnt again.
    (http_server.root / shards[1].name).write_bytes(shards[0].read_bytes())
    changed, whole, ranged = streamed()
    assert whole == [names[1]] and ranged == sorted(set(names) - {names[1]})
    keys = [k for batch, _ in changed for k in batch]
    assert sorted(keys) == sorted(
        [k for batch, _ in first for k in batch if not 5 <= int(k[3:]) < 10]
        + [f"utt{i:04d}" for i in range(5)]
    )
    _, whole, _ = streamed()
    assert whole == []

    for kept in indexes.glob("*.idx"):
        kept.unlink()
    monkeypatch.setenv("AUDIODECODE_INDEX_CACHE", str(indexes))  # overridden by the argument
    for _ in range(2):
        _, whole, ranged = streamed(index_cache=False)
        assert whole == names and ranged == []
    assert list(indexes.glob("*.idx")) == []

    # With a cache directory the shards' copies are kept and read, learnt indexes or not.
    monkeypatch.setenv("AUDIODECODE_OBJECT_CACHE", str(tmp_path / "objects"))
    _, whole, ranged = streamed()
    assert whole == sorted(set(names)) and ranged == []
    assert len(list(indexes.glob("*.idx"))) == len(shards)
    disk, whole, ranged = streamed()
    assert whole == [] and ranged == []
    assert [k for k, _ in disk] == [k for k, _ in changed]


def test_signed_shard_urls_and_servers_without_ranges_give_the_local_batches(
    binary: Path,
    http_server: HttpServer,
    dataset: tuple[Path, dict[str, Path]],
    tmp_path: Path,
) -> None:
    """A list of signed shard URLs (queries, GET only) is a WebDataset: the first daemon
    fetches each shard whole with its signature, a restarted one reads members by ranged
    GETs through the indexes it learnt. A server that ignores ``Range`` then gets whole
    GETs, once per shard, and the batches stay the local ones."""
    root, _ = dataset
    shards = sorted(root.glob("*.tar"))
    for path in shards:
        (http_server.root / path.name).write_bytes(path.read_bytes())
    signed = [http_server.signed_url(p.name) for p in shards]
    common = {"batch_size": 4, "seed": 5, "max_seconds": 0.5, "pad_to_max": True}

    def batches(source: str | list[str]) -> list[tuple[list[str], np.ndarray]]:
        with Daemon(workers=2, index_cache=tmp_path / "indexes"):
            loader = AudioDataLoader(source, label_field="cls", **common)
            return [(list(map(key_of, b.paths)), np.asarray(b.audio).copy()) for b in loader]

    local = batches(pattern(root))

    def same_as_local(remote: list[tuple[list[str], np.ndarray]]) -> None:
        assert [k for k, _ in remote] == [k for k, _ in local]
        for (_, a), (_, b) in zip(local, remote):
            np.testing.assert_array_equal(a, b)

    def tar_gets() -> list[str | None]:
        """Ranges of the GETs of shards, but for the one-byte GETs that stand for HEADs."""
        gets = [r for m, p, r in http_server.log if m == "GET" and p.endswith(".tar")]
        return [r for r in gets if r != "bytes=0-0"]

    same_as_local(batches(signed))
    assert {m for m, *_ in http_server.log} == {"GET"}
    assert tar_gets() == [None] * len(shards)
    http_server.clear_log()
    same_as_local(batches(signed))
    assert tar_gets() and None not in tar_gets()
    http_server.ranges = False
    http_server.clear_log()
    same_as_local(batches(signed))
    # A ranged attempt shows the server sends whole objects; a signed URL's version then
    # comes from a whole GET's headers (its body left), and its bytes from one more.
    assert tar_gets().count(None) <= 2 * len(shards), http_server.log


def test_remote_shards_larger_than_the_cache_allows_are_streamed_to_be_indexed(
    binary: Path,
    http_server: HttpServer,
    dataset: tuple[Path, dict[str, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Note [Large remote shards streamed to be indexed]: with an object cache of less than
    eight times a shard (and no sidecars, no learnt indexes), each shard is fetched once,
    through the tar reader, and its members are then read by ranged GETs: the batches are
    the local ones. (A shard over the cache's bound used to be refused.)"""
    root, _ = dataset
    shards = sorted(root.glob("*.tar"))
    for path in shards:
        (http_server.root / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("AUDIODECODE_INDEX_CACHE", "")
    cache_bytes = min(p.stat().st_size for p in shards) - 1  # every shard over the bound
    common = {"batch_size": 4, "seed": 5, "max_seconds": 0.5, "pad_to_max": True}
    with Daemon(workers=2, object_cache_bytes=cache_bytes):
        local = [
            (list(map(key_of, b.paths)), np.asarray(b.audio).copy())
            for b in AudioDataLoader(pattern(root), label_field="cls", **common)
        ]
        http_server.clear_log()
        # One shard's stream to its indexer breaks once: the HTTP client resumes it.
        http_server.drop(shards[2].name, after=5000, times=1)
        remote = [
            (list(map(key_of, b.paths)), np.asarray(b.audio).copy(), list(b.labels))
            for b in AudioDataLoader(pattern(http_server.base), label_field="cls", **common)
        ]
    assert [k for k, _, _ in remote] == [k for k, _ in local]
    for (_, a), (_, b, _) in zip(local, remote):
        np.testing.assert_array_equal(a, b)
    assert [int(k[3:]) % 3 for keys, _, _ in remote for k in keys] == [
        int(label) for _, _, labels in remote for label in labels
    ]
    gets = [(p, r) for m, p, r in http_server.log if m == "GET" and p.endswith(".tar")]
    whole = sorted(p for p, r in gets if r is None)
    assert whole == [f"/{p.name}" for p in shards], gets  # once each, to be indexed
    assert sorted({p for p, r in gets if r is not None}) == whole
    assert (f"/{shards[2].name}", f"bytes=5000-{shards[2].stat().st_size - 1}") in gets


def test_remote_shards_are_indexed_in_place_for_ranged_reads(
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    binary: Path,
    http_server: HttpServer,
    dataset: tuple[Path, dict[str, Path]],
) -> None:
    """``audiodecode shard --index 's3://…/train-{…}.tar'`` streams each remote shard once
    and writes its sidecar beside it in the bucket: the same sidecar ``--index`` writes for
    the local copy, so the loader then reads members by ranged GETs. A shard that is not
    there or not a tar is an error naming it; the other shards still get their sidecars. A
    server that takes no writes (plain HTTP) is an error naming the sidecar's URL."""
    root, _ = dataset
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    name = s3_server.bucket(f"t-{uuid.uuid4().hex[:12]}")
    shards = sorted(root.glob("*.tar"))
    for shard in shards[:4]:
        s3_server.put(name, f"wds/{shard.name}", shard)
    s3_server.put(name, "wds/train-000004.tar", b"not a tar archive at all" * 40)
    remote = shard_cli(binary, "--index", "-j", "2", pattern(f"s3://{name}/wds", 6))
    assert remote.returncode == 1
    assert f"s3://{name}/wds/train-000004.tar: not a readable tar" in remote.stderr
    assert f"s3://{name}/wds/train-000005.tar: not found" in remote.stderr
    local = shard_cli(binary, "--index", *map(str, shards))
    assert local.returncode == 0, local.stderr
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=name, Prefix="wds/.audiodecode-index/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    assert keys == [f"wds/.audiodecode-index/{s.name}.idx" for s in shards[:4]]
    for shard in shards[:4]:
        sidecar = client.get_object(Bucket=name, Key=f"wds/.audiodecode-index/{shard.name}.idx")
        theirs = (root / ".audiodecode-index" / f"{shard.name}.idx").read_bytes()
        assert json.loads(sidecar["Body"].read()) == json.loads(theirs)
    s3_server.put(name, "wds/train-000004.tar", shards[4])
    with Daemon(workers=2):
        common = {"batch_size": 4, "seed": 5, "max_seconds": 1.0, "pad_to_max": True}
        local_batches = [
            np.asarray(b.audio).copy() for b in AudioDataLoader(pattern(root), **common)
        ]
        remote_batches = [
            np.asarray(b.audio).copy()
            for b in AudioDataLoader(pattern(f"s3://{name}/wds"), label_field="cls", **common)
        ]
    assert len(remote_batches) == len(local_batches)
    for a, b in zip(local_batches, remote_batches):
        np.testing.assert_array_equal(a, b)

    (http_server.root / shards[0].name).write_bytes(shards[0].read_bytes())
    served = shard_cli(binary, "--index", http_server.url(shards[0].name))
    assert served.returncode == 1
    assert f"{http_server.base}/.audiodecode-index/{shards[0].name}.idx" in served.stderr


def test_cls_labels_mixing_class_ids_and_names_are_refused(
    private_daemon: Daemon, tmp_path: Path
) -> None:
    """``.cls`` members that are partly integers (``3``) and partly class names (``dog``)
    cannot be given ids that mean one thing: the stream is refused, naming a sample of
    each, instead of training ``dog`` under an id an integer label already means. All
    names, or all integers, read as before."""

    def shard(name: str, labels: list[str]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w") as tar:
            for i, label in enumerate(labels):
                for field, data in (
                    ("wav", wav_bytes(0.2, 16000, 300 + 40 * i, tmp_path)),
                    ("cls", label.encode()),
                ):
                    member = tarfile.TarInfo(f"s{i}.{field}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
        return path

    mixed = [shard("mixed-0.tar", ["0", "1"]), shard("mixed-1.tar", ["dog", "3"])]
    loader = AudioDataLoader([str(p) for p in mixed], batch_size=4, label_field="cls")
    with pytest.raises(audiodecode.BadRequestError) as caught:
        list(loader)
    message = str(caught.value)
    assert "mix class ids and class names" in message, message
    assert f"{mixed[0]}#s0.wav has label 0" in message, message
    assert f'{mixed[1]}#s0.wav has label "dog"' in message, message

    names = shard("names.tar", ["dog", "cat", "dog"])
    ints = shard("ints.tar", ["3", "0", "3"])
    [batch] = list(AudioDataLoader(str(names), batch_size=3, shuffle=False, label_field="cls"))
    assert list(batch.labels) == [1, 0, 1]
    [batch] = list(AudioDataLoader(str(ints), batch_size=3, shuffle=False, label_field="cls"))
    assert list(batch.labels) == [3, 0, 3]


def test_shards_named_by_file_urls_are_read_as_local_paths(
    private_daemon: Daemon, binary: Path, dataset: tuple[Path, dict[str, Path]]
) -> None:
    """A brace pattern of ``file://`` shards is the local pattern: to the loader and to
    ``audiodecode shard --index``."""
    root, _ = dataset
    local = AudioDataLoader(pattern(root), batch_size=4, shuffle=False, label_field="cls")
    as_url = AudioDataLoader(
        "file://" + pattern(root), batch_size=4, shuffle=False, label_field="cls"
    )
    assert [list(b.paths) for b in as_url] == [list(b.paths) for b in local]
    indexed = shard_cli(binary, "--index", "file://localhost" + pattern(root))
    assert indexed.returncode == 0, indexed.stderr
    assert len(list((root / ".audiodecode-index").glob("*.tar.idx"))) == 5


def test_members_out_of_key_order_and_links_form_their_samples(
    private_daemon: Daemon, tmp_path: Path
) -> None:
    """A shard made as `tar cf s.tar *.wav *.txt` holds every audio member before every
    transcript; each transcript still labels its own audio. A hard link (a file met twice
    when archiving) is a sample with its target's audio."""
    audio = {
        k: wav_bytes(0.2 + 0.05 * i, 16000, 300 + 100 * i, tmp_path) for i, k in enumerate("abc")
    }
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for key, data in audio.items():
            info = tarfile.TarInfo(f"{key}.wav")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("d.wav")
        link.type = tarfile.LNKTYPE
        link.linkname = "a.wav"
        tar.addfile(link)
        for key in "abcd":
            text = f"words of {key}".encode()
            info = tarfile.TarInfo(f"{key}.txt")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    loader = AudioDataLoader(
        str(shard), format="webdataset", label_field="txt", batch_size=4, shuffle=False
    )
    [batch] = list(loader)
    assert [key_of(p) for p in batch.paths] == ["a", "b", "c", "d"]
    assert list(batch.labels) == [f"words of {k}" for k in "abcd"]
    for k, key in enumerate("abcd"):
        expected, _ = audiodecode.load(shard_member(audio["a" if key == "d" else key], tmp_path))
        np.testing.assert_array_equal(np.asarray(batch.audio[k][: int(batch.lengths[k])]), expected)


def shard_member(data: bytes, tmp: Path) -> Path:
    path = tmp / f"{uuid.uuid4().hex}.wav"
    path.write_bytes(data)
    return path


def test_gzip_compressed_shards_give_the_plain_batches_local_and_remote(
    binary: Path,
    http_server: HttpServer,
    dataset: tuple[Path, dict[str, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Note [Compressed shards]: `.tar.gz` shards (gzip of the plain ones, as `gzip` or
    `tar czf` write them, and as webdataset's ShardWriter writes them) read as the plain
    shards do, local and over HTTP, each remote one (a dropped transfer resumed)
    fetched once; a shard cut short, one that is not gzip, and one that inflates past the
    object cache's bound are per-shard errors that say so."""
    root, originals = dataset
    zipped = root.parent / "zipped"
    zipped.mkdir()
    for shard in sorted(root.glob("*.tar")):
        packed = gzip.compress(shard.read_bytes(), compresslevel=1)
        (zipped / f"{shard.name}.gz").write_bytes(packed)
        (http_server.root / f"{shard.name}.gz").write_bytes(packed)
    # The same samples as webdataset's ShardWriter compresses them (`%06d.tar.gz`).
    wds = pytest.importorskip("webdataset")
    written = root.parent / "written"
    written.mkdir()
    with wds.ShardWriter(str(written / "train-%06d.tar.gz"), maxcount=PER_SHARD, verbose=0) as w:
        for key, original in sorted(originals.items()):
            w.write({"__key__": key, "wav": original.read_bytes(), "cls": int(key[3:]) % 3})
    monkeypatch.setenv("AUDIODECODE_INDEX_CACHE", "")
    common = {"batch_size": 4, "seed": 5, "max_seconds": 1.0, "pad_to_max": True}

    def batches(source: str, **options: object) -> list[tuple[list[str], np.ndarray, list]]:
        loader = AudioDataLoader(source, label_field="cls", **common, **options)  # type: ignore[arg-type]
        return [
            (list(map(key_of, b.paths)), np.asarray(b.audio).copy(), list(b.labels)) for b in loader
        ]

    with Daemon(workers=2):
        plain = batches(pattern(root))
        local = batches(pattern(zipped) + ".gz")
        by_webdataset = batches(pattern(written) + ".gz")
        http_server.clear_log()
        # One connection dropped part-way: the rest of that shard comes by a ranged GET
        # (the HTTP client resumes a broken body), then the whole is inflated.
        http_server.drop("train-000003.tar.gz", after=3000, times=1)
        remote = batches(pattern(http_server.base) + ".gz")
        gets = sorted(p for m, p, r in http_server.log if m == "GET" and r is None)
        resumed = [r for m, p, r in http_server.log if r is not None]
    for got in (local, remote, by_webdataset):
        assert [k for k, _, _ in got] == [k for k, _, _ in plain]
        for (_, a, la), (_, b, lb) in zip(plain, got):
            np.testing.assert_array_equal(a, b)
            assert la == lb
    assert gets == [f"/{p.name}.gz" for p in sorted(root.glob("*.tar"))]
    assert resumed == ["bytes=3000-" + str((zipped / "train-000003.tar.gz").stat().st_size - 1)]
    # A shard whose every transfer breaks is unreachable (not a local failure).
    http_server.drop("train-000003.tar.gz", after=3000)
    with Daemon(workers=2):
        broken = AudioDataLoader(pattern(http_server.base) + ".gz", on_error="skip")
        assert sum(len(b.paths) for b in broken) == N_SAMPLES - PER_SHARD
        why = dict(broken.skipped)[f"{http_server.base}/train-000003.tar.gz#"]
    assert "unreachable: transfer failed after" in why, why

    # Damage: shard 1 cut in half, shard 2 the plain tar under a .gz name.
    whole = (zipped / "train-000001.tar.gz").read_bytes()
    (zipped / "train-000001.tar.gz").write_bytes(whole[: len(whole) // 2])
    (zipped / "train-000002.tar.gz").write_bytes((root / "train-000002.tar").read_bytes())
    biggest = max(p.stat().st_size for p in root.glob("*.tar"))
    with Daemon(workers=2, object_cache_bytes=biggest):
        loader = AudioDataLoader(
            pattern(zipped) + ".gz", batch_size=4, on_error="skip", shuffle=False
        )
        served = {key_of(p) for b in loader for p in b.paths}
        skipped = dict(loader.skipped)
    assert "the gzip stream is cut short" in skipped[f"{zipped}/train-000001.tar.gz#"], skipped
    assert "not a readable gzip stream" in skipped[f"{zipped}/train-000002.tar.gz#"], skipped
    assert served == {f"utt{i:04d}" for i in (*range(5), *range(15, N_SAMPLES))}

    # A cache bound below an inflated shard: an error naming the bound, not unbounded memory.
    bound = pytest.raises(audiodecode.AudioDecodeError, match="inflates to more than the")
    with Daemon(workers=2, object_cache_bytes=biggest // 2), bound:
        list(AudioDataLoader(f"{zipped}/train-000000.tar.gz", batch_size=4))


def test_a_member_deep_in_directories_is_read(private_daemon: Daemon, tmp_path: Path) -> None:
    """A member whose path is longer than a memory file's name may be (249 bytes; tar's pax
    headers allow any length) is read like any other: it used to fail with EINVAL."""
    deep = "/".join(["speaker"] * 40) + "/utt.wav"
    source = tmp_path / "utt.wav"
    write_wav(source, tone(0.4, 16000, 330), 16000)
    with tarfile.open(tmp_path / "deep.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(source, arcname=deep)
        text = b"deep"
        info = tarfile.TarInfo(deep.replace(".wav", ".txt"))
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    [batch] = list(AudioDataLoader(str(tmp_path / "deep.tar"), batch_size=1, label_field="txt"))
    assert batch.paths == [f"{tmp_path}/deep.tar#{deep}"] and list(batch.labels) == ["deep"]
    expected, _ = audiodecode.load(source)
    np.testing.assert_array_equal(np.asarray(batch.audio[0][: int(batch.lengths[0])]), expected)


def test_a_shard_made_on_a_mac_reads_without_its_appledouble_members(
    private_daemon: Daemon, tmp_path: Path
) -> None:
    """Note [Hidden files]: macOS's tar stores an AppleDouble ``._KEY.EXT`` member before
    each file; WebDataset's key pattern skips them and so do we: with ``on_error="raise"``
    the epoch is the real samples with their labels, not a stop at the first companion."""
    shard = tmp_path / "mac.tar"
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(3):
            for name, data in [
                (f"._utt{i}.wav", b"\x00\x05\x16\x07" + b"\x00" * 78),
                (f"utt{i}.wav", wav_bytes(0.3, 16000, 300 + 40 * i, tmp_path)),
                (f"._utt{i}.txt", b"\x00\x05\x16\x07"),
                (f"utt{i}.txt", f"sample {i}".encode()),
            ]:
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    loader = AudioDataLoader(
        str(shard), batch_size=2, shuffle=False, label_field="txt", on_error="raise"
    )
    read = [(p.rsplit("/", 1)[1], text) for b in loader for p, text in zip(b.paths, b.labels)]
    assert read == [(f"utt{i}.wav", f"sample {i}") for i in range(3)]


def test_shards_joined_end_to_end_keep_every_sample(
    private_daemon: Daemon, dataset: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """Note [Joined tar archives]: ``cat a.tar b.tar > c.tar`` keeps a's end blocks in the
    middle; every sample of both is read (tarfile, and so webdataset, stops at the first
    end), and junk after the last end is ignored, not taken for damage."""
    root, _ = dataset
    joined = tmp_path / "joined.tar"
    parts = [(root / f"train-{i:06d}.tar").read_bytes() for i in range(5)]
    joined.write_bytes(b"".join(parts) + b"junk after the end\n" * 30)
    loader = AudioDataLoader(str(joined), batch_size=4, shuffle=False, label_field="txt")
    read = {key_of(p): text for b in loader for p, text in zip(b.paths, b.labels)}
    assert read == {f"utt{i:04d}": f"sample {i}" for i in range(N_SAMPLES)}
    assert loader.skipped == [] and loader.damaged == []


@pytest.mark.parametrize("tar_format", ["gnu", "pax"])
def test_a_member_stored_sparse_fails_naming_why(
    private_daemon: Daemon, tmp_path: Path, tar_format: str
) -> None:
    """Note [Sparse tar members]: ``tar --sparse`` stores a file with holes as a map and its
    data; read as bytes that is not the file. The old GNU type was dropped without a word,
    the pax one decoded as wrong audio under a wrong key: now the sample fails under its
    own key, saying why, and the other samples read."""
    src = tmp_path / "src"
    src.mkdir()
    write_wav(src / "a.wav", tone(0.3, 16000, 330), 16000)
    (src / "a.txt").write_text("kept")
    quiet = src / "q.wav"  # a header, then a hole the size of 2 s of silence
    write_wav(quiet, np.zeros(32000, dtype=np.float32), 16000)
    subprocess.run(["cp", "--sparse=always", str(quiet), str(src / "quiet.wav")], check=True)
    quiet.unlink()
    held = (src / "quiet.wav").stat()
    if held.st_blocks * 512 >= held.st_size:
        pytest.skip("this file system keeps no holes, so tar stores no sparse member")
    shard = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "-S", f"--format={tar_format}", "-cf", str(shard), "a.txt", "a.wav", "quiet.wav"],
        cwd=src,
        check=True,
    )
    loader = AudioDataLoader(str(shard), batch_size=2, shuffle=False, label_field="txt")
    read = [p.rsplit("#", 1)[1] for b in loader for p in b.paths]
    assert read == ["a.wav"]
    [(path, why)] = loader.skipped
    assert path == f"{shard}#quiet.wav" and "sparse" in why


@pytest.mark.parametrize(
    "writer",
    ["gnu", "oldgnu", "pax", "ustar", "v7", "posix-long-names", "gnu-long-names", "tarfile-pax"],
)
def test_shards_in_every_tar_format_read_alike(
    private_daemon: Daemon, tmp_path: Path, writer: str
) -> None:
    """Tar shards as GNU tar writes them in each of its formats (v7's 100-byte names, GNU
    long-name entries and pax headers for names past 100 bytes, ``./`` prefixes with
    directory entries) and as Python's tarfile writes non-ASCII names: every sample read
    with its label."""
    src = tmp_path / "src"
    deep = src / ("d" * 60) / ("e" * 60) if "long" in writer else src
    deep.mkdir(parents=True)
    for i in range(3):
        write_wav(deep / f"utt{i}.wav", tone(0.2, 16000, 300 + 50 * i), 16000)
        (deep / f"utt{i}.txt").write_text(f"sample {i}")
    shard = tmp_path / "shard.tar"
    if writer == "tarfile-pax":
        with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(src.iterdir()):
                tar.add(path, arcname=f"voix-é/{path.name}")
    else:
        tar_format = writer.split("-")[0]
        subprocess.run(
            ["tar", f"--format={tar_format}", "-cf", str(shard), "."], cwd=src, check=True
        )
    loader = AudioDataLoader(str(shard), batch_size=2, label_field="txt", on_error="raise")
    read = sorted((Path(p).name, text) for b in loader for p, text in zip(b.paths, b.labels))
    assert read == [(f"utt{i}.wav", f"sample {i}") for i in range(3)]


def test_a_directory_of_shards_is_their_webdataset_and_other_formats_are_named(
    private_daemon: Daemon, dataset: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """Note [Directories of shards]: a directory with tar shards and no audio files reads as
    the WebDataset of its shards (labels and all); Shar and NeMo shards, whose labels live
    outside the tars, are named with the reader to use instead; so is a glob, which is not
    expanded."""
    root, _ = dataset
    (root / ".audiodecode-index").mkdir()
    (root / ".audiodecode-index" / "stray.tar").write_bytes(b"")  # not one of the shards

    def keys_and_labels(source: str | Path) -> list[tuple[str, int]]:
        loader = AudioDataLoader(source, batch_size=4, label_field="cls", seed=3)
        return [(key_of(p), int(k)) for b in loader for p, k in zip(b.paths, b.labels)]

    expected = keys_and_labels(pattern(root))
    assert len(expected) == N_SAMPLES
    assert keys_and_labels(root) == expected
    assert keys_and_labels(f"{root}/") == expected
    for layout, names, reader in [
        ("shar", ["recording.000000.tar", "cuts.000000.jsonl.gz"], "from_shar"),
        ("nemo", ["audio_0.tar", "audio_1.tar"], "from_nemo"),
    ]:
        (tmp_path / layout).mkdir()
        for n in names:
            (tmp_path / layout / n).write_bytes((root / "train-000000.tar").read_bytes())
        with pytest.raises(audiodecode.AudioDecodeError, match=reader):
            list(AudioDataLoader(tmp_path / layout, batch_size=4))
    with pytest.raises(audiodecode.AudioDecodeError, match=r"not expanded: name the shards"):
        list(AudioDataLoader(f"{root}/*.tar", batch_size=4))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio")
    with pytest.raises(ValueError, match="no audio files in the directory"):
        AudioDataLoader(tmp_path / "empty")


def test_a_later_stream_over_gzip_shards_opens_from_the_indexes_it_learnt(
    binary: Path,
    http_server: HttpServer,
    dataset: tuple[Path, dict[str, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Note [Compressed shards]: the indexes a first stream learns from inflated shards are
    kept, so a fresh daemon's stream over audio-only shards opens without inflating every
    shard first. With an object cache that holds one inflated shard, the first stream
    inflates shards to index them and again to read them; the later one only to read them,
    once each."""
    root, _ = dataset
    shards = sorted(root.glob("*.tar"))
    for shard in shards:
        # Audio members only (a set for self-supervised training): label members would be
        # read when the stream opens, inflating every shard then anyway.
        audio_only = io.BytesIO()
        with tarfile.open(shard) as tar, tarfile.open(fileobj=audio_only, mode="w") as out:
            for member in tar.getmembers():
                if member.name.endswith(".wav"):
                    out.addfile(member, tar.extractfile(member))
        packed = gzip.compress(audio_only.getvalue(), 1)
        (http_server.root / f"{shard.name}.gz").write_bytes(packed)
    monkeypatch.setenv("AUDIODECODE_INDEX_CACHE", str(tmp_path / "indexes"))
    one_shard = max(p.stat().st_size for p in shards) * 3 // 2

    def stream() -> tuple[list[str], int]:
        http_server.clear_log()
        with Daemon(workers=2, object_cache_bytes=one_shard):
            loader = AudioDataLoader(
                pattern(http_server.base) + ".gz",
                batch_size=4,
                shuffle=False,
                max_seconds=1.0,
                pad_to_max=True,
            )
            keys = [key_of(p) for b in loader for p in b.paths]
        return keys, sum(1 for m, _, r in http_server.log if m == "GET" and r is None)

    first, first_gets = stream()
    later, later_gets = stream()
    assert first == later and len(first) == N_SAMPLES
    assert first_gets > len(shards)
    assert later_gets == len(shards)
