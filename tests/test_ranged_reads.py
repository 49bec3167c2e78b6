"""Parts of large remote files read by ranged GETs (Note [Ranged reads of remote files]):
an ``offset``/``duration`` into a long WAV, RF64 or SPHERE object fetches its header and
the blocks holding that part, never the whole object, and decodes to exactly what the same
request gives on the local file; formats whose layout the header does not give are fetched
whole, as before."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import audiodecode
import numpy as np
import pytest
from audiodecode import Daemon
from conftest import write_wav
from object_servers import HttpServer

# An object cache of 4 MB: objects over an eighth of it (500 KB) count as large.
CACHE_BYTES = 4_000_000


def noise(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (channels, round(seconds * rate)))


def with_trailing_chunk(path: Path) -> None:
    """Append a LIST chunk after the data (as Broadcast-WAV tools write metadata): ranged
    reads must not depend on the file ending with its samples."""
    info = b"INFOISFT" + (14).to_bytes(4, "little") + b"audiodecode\x00\x00\x00"
    chunk = b"LIST" + len(info).to_bytes(4, "little") + info
    data = bytearray(path.read_bytes() + chunk)
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def long_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Long recordings of several block layouts, each several MB."""
    root = tmp_path_factory.mktemp("long")
    files = {}
    files["wav16k"] = root / "speech16k.wav"
    write_wav(files["wav16k"], noise(300, 16000, 1, 1), 16000)
    files["wav44k"] = root / "stereo44k.wav"
    write_wav(files["wav44k"], noise(130, 44100, 2, 2), 44100)
    with_trailing_chunk(files["wav44k"])
    files["rf64"] = root / "float48k.wav"
    ffmpeg(
        "-i",
        str(files["wav16k"]),
        "-ar",
        "48000",
        "-c:a",
        "pcm_f32le",
        "-rf64",
        "always",
        str(files["rf64"]),
    )
    files["sph"] = root / "ulaw8k.sph"
    subprocess.run(
        # 20 minutes of 8 kHz µ-law (9.6 MB): four copies of the 16 kHz recording.
        ["sox", *[str(files["wav16k"])] * 4, "-r", "8000", "-e", "u-law", str(files["sph"])],
        check=True,
        timeout=120,
    )
    files["flac"] = root / "speech16k.flac"
    ffmpeg("-i", str(files["wav16k"]), str(files["flac"]))
    return files


@pytest.fixture
def served(http_server: HttpServer, long_files: dict[str, Path]) -> dict[str, str]:
    for path in long_files.values():
        (http_server.root / path.name).write_bytes(path.read_bytes())
    return {key: http_server.url(path.name) for key, path in long_files.items()}


def fetched(server: HttpServer, name: str) -> tuple[int, list[str | None]]:
    """Bytes the GETs of ``name`` asked for (a GET without a range: the whole file), and
    their ``Range`` headers."""
    size = (server.root / name).stat().st_size
    ranges = [r for m, p, r in server.log if m == "GET" and p == f"/{name}"]
    total = 0
    for r in ranges:
        if r is None:
            total += size
        else:
            first, last = r.removeprefix("bytes=").split("-")
            total += min(int(last), size - 1) - int(first) + 1
    return total, ranges


def decode_cli(
    binary: Path, source: str, out: Path, *args: str, cache_bytes: int = CACHE_BYTES
) -> np.ndarray:
    subprocess.run(
        [
            str(binary),
            "decode",
            source,
            "-o",
            str(out),
            "-q",
            "--object-cache-bytes",
            str(cache_bytes),
            *args,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return np.load(out)


@pytest.mark.parametrize(
    ("key", "args"),
    [
        ("wav16k", ["--offset", "200.5", "--duration", "3.25"]),
        ("wav44k", ["--offset", "61.2", "--duration", "4", "--sr", "16000", "--mono"]),
        ("rf64", ["--offset", "150", "--duration", "2.5", "--sr", "16000"]),
        ("sph", ["--offset", "700.125", "--duration", "5"]),
        # From an offset to the end: the tail alone.
        ("wav16k", ["--offset", "290"]),
    ],
)
def test_a_part_of_a_large_remote_file_is_fetched_alone_and_decodes_as_the_file(
    binary: Path,
    http_server: HttpServer,
    long_files: dict[str, Path],
    served: dict[str, str],
    tmp_path: Path,
    key: str,
    args: list[str],
) -> None:
    local = decode_cli(binary, str(long_files[key]), tmp_path / "local.npy", *args)
    http_server.clear_log()
    remote = decode_cli(binary, served[key], tmp_path / "remote.npy", *args)
    np.testing.assert_array_equal(remote, local)
    assert local.size > 0
    size = long_files[key].stat().st_size
    total, ranges = fetched(http_server, long_files[key].name)
    assert None not in ranges, f"a GET of the whole object: {ranges}"
    assert total < size * 0.6, f"{total} of {size} bytes fetched: {ranges}"


def test_info_of_a_large_remote_file_reads_its_header_alone(
    binary: Path, http_server: HttpServer, long_files: dict[str, Path], served: dict[str, str]
) -> None:
    for key in ("wav44k", "rf64", "sph"):
        local = subprocess.run(
            [str(binary), "info", "--json", str(long_files[key])],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        http_server.clear_log()
        remote = subprocess.run(
            [str(binary), "info", "--json", served[key], "--object-cache-bytes", str(CACHE_BYTES)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert remote.stdout.replace(served[key], str(long_files[key])) == local.stdout
        total, ranges = fetched(http_server, long_files[key].name)
        assert None not in ranges and total <= 4 << 20, ranges


def test_formats_without_a_block_layout_and_small_objects_are_fetched_whole(
    binary: Path,
    http_server: HttpServer,
    long_files: dict[str, Path],
    served: dict[str, str],
    tmp_path: Path,
) -> None:
    # A FLAC over an eighth of the object cache, which holds it whole.
    args = ["--offset", "100", "--duration", "2"]
    cache_bytes = 5 * long_files["flac"].stat().st_size
    local = decode_cli(binary, str(long_files["flac"]), tmp_path / "local.npy", *args)
    http_server.clear_log()
    remote = decode_cli(
        binary, served["flac"], tmp_path / "remote.npy", *args, cache_bytes=cache_bytes
    )
    np.testing.assert_array_equal(remote, local)
    # Its header (to learn that it has no block layout), then the whole object.
    _, ranges = fetched(http_server, long_files["flac"].name)
    assert ranges == ["bytes=0-65535", None]
    # A WAV the object cache keeps easily is fetched whole (the next part is read locally).
    http_server.clear_log()
    subprocess.run(
        [
            str(binary),
            "decode",
            served["wav16k"],
            "-o",
            str(tmp_path / "big.npy"),
            "-q",
            "--offset",
            "10",
            "--duration",
            "1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    _, ranges = fetched(http_server, long_files["wav16k"].name)
    assert ranges == [None]


def test_a_truncated_remote_file_read_in_parts_keeps_the_files_length_and_damage(
    binary: Path, http_server: HttpServer, long_files: dict[str, Path], tmp_path: Path
) -> None:
    # The data chunk states 300 s; the object holds 240 s of it.
    whole = long_files["wav16k"].read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: 44 + 240 * 16000 * 2])
    (http_server.root / "cut.wav").write_bytes(cut.read_bytes())
    url = http_server.url("cut.wav")
    for args in (["--offset", "238", "--duration", "5"], ["--offset", "100", "--duration", "1"]):
        local = decode_cli(binary, str(cut), tmp_path / "local.npy", *args)
        remote = decode_cli(binary, url, tmp_path / "remote.npy", *args)
        np.testing.assert_array_equal(remote, local)
    past = subprocess.run(
        [
            str(binary),
            "decode",
            url,
            "-o",
            str(tmp_path / "past.npy"),
            "-q",
            "--object-cache-bytes",
            str(CACHE_BYTES),
            "--offset",
            "250",
            "--duration",
            "1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert past.returncode != 0
    assert url in past.stderr


@pytest.fixture
def small_cache_daemon() -> Iterator[Daemon]:
    with Daemon(workers=2, object_cache_bytes=CACHE_BYTES) as d:
        yield d


def test_load_of_a_part_through_the_daemon_uses_ranges(
    small_cache_daemon: Daemon,
    http_server: HttpServer,
    long_files: dict[str, Path],
    served: dict[str, str],
) -> None:
    http_server.clear_log()
    remote, sr = audiodecode.load(served["wav44k"], sr=16000, offset=30.0, duration=2.0)
    local, local_sr = audiodecode.load(long_files["wav44k"], sr=16000, offset=30.0, duration=2.0)
    assert sr == local_sr == 16000
    np.testing.assert_array_equal(remote, local)
    total, ranges = fetched(http_server, long_files["wav44k"].name)
    assert None not in ranges
    assert total < long_files["wav44k"].stat().st_size * 0.6


def test_random_crops_of_long_remote_recordings_read_only_their_parts(
    small_cache_daemon: Daemon,
    http_server: HttpServer,
    long_files: dict[str, Path],
    served: dict[str, str],
) -> None:
    # Long files, 2 s crops: each item seeks (Note [Damage rule] learns the file's verdict
    # once, by the damage check's windows, themselves read in parts).
    keys = ["wav16k", "wav44k", "sph"]

    def epochs(files: list[str]) -> list[np.ndarray]:
        loader = audiodecode.AudioDataLoader(
            files,
            batch_size=3,
            max_seconds=2.0,
            pad_to_max=True,
            cache=False,
            seed=5,
            on_error="raise",
            daemon=small_cache_daemon,
        )
        out = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            out += [np.asarray(b.audio).copy() for b in loader]
        return out

    local = epochs([str(long_files[k]) for k in keys])
    http_server.clear_log()
    remote = epochs([served[k] for k in keys])
    assert len(remote) == len(local) == 2
    for r, l in zip(remote, local, strict=True):
        np.testing.assert_array_equal(r, l)
    for key in keys:
        _, ranges = fetched(http_server, long_files[key].name)
        assert ranges and None not in ranges, (key, ranges)
