"""What every object store must do, run against each one's real server or emulator: moto
for ``s3://``, fake-gcs-server for ``gs://``, Azurite for ``az://`` (a store whose server
is not installed is skipped, saying so). ``load()`` of a URL equals the local file (a slice
too); a prefix is a dataset with classes from its first level; a missing object is an
error naming it and a skipped item under ``on_error``; the CLI's ``info`` and ``decode``
read URLs; an object changed between epochs is not served stale. What is particular to
one store lives beside it (``test_object_storage.py`` for S3 errors, retries and the
object cache; ``test_gcs.py`` for the GCS emulator's protocol)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import audiodecode
import numpy as np
import pytest
from audiodecode import AudioDataLoader, Daemon
from conftest import FIRST_SECOND_IN_ORDER, tone, write_wav

SCHEMES = {"s3": "s3_server", "gs": "gcs_server", "az": "azure_server"}


@dataclass
class Store:
    """One store's server, as the tests use it: a fresh bucket, uploads, URLs."""

    scheme: str
    server: Any

    def new_bucket(self) -> str:
        # Azure container names allow no '-' runs at the start and no uppercase.
        name = f"t{uuid.uuid4().hex[:12]}"
        if self.scheme == "az":
            return self.server.container(name)
        return self.server.bucket(name)

    def upload(self, bucket: str, files: list[Path], prefix: str = "") -> list[str]:
        for f in files:
            self.server.put(bucket, prefix + f.name, f)
        return [self.url(bucket, prefix + f.name) for f in files]

    def url(self, bucket: str, key: str) -> str:
        return f"{self.scheme}://{bucket}/{key}"


@pytest.fixture(params=sorted(SCHEMES))
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, binary: Path) -> Store:
    """Each store's server, its settings in the environment a daemon started now inherits."""
    server = request.getfixturevalue(SCHEMES[request.param])
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return Store(request.param, server)


@pytest.fixture
def daemon(store: Store) -> Iterator[Daemon]:
    with Daemon(workers=2) as d:
        yield d


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    """Three WAVs of different tones and rates, and a FLAC that ffmpeg made from the last."""
    out = []
    for i, (rate, freq) in enumerate([(16000, 300), (22050, 440), (44100, 520)]):
        path = tmp_path / "clips" / f"c{i}.wav"
        write_wav(path, tone(0.5 + 0.25 * i, rate, freq), rate)
        out.append(path)
    flac = tmp_path / "clips" / "c3.flac"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(out[-1]), "-c:a", "flac", str(flac)],
        check=True,
    )
    return [*out, flac]


def test_load_reads_urls_as_it_reads_files(daemon: Daemon, store: Store, clips: list[Path]) -> None:
    urls = store.upload(store.new_bucket(), clips, prefix="dir/")
    for clip, url in zip(clips, urls):
        local, sr = audiodecode.load(clip, sr=16000)
        remote, remote_sr = audiodecode.load(url, sr=16000)
        assert remote_sr == sr == 16000
        np.testing.assert_array_equal(remote, local)
    sliced, _ = audiodecode.load(urls[2], offset=0.25, duration=0.5)
    whole, _ = audiodecode.load(clips[2])
    np.testing.assert_array_equal(sliced, whole[11025 : 11025 + 22050])


def test_a_prefix_is_a_dataset_and_a_missing_object_is_named(
    daemon: Daemon, store: Store, clips: list[Path]
) -> None:
    name = store.new_bucket()
    urls = store.upload(name, clips[:2], prefix="set/dog/")
    urls += store.upload(name, clips[2:], prefix="set/cat/")
    common = FIRST_SECOND_IN_ORDER
    from_prefix = AudioDataLoader(store.url(name, "set/"), **common)
    assert from_prefix.classes == ["cat", "dog"]
    remote = [(list(b.paths), np.asarray(b.audio).copy()) for b in from_prefix]
    assert sorted(p for paths, _ in remote for p in paths) == sorted(urls)
    local = AudioDataLoader([str(c) for c in clips], **common)
    by_name = {Path(p).name: a for b in local for p, a in zip(b.paths, np.asarray(b.audio))}
    for paths, audio in remote:
        for path, row in zip(paths, audio):
            np.testing.assert_array_equal(row, by_name[Path(path).name])

    missing = store.url(name, "set/nope.wav")
    with pytest.raises(audiodecode.AudioFileNotFoundError, match=missing):
        audiodecode.load(missing)
    # A failing item is skipped and reported by URL; the others are served.
    loader = AudioDataLoader([urls[0], missing], batch_size=2, shuffle=False, on_error="skip")
    assert [p for b in loader for p in b.paths] == [urls[0]]
    assert [p for p, _ in loader.skipped] == [missing]


def test_cli_info_and_decode_read_urls(
    store: Store, binary: Path, clips: list[Path], tmp_path: Path
) -> None:
    name = store.new_bucket()
    urls = store.upload(name, clips)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), *args], check=False, capture_output=True, text=True, timeout=60
        )

    info = run("info", "--json", urls[1])
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["path"] == urls[1]
    assert described["sample_rate"] == 22050

    out = tmp_path / "out"
    decode = run("decode", urls[3], "-o", f"{out}/", "--format", "npy", "-q")
    assert decode.returncode == 0, decode.stderr
    [decoded] = sorted(out.iterdir())
    local, _ = audiodecode.load(clips[3])
    np.testing.assert_array_equal(np.load(decoded).reshape(local.shape), local)

    gone = store.url(name, "gone.wav")
    for command in (["info", gone], ["decode", gone, "-o", str(tmp_path / "x.wav"), "-q"]):
        missing = run(*command)
        assert missing.returncode != 0
        assert f"{gone}: file not found" in missing.stderr, missing.stderr


def test_a_changed_object_is_not_served_stale(daemon: Daemon, store: Store, tmp_path: Path) -> None:
    name = store.new_bucket()
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    write_wav(first, tone(1.0, 16000, 300), 16000)
    write_wav(second, tone(1.0, 16000, 900), 16000)
    store.server.put(name, "a.wav", first)
    loader = AudioDataLoader([store.url(name, "a.wav")], batch_size=1, shuffle=False)
    [epoch0] = [np.asarray(b.audio).copy() for b in loader]
    np.testing.assert_array_equal(epoch0[0], audiodecode.load(first)[0])
    time.sleep(1.2)  # past the window in which a checked copy is trusted
    store.server.put(name, "a.wav", second)
    [epoch1] = [np.asarray(b.audio).copy() for b in loader]
    np.testing.assert_array_equal(epoch1[0], audiodecode.load(second)[0])
