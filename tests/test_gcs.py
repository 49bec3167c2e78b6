"""``gs://bucket/object`` URLs end to end against fake-gcs-server, a Google Cloud Storage
emulator (``gcs_server``), as ``test_object_storage.py`` reads ``s3://`` from moto and
``az://`` from Azurite: ``load()``, a prefix as a dataset, a missing object named, the CLI
(``info``, ``decode``), and no stale reads after an object changes."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import audiodecode
import numpy as np
import pytest
from audiodecode import AudioDataLoader, Daemon
from conftest import tone, write_wav
from object_servers import GcsServer


@pytest.fixture
def gcs(gcs_server: GcsServer, monkeypatch: pytest.MonkeyPatch, binary: Path) -> GcsServer:
    """The GCS emulator, its settings in the environment a daemon started now inherits."""
    for key, value in gcs_server.env().items():
        monkeypatch.setenv(key, value)
    return gcs_server


@pytest.fixture
def daemon_gcs(gcs: GcsServer) -> Iterator[Daemon]:
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


def new_bucket(gcs: GcsServer) -> str:
    return gcs.bucket(f"t-{uuid.uuid4().hex[:12]}")


def upload(gcs: GcsServer, bucket: str, files: list[Path], prefix: str = "") -> list[str]:
    for f in files:
        gcs.put(bucket, prefix + f.name, f)
    return [f"gs://{bucket}/{prefix}{f.name}" for f in files]


def test_the_emulator_answers_as_object_store_expects(gcs_server: GcsServer) -> None:
    """What object_store 0.12's GCS client requires of the server (its gcp/client.rs): HEAD
    and ranged GET of `{base}/{bucket}/{key, `/` escaped}` with ETag, Last-Modified and
    Content-Length, and the XML listing with `list-type=2`. A failure here means the emulator
    changed, not the daemon."""
    name = new_bucket(gcs_server)
    gcs_server.put(name, "dir/a.bin", bytes(range(200)))
    tls = ssl.create_default_context(cafile=str(gcs_server.ca))

    def fetch(method: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(gcs_server.endpoint + path, method=method)
        for key, value in headers.items():
            request.add_header(key.replace("_", "-"), value)
        with urllib.request.urlopen(request, context=tls, timeout=30) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )

    status, headers, _ = fetch("HEAD", f"/{name}/dir%2Fa%2Ebin")
    assert status == 200
    assert headers["content-length"] == "200"
    assert headers["etag"] and headers["last-modified"].endswith("GMT")
    status, headers, body = fetch("GET", f"/{name}/dir%2Fa%2Ebin", Range="bytes=10-19")
    assert (status, body) == (206, bytes(range(10, 20)))
    assert headers["content-range"] == "bytes 10-19/200"
    assert headers["last-modified"] and headers["etag"]
    _, _, listing = fetch("GET", f"/{name}?list-type=2&prefix=dir%2F&delimiter=%2F")
    root = ET.fromstring(listing)
    assert [e.text for e in root.iter("Key")] == ["dir/a.bin"]
    assert [e.text for e in root.iter("Size")] == ["200"]


def test_load_reads_gs_urls_as_it_reads_files(
    daemon_gcs: Daemon, gcs: GcsServer, clips: list[Path]
) -> None:
    name = new_bucket(gcs)
    urls = upload(gcs, name, clips, prefix="dir/")
    for clip, url in zip(clips, urls):
        local, sr = audiodecode.load(clip, sr=16000)
        remote, remote_sr = audiodecode.load(url, sr=16000)
        assert remote_sr == sr == 16000
        np.testing.assert_array_equal(remote, local)
    sliced, _ = audiodecode.load(urls[2], offset=0.25, duration=0.5)
    whole, _ = audiodecode.load(clips[2])
    np.testing.assert_array_equal(sliced, whole[11025 : 11025 + 22050])


def test_a_gs_prefix_is_a_dataset_and_a_missing_object_is_named(
    daemon_gcs: Daemon, gcs: GcsServer, clips: list[Path]
) -> None:
    name = new_bucket(gcs)
    urls = upload(gcs, name, clips[:2], prefix="set/dog/") + upload(
        gcs, name, clips[2:], prefix="set/cat/"
    )
    common = {
        "batch_size": 2,
        "max_seconds": 1.0,
        "crop": "start",
        "pad_to_max": True,
        "shuffle": False,
    }
    from_prefix = AudioDataLoader(f"gs://{name}/set/", **common)
    assert from_prefix.classes == ["cat", "dog"]
    remote = [(list(b.paths), np.asarray(b.audio).copy()) for b in from_prefix]
    assert sorted(p for paths, _ in remote for p in paths) == sorted(urls)
    local = AudioDataLoader([str(c) for c in clips], **common)
    by_name = {Path(p).name: a for b in local for p, a in zip(b.paths, np.asarray(b.audio))}
    for paths, audio in remote:
        for path, row in zip(paths, audio):
            np.testing.assert_array_equal(row, by_name[Path(path).name])

    missing = f"gs://{name}/set/nope.wav"
    with pytest.raises(audiodecode.AudioFileNotFoundError, match=missing):
        audiodecode.load(missing)
    # A failing item is skipped and reported by URL; the others are served.
    loader = AudioDataLoader([urls[0], missing], batch_size=2, shuffle=False, on_error="skip")
    assert [p for b in loader for p in b.paths] == [urls[0]]
    assert [p for p, _ in loader.skipped] == [missing]


def test_cli_info_and_decode_read_gs_urls(
    gcs: GcsServer, binary: Path, clips: list[Path], tmp_path: Path
) -> None:
    name = new_bucket(gcs)
    urls = upload(gcs, name, clips)
    info = subprocess.run(
        [str(binary), "info", "--json", urls[1]],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["path"] == urls[1]
    assert described["sample_rate"] == 22050

    out = tmp_path / "out"
    decode = subprocess.run(
        [str(binary), "decode", urls[3], "-o", f"{out}/", "--format", "npy", "-q"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert decode.returncode == 0, decode.stderr
    [decoded] = sorted(out.iterdir())
    local, _ = audiodecode.load(clips[3])
    np.testing.assert_array_equal(np.load(decoded).reshape(local.shape), local)

    gone = f"gs://{name}/gone.wav"
    for command in (["info", gone], ["decode", gone, "-o", str(tmp_path / "x.wav"), "-q"]):
        missing = subprocess.run(
            [str(binary), *command], check=False, capture_output=True, text=True, timeout=60
        )
        assert missing.returncode != 0
        assert f"{gone}: file not found" in missing.stderr, missing.stderr


def test_a_changed_gs_object_is_not_served_stale(
    daemon_gcs: Daemon, gcs: GcsServer, tmp_path: Path
) -> None:
    name = new_bucket(gcs)
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    write_wav(first, tone(1.0, 16000, 300), 16000)
    write_wav(second, tone(1.0, 16000, 900), 16000)
    gcs.put(name, "a.wav", first)
    loader = AudioDataLoader([f"gs://{name}/a.wav"], batch_size=1, shuffle=False)
    [epoch0] = [np.asarray(b.audio).copy() for b in loader]
    np.testing.assert_array_equal(epoch0[0], audiodecode.load(first)[0])
    time.sleep(1.2)  # past the window in which a checked copy is trusted
    gcs.put(name, "a.wav", second)
    [epoch1] = [np.asarray(b.audio).copy() for b in loader]
    np.testing.assert_array_equal(epoch1[0], audiodecode.load(second)[0])
