"""Shared fixtures: the real Rust binary and a test corpus for the cross-language tests,
and a scripted fake daemon for tests of the client's message flow."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

# Indexes of remote shards learnt by fetching them (Note [Learnt shard indexes]) are kept in
# a directory of this session, not the user's cache: a test that expects a shard fetched
# whole must not find it learnt by an earlier run. Daemons started by the tests inherit it.
_INDEX_CACHE = tempfile.mkdtemp(prefix="audiodecode-indexes-")
os.environ["AUDIODECODE_INDEX_CACHE"] = _INDEX_CACHE
atexit.register(shutil.rmtree, _INDEX_CACHE, ignore_errors=True)
sys.path.insert(0, str(REPO / "client-py"))

from audiodecode import Daemon
from audiodecode._protocol import (
    PROTOCOL_VERSION,
    Request,
    Response,
    decode_request,
    encode_response,
    frame,
)
from audiodecode._ring import shm_path
from object_servers import (  # noqa: F401 - fixtures
    azure_server,
    gcs_server,
    http_server,
    s3_server,
)


def built_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/audiodecode/target"))
    return Path(os.environ.get("AUDIODECODE_BIN", target / "release/audiodecode"))


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV from float samples ``[T]`` or ``[C, T]`` in [-1, 1]."""
    planes = np.atleast_2d(samples)
    pcm = np.round(planes.T * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(planes.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """``[C, T]`` floats with soundfile's int16 scaling (x / 32768)."""
    with wave.open(str(path), "rb") as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        return (raw.reshape(-1, w.getnchannels()).T / 32768.0).astype(np.float32), w.getframerate()


# Loader settings that make a few short clips into fixed-shape batches in file order
# (comparing a remote dataset's batches with the local files').
FIRST_SECOND_IN_ORDER = {
    "batch_size": 2,
    "max_seconds": 1.0,
    "crop": "start",
    "pad_to_max": True,
    "shuffle": False,
}


def tone(seconds: float, rate: int, freq: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


@dataclass(frozen=True)
class Corpus:
    root: Path
    # Mono 16 kHz WAVs of different lengths under classes/<name>/, in sorted path order.
    clips: list[Path]
    classes: list[str]  # class name per clip
    resampled: list[Path]  # 44.1 kHz mono WAVs
    stereo: Path  # 48 kHz, different tones left and right
    encoded: dict[str, Path]  # flac/mp3/ogg made by ffmpeg from `source`
    source: Path
    garbage: Path
    truncated: Path


# Sentences for synthetic speech (espeak-ng): distinct content words, so a transcript
# shows which sentence it heard.
SENTENCES = [
    "The green bottle stands on the kitchen table.",
    "Please call me when the train arrives.",
    "We will meet at the library after lunch.",
    "The farmer carried fresh bread to the market.",
    "My neighbour painted the old wooden bridge.",
    "Every summer the village opens a small museum.",
]


def speak(path: Path, text: str, voice: str = "en-us", rate: int = 130) -> Path:
    """`text` said by espeak-ng into the WAV file `path` (22.05 kHz mono)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required: apt-get install espeak-ng")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), text], check=True)
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    names = ["bird", "cat", "dog"]
    clips, classes = [], []
    for i in range(14):
        name = names[i % 3]
        path = root / "classes" / name / f"clip{i:02d}.wav"
        write_wav(path, tone(0.3 + 0.1 * i, 16000, 220 + 37 * i, 0.2 + 0.04 * i), 16000)
        clips.append(path)
        classes.append(name)
    order = sorted(range(len(clips)), key=lambda i: clips[i])
    clips, classes = [clips[i] for i in order], [classes[i] for i in order]

    resampled = []
    for i in range(3):
        path = root / "other" / f"hi{i}.wav"
        write_wav(path, tone(0.7 + 0.2 * i, 44100, 500 + 100 * i), 44100)
        resampled.append(path)
    stereo = root / "other" / "stereo.wav"
    write_wav(stereo, np.stack([tone(1.0, 48000, 300), tone(1.0, 48000, 900, 0.3)]), 48000)

    source = root / "other" / "source.wav"
    write_wav(source, tone(1.2, 44100, 440), 44100)
    encoded = {}
    for ext, codec in (("flac", "flac"), ("mp3", "libmp3lame"), ("ogg", "libvorbis")):
        out = root / "other" / f"source.{ext}"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c:a", codec, str(out)],
            check=True,
        )
        encoded[ext] = out

    broken = root / "broken"
    broken.mkdir()
    garbage = broken / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes())
    truncated = broken / "truncated.wav"
    whole = clips[-1].read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    return Corpus(root, clips, classes, resampled, stereo, encoded, source, garbage, truncated)


@pytest.fixture
def shm_name() -> Iterator[str]:
    """A fresh shared-memory name for a synthetic ring, unlinked after the test."""
    # Not the daemon's "audiodecode-" prefix: a starting daemon may sweep those.
    name = f"/adtest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        os.unlink(shm_path(name))
    except FileNotFoundError:
        pass


@pytest.fixture(scope="session")
def binary() -> Iterator[Path]:
    """The built daemon, exported as AUDIODECODE_BIN for the client."""
    path = built_binary()
    if not path.exists():
        pytest.fail(f"build the daemon first: {path} is missing")
    previous = os.environ.get("AUDIODECODE_BIN")
    os.environ["AUDIODECODE_BIN"] = str(path)
    yield path
    if previous is None:
        del os.environ["AUDIODECODE_BIN"]
    else:
        os.environ["AUDIODECODE_BIN"] = previous


@pytest.fixture
def daemon(binary: Path) -> Iterator[Daemon]:
    """A private daemon for one test; loaders and load() inside the test use it."""
    with Daemon(workers=2) as d:
        yield d


# --- A fake daemon on a Unix socket, driven by a script per connection. ----------------------

Script = Callable[[socket.socket], None]


def recv_request(sock: socket.socket) -> object:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    (n,) = struct.unpack("<I", exact(4))
    return decode_request(exact(n))


def send(sock: socket.socket, *messages: object) -> None:
    for m in messages:
        sock.sendall(frame(encode_response(m)))


def greet(sock: socket.socket) -> None:
    assert isinstance(recv_request(sock), Request.Hello)
    send(sock, Response.Hello(version=PROTOCOL_VERSION, daemon_pid=1234))


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[Callable[[Script], str]]:
    """Serve one connection with a script; re-raises the script's failures at teardown."""
    path = str(tmp_path / "fake.sock")
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def start(script: Script) -> str:
        def run() -> None:
            conn, _ = listener.accept()
            try:
                script(conn)
            except BaseException as e:  # noqa: BLE001 - reported by the fixture
                errors.append(e)
            finally:
                conn.close()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return path

    yield start
    for t in threads:
        t.join(5)
    listener.close()
    if errors:
        raise errors[0]
