"""Remote inputs end to end: the daemon reads ``s3://`` (from a real S3-compatible server,
moto, driven with real S3 requests) and ``http://`` URLs wherever it takes a path —
``load()``, file lists, manifests, prefixes, the CLI — with errors that name the URL and
say whether it was missing, forbidden or unreachable, and no stale reads after a change."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import audiodecode
import numpy as np
import pytest
from audiodecode import AudioDataLoader, Daemon
from conftest import FIRST_SECOND_IN_ORDER, tone, write_wav
from object_servers import HttpServer, S3Server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, binary: Path) -> S3Server:
    """The S3 server, its settings in the environment a daemon started now inherits."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    """Four short clips of different tones and rates."""
    out = []
    for i, (rate, freq) in enumerate([(16000, 300), (22050, 440), (44100, 520), (16000, 660)]):
        path = tmp_path / "clips" / f"c{i}.wav"
        write_wav(path, tone(0.5 + 0.25 * i, rate, freq), rate)
        out.append(path)
    return out


def bucket(s3: S3Server) -> str:
    return s3.bucket(f"t-{uuid.uuid4().hex[:12]}")


def upload(s3: S3Server, name: str, files: list[Path], prefix: str = "") -> list[str]:
    for f in files:
        s3.put(name, prefix + f.name, f)
    return [f"s3://{name}/{prefix}{f.name}" for f in files]


@pytest.fixture
def daemon_s3(s3: S3Server) -> Iterator[Daemon]:
    with Daemon(workers=2) as d:
        yield d


def test_load_reads_s3_and_http_urls_as_it_reads_files(
    daemon_s3: Daemon, s3: S3Server, http_server: HttpServer, clips: list[Path]
) -> None:
    name = bucket(s3)
    urls = upload(s3, name, clips, prefix="dir/")
    for clip in clips:
        (http_server.root / clip.name).write_bytes(clip.read_bytes())
    for clip, url in zip(clips, urls):
        local, sr = audiodecode.load(clip, sr=16000)
        remote, remote_sr = audiodecode.load(url, sr=16000)
        over_http, _ = audiodecode.load(http_server.url(clip.name), sr=16000)
        assert remote_sr == sr == 16000
        np.testing.assert_array_equal(remote, local)
        np.testing.assert_array_equal(over_http, local)
    sliced, _ = audiodecode.load(urls[2], offset=0.25, duration=0.5)
    whole, _ = audiodecode.load(clips[2])
    np.testing.assert_array_equal(sliced, whole[11025 : 11025 + 22050])


def batches_of(loader: AudioDataLoader) -> list[tuple[list[str], np.ndarray]]:
    return [(list(b.paths), np.asarray(b.audio).copy()) for b in loader]


def test_loader_over_s3_files_and_manifest_equals_local(
    daemon_s3: Daemon, s3: S3Server, clips: list[Path], tmp_path: Path
) -> None:
    name = bucket(s3)
    urls = upload(s3, name, clips[:2], prefix="set/dog/") + upload(
        s3, name, clips[2:], prefix="set/cat/"
    )
    common = FIRST_SECOND_IN_ORDER
    local = batches_of(AudioDataLoader([str(c) for c in clips], **common))
    remote = batches_of(AudioDataLoader(urls, **common))
    assert [p for p, _ in remote] == [urls[:2], urls[2:]]
    for (_, a), (_, b) in zip(local, remote):
        np.testing.assert_array_equal(a, b)
    # A manifest in the bucket, its paths relative to it.
    manifest = "\n".join(
        json.dumps({"audio_filepath": u.split("/set/")[1], "label": "x"}) for u in urls
    )
    s3.put(name, "set/train.jsonl", manifest.encode())
    from_manifest = AudioDataLoader(f"s3://{name}/set/train.jsonl", **common)
    assert [p for p, _ in batches_of(from_manifest)] == [urls[:2], urls[2:]]
    # A prefix as a dataset: test_object_stores.py, for every store.


def test_errors_name_the_url_and_say_why(
    daemon_s3: Daemon, s3: S3Server, http_server: HttpServer, clips: list[Path]
) -> None:
    name = bucket(s3)
    [ok] = upload(s3, name, clips[:1])
    with pytest.raises(audiodecode.AudioFileNotFoundError, match=f"s3://{name}/nope.wav"):
        audiodecode.load(f"s3://{name}/nope.wav")
    s3.put(name, "secret/a.wav", clips[0])
    s3.forbid(name, "secret/a.wav")
    with pytest.raises(audiodecode.AudioDecodeError, match="access denied") as denied:
        audiodecode.load(f"s3://{name}/secret/a.wav")
    assert f"s3://{name}/secret/a.wav" in str(denied.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/a.wav"
    with pytest.raises(audiodecode.AudioDecodeError, match="unreachable") as unreachable:
        audiodecode.load(dead)
    assert dead in str(unreachable.value)
    (http_server.root / "cut.wav").write_bytes(clips[1].read_bytes())
    http_server.drop("cut.wav", after=100)
    with pytest.raises(audiodecode.AudioDecodeError, match="cut.wav.*unreachable"):
        audiodecode.load(http_server.url("cut.wav"))
    # A failing item is skipped and reported by URL; the others are served.
    loader = AudioDataLoader(
        [ok, f"s3://{name}/nope.wav", f"s3://{name}/secret/a.wav"],
        batch_size=3,
        shuffle=False,
        on_error="skip",
    )
    served = [p for b in loader for p in b.paths]
    assert served == [ok]
    assert sorted(p for p, _ in loader.skipped) == sorted(
        [f"s3://{name}/nope.wav", f"s3://{name}/secret/a.wav"]
    )


def test_transient_server_errors_are_retried(
    daemon_s3: Daemon, http_server: HttpServer, clips: list[Path]
) -> None:
    (http_server.root / "flaky.wav").write_bytes(clips[0].read_bytes())
    http_server.fail_times("flaky.wav", 2)
    audio, _ = audiodecode.load(http_server.url("flaky.wav"))
    local, _ = audiodecode.load(clips[0])
    np.testing.assert_array_equal(audio, local)
    statuses = [m for m, p, _ in http_server.log if p == "/flaky.wav"]
    assert len(statuses) >= 3, http_server.log


def test_workers_missing_the_same_object_at_once_fetch_it_once(
    http_server: HttpServer, clips: list[Path], binary: Path, tmp_path: Path
) -> None:
    """Two decode workers ask for the object while its first GET is still on the wire (a
    slow link): the second waits for that fetch and takes its copy."""
    (http_server.root / "shared.wav").write_bytes(clips[1].read_bytes())
    http_server.slow("shared.wav", 1.5)
    url = http_server.url("shared.wav")
    out = tmp_path / "out"
    run = subprocess.run(
        [str(binary), "decode", url, url, "-j", "2", "-o", f"{out}/", "--format", "npy"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    local, _ = audiodecode.load(clips[1])
    outputs = sorted(out.iterdir())
    assert len(outputs) == 2
    for path in outputs:
        np.testing.assert_array_equal(np.load(path).reshape(local.shape), local)
    gets = [p for m, p, _ in http_server.log if m == "GET" and p == "/shared.wav"]
    assert len(gets) == 1, http_server.log


def test_cli_decodes_urls_and_keeps_them_in_the_object_cache(
    binary: Path, http_server: HttpServer, clips: list[Path], tmp_path: Path
) -> None:
    (http_server.root / "a.wav").write_bytes(clips[1].read_bytes())
    url = http_server.url("a.wav")
    cache = tmp_path / "objects"
    out = tmp_path / "out.wav"
    run = [str(binary), "decode", url, "-o", str(out), "--object-cache", str(cache), "-q"]
    subprocess.run(run, check=True, capture_output=True, timeout=60)
    assert out.exists()
    assert [m for m, *_ in http_server.log].count("GET") == 1
    assert len(list(cache.glob("*.obj"))) == 1
    # Another run finds its copy: the object is checked (HEAD), not fetched again.
    http_server.clear_log()
    out.unlink()
    subprocess.run(run, check=True, capture_output=True, timeout=60)
    assert [m for m, *_ in http_server.log] == ["HEAD"]
    info = subprocess.run(
        [str(binary), "info", "--json", url], check=True, capture_output=True, timeout=60
    )
    assert json.loads(info.stdout)["path"] == url
    missing = subprocess.run(
        [str(binary), "decode", http_server.url("gone.wav"), "-o", str(out), "-q"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0
    assert f"{http_server.url('gone.wav')}: file not found" in missing.stderr
    # An object larger than the cache may hold is refused before its body is read.
    http_server.clear_log()
    too_big = subprocess.run(
        [str(binary), "decode", url, "-o", str(out), "-q", "--object-cache-bytes", "1000"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert too_big.returncode != 0
    assert f"{url}: invalid request: the object is" in too_big.stderr, too_big.stderr
    assert "--object-cache-bytes" in too_big.stderr


def test_label_reads_speech_from_s3(s3: S3Server, binary: Path, tmp_path: Path) -> None:
    """`audiodecode label` takes a URL and a prefix like paths; records name the URL."""
    from conftest import speak

    name = bucket(s3)
    speech = speak(tmp_path / "hello.wav", "The quick brown fox jumps over the lazy dog.")
    s3.put(name, "speech/hello.wav", speech)
    out = tmp_path / "labels.jsonl"
    subprocess.run(
        [str(binary), "label", f"s3://{name}/speech/", "--out", str(out), "--model", "tiny.en"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["audio_filepath"] == f"s3://{name}/speech/hello.wav"
    assert "fox" in record["text"].lower()


def test_signed_urls_are_used_as_written(
    daemon_s3: Daemon, s3: S3Server, http_server: HttpServer, clips: list[Path]
) -> None:
    """An http(s) URL with a query string (a pre-signed S3 URL, a CDN token) names one object
    and is requested exactly as written. The test server answers such a path only with its
    signature and only to GET, as S3 answers a URL signed for GET."""
    for clip in clips:
        (http_server.root / clip.name).write_bytes(clip.read_bytes())
    signed = [http_server.signed_url(c.name) for c in clips]
    for clip, url in zip(clips, signed):
        np.testing.assert_array_equal(audiodecode.load(url)[0], audiodecode.load(clip)[0])
    assert {m for m, *_ in http_server.log} == {"GET"}, http_server.log
    common = FIRST_SECOND_IN_ORDER
    local = batches_of(AudioDataLoader([str(c) for c in clips], **common))
    remote = batches_of(AudioDataLoader(signed, **common))
    assert [p for p, _ in remote] == [signed[:2], signed[2:]]
    for (_, a), (_, b) in zip(local, remote):
        np.testing.assert_array_equal(a, b)
    # A manifest behind a signed URL, listing signed URLs: told apart by its name, not by
    # what its query ends in.
    manifest = "\n".join(json.dumps({"audio_filepath": u, "label": "x"}) for u in signed)
    (http_server.root / "train.jsonl").write_text(manifest)
    listed = AudioDataLoader(http_server.signed_url("train.jsonl"), **common)
    assert [p for p, _ in batches_of(listed)] == [signed[:2], signed[2:]]
    # A wrong signature is refused by the server, and the error names the URL.
    tampered = signed[0].replace("X-Sig=", "X-Sig=0")
    with pytest.raises(audiodecode.AudioDecodeError, match="access denied") as denied:
        audiodecode.load(tampered)
    assert tampered in str(denied.value)
    # A real pre-signed S3 URL, from boto3, served by the S3 server.
    name = bucket(s3)
    s3.put(name, "dir/c2.wav", clips[2])
    presigned = s3.client().generate_presigned_url(
        "get_object", Params={"Bucket": name, "Key": "dir/c2.wav"}, ExpiresIn=600
    )
    assert "Signature=" in presigned
    np.testing.assert_array_equal(audiodecode.load(presigned)[0], audiodecode.load(clips[2])[0])


def test_a_server_that_ignores_byte_ranges_is_read_whole(
    s3: S3Server, http_server: HttpServer, tmp_path: Path
) -> None:
    """A server that answers a ranged GET with the whole object (Python's http.server) is
    read by whole GETs: a part of a long WAV, which would be read by ranged GETs, comes
    from one fetch of the file, equal to the same part of the local file."""
    long = tmp_path / "long.wav"
    write_wav(long, tone(40.0, 16000, 440), 16000)  # 1.3 MB, over an eighth of the cache
    (http_server.root / "long.wav").write_bytes(long.read_bytes())
    url = http_server.url("long.wav")
    whole, _ = audiodecode.load(long)
    with Daemon(workers=2, object_cache_bytes=4_000_000):
        part, _ = audiodecode.load(url, offset=10.0, duration=2.0)
        np.testing.assert_array_equal(part, whole[160000:192000])
        assert any(r for m, _, r in http_server.log if m == "GET"), "read by ranged GETs"

    def two_parts_read() -> list[str | None]:
        """Two parts of the WAV from a fresh daemon; the ranges its GETs asked for."""
        http_server.clear_log()
        with Daemon(workers=2, object_cache_bytes=4_000_000):
            part, _ = audiodecode.load(url, offset=10.0, duration=2.0)
            np.testing.assert_array_equal(part, whole[160000:192000])
            again, _ = audiodecode.load(url, offset=20.0, duration=2.0)
            np.testing.assert_array_equal(again, whole[320000:352000])
        return [r for m, _, r in http_server.log if m == "GET"]

    http_server.ranges = False
    gets = two_parts_read()
    # One ranged attempt shows the server sends whole objects; then one whole GET.
    assert gets.count(None) == 1 and len(gets) <= 2, http_server.log
    # A server that answers a range with 501 Not Implemented says as much: read whole too.
    http_server.ranges = True
    http_server.range_status = 501
    gets = two_parts_read()
    # object_store retries the 501 as it retries any 5xx; after it, no range is asked for.
    assert gets.count(None) == 1 and gets[-1] is None, http_server.log


def test_a_server_error_is_named_with_its_status(
    daemon_s3: Daemon, http_server: HttpServer, clips: list[Path]
) -> None:
    """A server that answers with an error is reached, not unreachable: the message gives
    the status it answered (after the client's retries of a 5xx)."""
    (http_server.root / "e.wav").write_bytes(clips[0].read_bytes())
    http_server.fail_times("e.wav", 1000, status=500)
    with pytest.raises(audiodecode.AudioDecodeError, match="answered HTTP 500") as failed:
        audiodecode.load(http_server.url("e.wav"))
    assert http_server.url("e.wav") in str(failed.value)
    assert "unreachable" not in str(failed.value)
    http_server.clear_faults()
    http_server.fail_times("e.wav", 2, status=503)  # passing trouble: retried, then served
    assert audiodecode.load(http_server.url("e.wav"))[0].size > 0


def test_objects_from_a_server_without_validators_are_never_served_stale(
    daemon_s3: Daemon, http_server: HttpServer, tmp_path: Path
) -> None:
    """A server that sends neither ETag nor Last-Modified cannot tell a same-size rewrite
    apart: its objects are fetched again once their copy is older than a second."""
    http_server.validators = False
    served = http_server.root / "v.wav"
    write_wav(served, np.full(16000, 0.25, dtype=np.float32), 16000)
    url = http_server.url("v.wav")
    assert audiodecode.load(url)[0].mean() == pytest.approx(0.25, abs=1e-3)
    size = served.stat().st_size
    write_wav(served, np.full(16000, -0.5, dtype=np.float32), 16000)
    assert served.stat().st_size == size
    time.sleep(1.2)
    assert audiodecode.load(url)[0].mean() == pytest.approx(-0.5, abs=1e-3)


def test_damage_in_a_remote_file_names_its_url(
    daemon_s3: Daemon, http_server: HttpServer, clips: list[Path]
) -> None:
    """Damage met in the local copy of a URL is reported under the URL, never the copy's
    /proc path, for load() and for a loader's ``damaged`` list."""
    (http_server.root / "cut.wav").write_bytes(clips[1].read_bytes()[:4000])
    url = http_server.url("cut.wav")
    with pytest.warns(UserWarning) as warned:
        audiodecode.load(url)
    messages = [str(w.message) for w in warned]
    assert any(m.startswith(f"{url}: truncated") for m in messages), messages
    assert not any("/proc/" in m for m in messages), messages
    loader = AudioDataLoader([url], batch_size=1, max_seconds=0.1)
    list(loader)
    assert [(p, m.startswith(f"{url}: truncated")) for p, m in loader.damaged] == [(url, True)]


SECRETS = ("hunter2", "s1gvalue", "amzs1gnature", "t0kenvalue")


def test_errors_show_urls_without_their_credentials(
    daemon: Daemon, binary: Path, http_server: HttpServer, clips: list[Path], tmp_path: Path
) -> None:
    """A URL's password and a signed URL's secret query values never reach an error
    message (the client's exception, a skipped item, the CLI's stderr): they read ``***``,
    while the host, the path and the other parameters still say which object failed."""
    (http_server.root / "denied.wav").write_bytes(clips[0].read_bytes())
    http_server.forbid("denied.wav")
    with_password = f"http://alice:hunter2@127.0.0.1:{http_server.port}/missing.wav"
    signed = (
        f"{http_server.url('denied.wav')}?sig=s1gvalue&X-Amz-Signature=amzs1gnature"
        "&X-Amz-Expires=60&Token=t0kenvalue"
    )
    cases = [
        (with_password, "http://alice:***@127.0.0.1", "/missing.wav"),
        (signed, "sig=***&X-Amz-Signature=***&X-Amz-Expires=60&Token=***", "/denied.wav"),
    ]
    for url, shown, path in cases:
        with pytest.raises(audiodecode.AudioDecodeError) as caught:
            audiodecode.load(url)
        message = str(caught.value)
        assert shown in message and path in message, message
        assert not any(s in message for s in SECRETS), message
        for command in (["decode", url, "-o", str(tmp_path / "out.wav")], ["info", url]):
            run = subprocess.run(
                [str(binary), *command], capture_output=True, text=True, timeout=120, check=False
            )
            assert run.returncode != 0
            assert shown in run.stderr and path in run.stderr, run.stderr
            assert not any(s in run.stderr + run.stdout for s in SECRETS), run.stderr
    loader = AudioDataLoader([with_password, signed, str(clips[1])], on_error="skip")
    assert sum(len(b.paths) for b in loader) == 1
    skipped = dict(loader.skipped)
    assert set(skipped) == {with_password, signed}  # the paths as given: the user's data
    for message in skipped.values():
        assert "***" in message and not any(s in message for s in SECRETS), message


def test_file_urls_are_read_as_the_local_paths_they_name(
    daemon: Daemon, binary: Path, clips: list[Path], tmp_path: Path
) -> None:
    """``file:///abs/path`` (percent-encoded, or with ``localhost`` as its host) is the local
    file wherever a path is taken: ``load``, the CLI, file lists, manifests; a file URL on
    another host is refused, saying so."""
    spaced = tmp_path / "with space é.wav"
    spaced.write_bytes(clips[1].read_bytes())
    url = "file://" + quote(str(spaced))
    expected, sr = audiodecode.load(spaced)
    for given in (url, url.replace("file://", "file://localhost", 1)):
        got, got_sr = audiodecode.load(given)
        assert got_sr == sr
        np.testing.assert_array_equal(got, expected)
    run = subprocess.run(
        [str(binary), "info", url], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0 and "Hz" in run.stdout, run.stderr
    out = tmp_path / "out.wav"
    run = subprocess.run(
        [str(binary), "decode", url, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0 and out.exists(), run.stderr
    urls = ["file://" + quote(str(c)) for c in clips]
    local = batches_of(AudioDataLoader([str(c) for c in clips], **FIRST_SECOND_IN_ORDER))
    listed = batches_of(AudioDataLoader(urls, **FIRST_SECOND_IN_ORDER))
    for (_, a), (_, b) in zip(local, listed, strict=True):
        np.testing.assert_array_equal(a, b)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(json.dumps({"audio_filepath": u}) for u in urls) + "\n")
    for dataset in (str(manifest), "file://" + quote(str(manifest))):
        listed = batches_of(AudioDataLoader(dataset, **FIRST_SECOND_IN_ORDER))
        assert [p for p, _ in listed] == [p for p, _ in local]
    elsewhere = "file://nas01" + quote(str(clips[0]))
    with pytest.raises(ValueError, match="on host 'nas01'"):
        audiodecode.load(elsewhere)
    with pytest.raises(ValueError, match="on host 'nas01'"):
        AudioDataLoader([elsewhere])
    run = subprocess.run(
        [str(binary), "info", elsewhere], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode != 0 and 'on host "nas01"' in run.stderr, run.stderr


def test_hidden_files_in_directories_and_prefixes_are_not_items(
    daemon_s3: Daemon, s3: S3Server, clips: list[Path], tmp_path: Path
) -> None:
    """Note [Hidden files]: a dataset copied from a Mac has an AppleDouble ``._NAME``
    beside every file (and ``__MACOSX/`` from a zip), a desktop's ``.Trash-1000`` keeps
    deleted files: none is an item, locally or under an S3 prefix, so an epoch with
    ``on_error="raise"`` reads the real clips instead of stopping at the first companion."""
    root = tmp_path / "copied"
    for i, clip in enumerate(clips):
        speaker = root / f"spk{i % 2}"
        speaker.mkdir(parents=True, exist_ok=True)
        (speaker / clip.name).write_bytes(clip.read_bytes())
        (speaker / f"._{clip.name}").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 78)
    (root / "__MACOSX" / "spk0").mkdir(parents=True)
    (root / "__MACOSX" / "spk0" / f"._{clips[0].name}").write_bytes(b"\x00\x05\x16\x07")
    (root / ".Trash-1000" / "files").mkdir(parents=True)
    (root / ".Trash-1000" / "files" / "deleted.wav").write_bytes(clips[1].read_bytes())
    name = bucket(s3)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.put(name, f"copied/{path.relative_to(root)}", path)

    def read(source: str | Path) -> list[tuple[str, str]]:
        loader = AudioDataLoader(source, batch_size=2, shuffle=False, on_error="raise")
        return [
            (Path(p).name, loader.classes[int(k)])
            for b in loader
            for p, k in zip(b.paths, b.labels)
        ]

    expected = sorted((c.name, f"spk{i % 2}") for i, c in enumerate(clips))
    assert sorted(read(root)) == expected
    assert sorted(read(f"s3://{name}/copied/")) == expected
