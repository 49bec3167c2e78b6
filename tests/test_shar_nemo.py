"""Lhotse Shar (written by lhotse's own ``to_shar``) and NeMo tarred datasets read natively:
one item per cut or manifest line, cut offsets and durations honoured, texts and labels
from the metadata, audio equal to what lhotse itself loads."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import audiodecode
import numpy as np
import pytest
from audiodecode import AudioDataLoader, Daemon
from conftest import tone, write_wav
from object_servers import HttpServer


@pytest.fixture
def private_daemon(binary: Path) -> Iterator[Daemon]:
    with Daemon(workers=2) as d:
        yield d


def items_of(loader: AudioDataLoader) -> dict[str, tuple[np.ndarray, object]]:
    """Each item's audio (trimmed to its length) and label, by path."""
    out = {}
    for batch in loader:
        for k, path in enumerate(batch.paths):
            audio = np.asarray(batch.audio[k][: int(batch.lengths[k])]).copy()
            out[path] = (audio, batch.labels[k])
    return out


def test_lhotse_shar_cuts_read_as_lhotse_loads_them(private_daemon: Daemon, tmp_path: Path) -> None:
    lhotse = pytest.importorskip("lhotse")
    cuts = []
    for i in range(7):
        path = tmp_path / f"rec{i}.wav"
        write_wav(path, tone(0.6 + 0.1 * i, 16000, 250 + 40 * i), 16000)
        recording = lhotse.Recording.from_file(path)
        cut = recording.to_cut()
        cut.supervisions = [
            lhotse.SupervisionSegment(
                id=f"sup{i}",
                recording_id=recording.id,
                start=0,
                duration=recording.duration,
                text=f"utterance {i}",
                speaker=("ann", "bob")[i % 2],
            )
        ]
        cuts.append(cut)
    # A cut that is part of a recording: Lhotse stores only its audio.
    cuts.append(cuts[3].truncate(offset=0.2, duration=0.3).with_id("part"))
    shar = tmp_path / "shar"
    shar.mkdir()
    lhotse.CutSet.from_cuts(cuts).to_shar(shar, fields={"recording": "flac"}, shard_size=3)
    theirs = {c.id: (c.load_audio()[0], c) for c in lhotse.CutSet.from_shar(in_dir=shar)}
    assert len(theirs) == 8

    by_text = items_of(AudioDataLoader.from_shar(shar, batch_size=3, shuffle=False))
    assert len(by_text) == 8
    for path, (audio, text) in by_text.items():
        cut_id = path.rsplit("#", 1)[1].rsplit(".", 1)[0]
        expected, cut = theirs[cut_id]
        np.testing.assert_allclose(audio, expected, atol=1e-6)
        assert text == cut.supervisions[0].text
    speakers = AudioDataLoader.from_shar(shar, batch_size=8, label_field="speaker")
    assert speakers.classes == ["ann", "bob"]
    [batch] = list(speakers)
    for k, path in enumerate(batch.paths):
        cut_id = path.rsplit("#", 1)[1].rsplit(".", 1)[0]
        assert speakers.classes[int(batch.labels[k])] == theirs[cut_id][1].supervisions[0].speaker
    # Bucketing takes the durations from the cuts and still serves every cut once.
    bucketed = AudioDataLoader.from_shar(shar, batch_size=8, max_batch_seconds=2.0)
    assert sorted(p for b in bucketed for p in b.paths) == sorted(by_text)


def test_a_remote_shar_stream_opens_from_its_cuts_and_fetches_a_tar_when_read(
    private_daemon: Daemon,
    http_server: HttpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cuts give a Shar stream its items, ranges and durations: opening it reads no
    recording tar (a remote dataset is not downloaded before its first batch); each tar is
    fetched when its first cut is read, and the audio is the local stream's."""
    lhotse = pytest.importorskip("lhotse")
    cuts = []
    for i in range(6):
        path = tmp_path / f"rec{i}.wav"
        write_wav(path, tone(0.5 + 0.1 * i, 16000, 300 + 50 * i), 16000)
        cuts.append(lhotse.Recording.from_file(path).to_cut())
    shar = tmp_path / "shar"
    shar.mkdir()
    lhotse.CutSet.from_cuts(cuts).to_shar(shar, fields={"recording": "wav"}, shard_size=2)
    for path in shar.iterdir():
        (http_server.root / path.name).write_bytes(path.read_bytes())
    names = sorted(p.name for p in shar.glob("cuts.*.jsonl*"))
    assert len(names) == 3
    common = {"batch_size": 2, "shuffle": False, "label_field": "id"}
    remote = AudioDataLoader.from_shar([http_server.url(n) for n in names], **common)
    assert len(remote) == 3
    tar_gets = [p for m, p, _ in http_server.log if m == "GET" and p.endswith(".tar")]
    assert tar_gets == [], http_server.log
    local = AudioDataLoader.from_shar([str(shar / n) for n in names], **common)
    for theirs, ours in zip(local, remote, strict=True):
        np.testing.assert_array_equal(np.asarray(ours.audio), np.asarray(theirs.audio))
        assert [p.rsplit("#", 1)[1] for p in ours.paths] == [
            p.rsplit("#", 1)[1] for p in theirs.paths
        ]
    tar_gets = [p for m, p, _ in http_server.log if m == "GET" and p.endswith(".tar")]
    tars = [f"/recording.{i:06d}.tar" for i in range(3)]
    assert sorted(tar_gets) == tars  # once each, though two workers read a tar's cuts at once

    # Note [Large remote shards streamed to be indexed]: with tars larger than an eighth of
    # the object cache, each is streamed once to be indexed, its members read by ranged GETs.
    smallest = min(p.stat().st_size for p in shar.glob("recording.*.tar"))
    local_audio = [np.asarray(b.audio).copy() for b in local]
    monkeypatch.setenv("AUDIODECODE_INDEX_CACHE", "")  # not the indexes learnt above
    with Daemon(workers=2, object_cache_bytes=smallest - 1):
        http_server.clear_log()
        streamed = AudioDataLoader.from_shar([http_server.url(n) for n in names], **common)
        for theirs, ours in zip(local_audio, streamed, strict=True):
            np.testing.assert_array_equal(np.asarray(ours.audio), theirs)
    gets = [(p, r) for m, p, r in http_server.log if m == "GET" and p.endswith(".tar")]
    assert sorted(p for p, r in gets if r is None) == tars, gets
    assert sorted({p for p, r in gets if r is not None}) == tars, gets


def test_nemo_tarred_manifest_with_segments(private_daemon: Daemon, tmp_path: Path) -> None:
    originals = {}
    lines = []
    for shard in range(3):
        with tarfile.open(tmp_path / f"audio_{shard}.tar", "w") as tar:
            for j in range(2):
                name = f"utt{shard}{j}.wav"
                path = tmp_path / name
                write_wav(path, tone(1.0, 22050, 300 + 100 * shard + 30 * j), 22050)
                tar.add(path, arcname=name)
                originals[name] = path
                lines.append(
                    {
                        "audio_filepath": name,
                        "duration": 1.0,
                        "text": f"t{shard}{j}",
                        "shard_id": shard,
                    }
                )
    # A segment of one file: NeMo's offset with the segment's duration.
    lines.append(
        {
            "audio_filepath": "utt10.wav",
            "offset": 0.25,
            "duration": 0.5,
            "text": "part",
            "shard_id": 1,
        }
    )
    manifest = tmp_path / "tarred_audio_manifest.json"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    loader = AudioDataLoader.from_nemo(
        manifest, str(tmp_path / "audio__OP_0..2_CL_.tar"), batch_size=7, shuffle=False
    )
    [batch] = list(loader)
    # Without shuffling, shard by shard, each shard's lines in manifest order.
    by_shard = sorted(lines, key=lambda line: line["shard_id"])
    assert list(batch.labels) == [line["text"] for line in by_shard]
    for k, line in enumerate(by_shard):
        assert batch.paths[k].endswith(f"audio_{line['shard_id']}.tar#{line['audio_filepath']}")
        expected, _ = audiodecode.load(
            originals[line["audio_filepath"]],
            sr=16000,
            offset=line.get("offset", 0.0),
            duration=line["duration"] if "offset" in line else None,
        )
        got = np.asarray(batch.audio[k][: int(batch.lengths[k])])
        np.testing.assert_allclose(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match="NeMo"):
        AudioDataLoader.from_nemo(manifest, [])
    # Some of the tars, named as NeMo names them: only their shards' lines are read (one
    # Ray read task's share, or NeMo's scatter of tars over ranks).
    one = AudioDataLoader.from_nemo(manifest, str(tmp_path / "audio_1.tar"), batch_size=7)
    [batch] = list(one)
    assert sorted(batch.labels) == sorted(line["text"] for line in lines if line["shard_id"] == 1)
    assert all(p.startswith(str(tmp_path / "audio_1.tar") + "#") for p in batch.paths)


def test_a_remote_nemo_stream_opens_from_its_manifest_and_fetches_a_tar_when_read(
    private_daemon: Daemon, http_server: HttpServer, tmp_path: Path
) -> None:
    """With a shard_id on every line the tarred manifest gives the items: opening the stream
    reads no tar; each tar is fetched when its first member is read. A line that keeps the
    directory its audio was tarred from finds the member by its base name."""
    lines = []
    for shard in range(3):
        with tarfile.open(http_server.root / f"audio_{shard}.tar", "w") as tar:
            for j in range(2):
                name = f"utt{shard}{j}.wav"
                path = tmp_path / name
                write_wav(path, tone(0.6 + 0.1 * j, 16000, 250 + 90 * shard + 20 * j), 16000)
                tar.add(path, arcname=name)
                kept = f"/corpus/wavs/{name}" if (shard, j) == (2, 1) else name
                lines.append({"audio_filepath": kept, "duration": 0.6 + 0.1 * j, "shard_id": shard})
    (http_server.root / "tarred_audio_manifest.json").write_text(
        "\n".join(json.dumps(line) for line in lines) + "\n"
    )
    remote = AudioDataLoader.from_nemo(
        http_server.url("tarred_audio_manifest.json"),
        f"{http_server.base}/audio_{{0..2}}.tar",
        batch_size=2,
        shuffle=False,
    )
    assert len(remote) == 3
    tar_gets = [p for m, p, _ in http_server.log if m == "GET" and p.endswith(".tar")]
    assert tar_gets == [], http_server.log
    for batch in remote:
        for k, path in enumerate(batch.paths):
            name = path.rsplit("#", 1)[1].rsplit("/", 1)[-1]
            expected, _ = audiodecode.load(tmp_path / name, sr=16000)
            got = np.asarray(batch.audio[k][: int(batch.lengths[k])])
            np.testing.assert_array_equal(got, expected)
    tar_gets = [p for m, p, _ in http_server.log if m == "GET" and p.endswith(".tar")]
    assert sorted(set(tar_gets)) == [f"/audio_{i}.tar" for i in range(3)]


def test_audiodecode_shard_writes_shar_that_lhotse_and_the_loader_read(
    private_daemon: Daemon, binary: Path, tmp_path: Path
) -> None:
    lhotse = pytest.importorskip("lhotse")
    lines = []
    for i in range(5):
        path = tmp_path / f"say{i}.wav"
        write_wav(path, tone(0.5 + 0.1 * i, 16000, 300 + 50 * i), 16000)
        lines.append(json.dumps({"audio_filepath": str(path), "text": f"said {i}"}))
    manifest = tmp_path / "labels.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "shar"
    done = subprocess.run(
        [str(binary), "shard", str(manifest), "--out", str(out), "--format", "shar"]
        + ["--shard-size", "40KB", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("cuts.*.jsonl.gz"))) == len(list(out.glob("recording.*.tar"))) >= 2
    theirs = list(lhotse.CutSet.from_shar(in_dir=out))
    assert [c.supervisions[0].text for c in theirs] == [f"said {i}" for i in range(5)]
    for i, cut in enumerate(theirs):
        expected, _ = audiodecode.load(tmp_path / f"say{i}.wav")
        np.testing.assert_allclose(cut.load_audio()[0], expected, atol=1e-6)
        assert cut.custom["audio_filepath"] == str(tmp_path / f"say{i}.wav")
    ours = items_of(AudioDataLoader.from_shar(out, batch_size=5, shuffle=False))
    assert [text for _, text in ours.values()] == [f"said {i}" for i in range(5)]


def test_a_failing_shard_is_asked_for_once_an_epoch(
    private_daemon: Daemon, http_server: HttpServer, tmp_path: Path
) -> None:
    """Note [Failed shards]: a tar that answers 403 fails each of its samples (skipped with
    ``on_error="skip"``) after one request in the epoch, not one or more per sample; the
    next epoch asks again, and reads it once it is fixed."""
    per_shard = 8
    lines = []
    for shard in range(2):
        with tarfile.open(http_server.root / f"audio_{shard}.tar", "w") as tar:
            for j in range(per_shard):
                name = f"utt{shard}{j}.wav"
                write_wav(tmp_path / name, tone(0.3, 16000, 250 + 90 * shard + 20 * j), 16000)
                tar.add(tmp_path / name, arcname=name)
                lines.append({"audio_filepath": name, "duration": 0.3, "shard_id": shard})
    (http_server.root / "manifest.json").write_text(
        "\n".join(json.dumps(line) for line in lines) + "\n"
    )
    http_server.forbid("audio_1.tar")
    loader = AudioDataLoader.from_nemo(
        http_server.url("manifest.json"),
        f"{http_server.base}/audio_{{0..1}}.tar",
        batch_size=4,
        shuffle=False,
        on_error="skip",
    )

    def epoch() -> tuple[int, dict[str, str], int]:
        """Items served, items skipped, and requests for the failing tar."""
        http_server.clear_log()
        served = sum(len(b.paths) for b in loader)
        asked = [m for m, p, _ in http_server.log if p == "/audio_1.tar"]
        return served, dict(loader.skipped), len(asked)

    for _ in range(2):
        served, skipped, asked = epoch()
        assert served == per_shard
        assert len(skipped) == per_shard and all("audio_1.tar#" in p for p in skipped)
        assert all("access denied" in m for m in skipped.values()), skipped
        # One request, even when several workers meet the shard at the same moment.
        assert asked == 1, http_server.log
    http_server.clear_faults()
    served, skipped, _ = epoch()
    assert served == 2 * per_shard and skipped == {}


def test_an_item_longer_than_its_stated_duration_is_reported_not_cut_silently(
    private_daemon: Daemon, tmp_path: Path
) -> None:
    """The longest duration a NeMo manifest states sizes the batch slots; a clip that runs
    longer (a wrong manifest) is cut to the slot and listed in ``damaged`` with both
    lengths, or skipped when strict."""
    for name, seconds in [("x", 1.0), ("y", 1.5)]:
        write_wav(tmp_path / f"{name}.wav", tone(seconds, 16000, 440), 16000)
    with tarfile.open(tmp_path / "audio_0.tar", "w") as tar:
        for name in "xy":
            tar.add(tmp_path / f"{name}.wav", arcname=f"{name}.wav")
    manifest = tmp_path / "tarred_audio_manifest.json"
    manifest.write_text(
        "".join(
            json.dumps({"audio_filepath": f"{n}.wav", "duration": 1.0, "text": n}) + "\n"
            for n in "xy"
        )
    )
    tars = str(tmp_path / "audio_0.tar")
    loader = AudioDataLoader.from_nemo(manifest, tars, batch_size=2, shuffle=False)
    [batch] = list(loader)
    assert [int(n) for n in batch.lengths] == [16000, 16001]
    [(path, why)] = loader.damaged
    assert path.endswith("#y.wav") and "cut at 1.000 s of 1.500 s" in why, why
    strict = AudioDataLoader.from_nemo(
        manifest, tars, batch_size=2, shuffle=False, strict=True, on_error="skip"
    )
    [batch] = list(strict)
    assert [p.rsplit("#", 1)[1] for p in batch.paths] == ["x.wav"]
    [(path, why)] = strict.skipped
    assert path.endswith("#y.wav") and "cut at" in why
