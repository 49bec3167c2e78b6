"""The HTTP transcription service (`audiodecode serve --http`) driven by real clients: the
official `openai` package for OpenAI's routes, `curl` for whisper-asr-webservice's, raw
sockets for misbehaving clients. Speech is made with espeak-ng; the model is `tiny.en`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import srt
import webvtt
from audiodecode import Daemon, serve_http
from conftest import speak
from openai.types.audio import TranscriptionVerbose

SENTENCES = [
    "The green bottle stands on the kitchen table.",
    "Please call me when the train arrives.",
    "We will meet at the library after lunch.",
]
OPTIONS = {"model": "tiny.en", "threads": 2, "max_upload_mb": 4, "max_audio_s": 120}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three short sentences and one ~40 s recording of them, said again and again."""
    if shutil.which("sox") is None:
        pytest.fail("sox is required: apt-get install sox")
    root = tmp_path_factory.mktemp("http-speech")
    paths = [speak(root / f"s{i}.wav", text) for i, text in enumerate(SENTENCES)]
    pause = root / "pause.wav"
    subprocess.run(
        ["sox", "-n", "-r", "22050", "-c", "1", str(pause), "trim", "0", "0.8"], check=True
    )
    long = root / "long.wav"
    parts = [str(p) for _ in range(4) for p in (*paths, pause)]
    subprocess.run(["sox", *parts, str(long)], check=True)
    return [*paths, long]


@pytest.fixture(scope="module")
def very_long(speech: list[Path]) -> Path:
    """About 200 s of speech: seven or more windows."""
    path = speech[3].with_name("very_long.wav")
    subprocess.run(["sox", *[str(speech[3])] * 5, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def service(binary: Path) -> Iterator[Daemon]:
    with Daemon(workers=2, http="127.0.0.1:0", http_options=OPTIONS) as d:
        yield d


@pytest.fixture(scope="module")
def client(service: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.http_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def labels(
    binary: Path, speech: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """What `audiodecode label` writes for each file, each clip in a window of its own (as
    a lone request is)."""
    out = tmp_path_factory.mktemp("http-label") / "labels.jsonl"
    cmd = [str(binary), "label", *map(str, speech), "--out", str(out), "--model", "tiny.en"]
    subprocess.run([*cmd, "--threads", "2", "--no-pack"], check=True, capture_output=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return {Path(r["audio_filepath"]).name: r["text"] for r in records}


def transcribe(client: openai.OpenAI, path: Path, **kwargs: object) -> object:
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f, **kwargs)  # type: ignore[call-overload]


def metrics(service: Daemon) -> dict[str, float]:
    with urllib.request.urlopen(f"{service.http_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def stems(text: str) -> set[str]:
    """Content words by their first five letters ("model" for "models")."""
    return {w.strip(".,").lower()[:5] for w in text.split() if len(w.strip(".,")) > 3}


def curl(*args: str) -> tuple[int, str]:
    """`curl` itself, as whisper-asr-webservice's users call it: (status, body)."""
    done = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_texts_equal_audiodecode_label(
    client: openai.OpenAI, speech: list[Path], labels: dict[str, str]
) -> None:
    for path in speech:
        answer = transcribe(client, path)
        assert answer.text == labels[path.name], path.name  # type: ignore[attr-defined]
    assert "kitchen table" in labels["s0.wav"].lower()


def test_recordings_streamed_by_their_writer_are_transcribed(
    client: openai.OpenAI, speech: list[Path], tmp_path: Path
) -> None:
    """What a browser's MediaRecorder uploads (WebM/Opus whose sizes are left unknown) and
    a WAV written to a pipe (sizes 0xFFFFFFFF) are whole recordings: once both were called
    truncated and refused with a 400."""
    for fmt, codec, name in (("webm", "libopus", "live.webm"), ("wav", "pcm_s16le", "piped.wav")):
        piped = subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-i", str(speech[0]), "-c:a", codec]
            + ["-f", fmt, "-"],
            check=True,
            capture_output=True,
        ).stdout
        path = tmp_path / name
        path.write_bytes(piped)
        answer = transcribe(client, path)
        assert {"green", "kitch", "table"} <= stems(answer.text), (name, answer.text)  # type: ignore[attr-defined]


def test_every_response_format_parses(
    client: openai.OpenAI, speech: list[Path], labels: dict[str, str]
) -> None:
    text = transcribe(client, speech[0], response_format="text")
    assert isinstance(text, str) and text.strip() == labels["s0.wav"]

    subtitles = list(srt.parse(str(transcribe(client, speech[3], response_format="srt"))))
    # Past 30 s a recording is read a ≤30 s piece per segment (see Note [VAD in labeling]).
    assert len(subtitles) >= 2
    assert all(s.start < s.end for s in subtitles)
    assert " ".join(s.content for s in subtitles) == labels["long.wav"]

    vtt = str(transcribe(client, speech[3], response_format="vtt"))
    captions = webvtt.from_string(vtt)
    assert len(captions) == len(subtitles)
    assert " ".join(c.text for c in captions) == labels["long.wav"]

    verbose = transcribe(
        client,
        speech[1],
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    # The official client's own model of the response, validated field by field.
    checked = TranscriptionVerbose.model_validate(verbose.model_dump())  # type: ignore[attr-defined]
    assert checked.language == "english" and checked.duration > 1.0
    assert checked.text == labels["s1.wav"]
    assert checked.segments and checked.words
    assert all(w.start <= w.end for w in checked.words)
    assert "call" in " ".join(w.word for w in checked.words).lower()


def test_stream_events_join_to_the_text(
    client: openai.OpenAI, speech: list[Path], labels: dict[str, str]
) -> None:
    with open(speech[3], "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) >= 2 and len(done) == 1 and events[-1] is done[0]
    assert "".join(deltas) == done[0].text == labels["long.wav"]


def test_models_and_unknown_ones(client: openai.OpenAI, speech: list[Path]) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "tiny.en"} <= ids
    with pytest.raises(openai.NotFoundError, match="large-v9"), open(speech[0], "rb") as f:
        client.audio.transcriptions.create(model="large-v9", file=f)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_english_only_model_refuses_to_translate(
    client: openai.OpenAI, speech: list[Path]
) -> None:
    with pytest.raises(openai.BadRequestError, match="English-only"), open(speech[0], "rb") as f:
        client.audio.translations.create(model="whisper-1", file=f)


def test_asr_routes_with_curl(service: Daemon, speech: list[Path], labels: dict[str, str]) -> None:
    url = service.http_url
    status, body = curl("-F", f"audio_file=@{speech[0]}", f"{url}/asr?output=txt")
    assert status == 200 and body.strip() == labels["s0.wav"]
    status, body = curl(
        "-F", f"audio_file=@{speech[3]}", f"{url}/asr?output=json&word_timestamps=true"
    )
    answer = json.loads(body)
    assert status == 200 and answer["language"] == "en" and len(answer["segments"]) >= 2
    assert all(s["words"] for s in answer["segments"])
    status, body = curl("-F", f"audio_file=@{speech[3]}", f"{url}/asr?output=tsv")
    rows = body.strip().splitlines()
    assert status == 200 and rows[0] == "start\tend\ttext" and len(rows) >= 3
    status, body = curl("-F", f"audio_file=@{speech[3]}", f"{url}/asr?output=vtt")
    assert status == 200 and len(webvtt.from_string(body)) >= 2

    # encode=false: raw 16 kHz mono 16-bit PCM, as whisper-asr-webservice takes it.
    raw = speech[0].with_suffix(".pcm")
    subprocess.run(
        [
            "sox",
            str(speech[0]),
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed",
            "-t",
            "raw",
            str(raw),
        ],
        check=True,
    )
    status, body = curl("-F", f"audio_file=@{raw}", f"{url}/asr?encode=false&output=txt")
    assert status == 200 and "kitchen" in body.lower()

    status, body = curl("-F", f"audio_file=@{speech[1]}", f"{url}/detect-language")
    answer = json.loads(body)
    assert (
        status == 200
        and answer["language_code"] == "en"
        and answer["detected_language"] == "english"
    )

    status, body = curl("-F", f"audio_file=@{speech[0]}", f"{url}/asr?output=docx")
    assert status == 400 and json.loads(body)["error"]["param"] == "output"


def test_bad_inputs_get_clear_4xx_and_the_service_lives(
    client: openai.OpenAI, service: Daemon, speech: list[Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(openai.BadRequestError, match="empty.wav: the uploaded file is empty"):
        transcribe(client, empty)
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio at all\n" * 20)
    with pytest.raises(openai.BadRequestError, match="notes.txt") as refused:
        transcribe(client, notes)
    assert refused.value.code == "invalid_audio"
    # Streamed, the same refusal is still a status, not a 200 with an error event.
    with pytest.raises(openai.BadRequestError, match="notes.txt"):
        list(transcribe(client, notes, stream=True))  # type: ignore[call-overload]
    damaged = tmp_path / "damaged.wav"
    damaged.write_bytes(speech[0].read_bytes()[:300])
    with pytest.raises(openai.BadRequestError, match="damaged.wav: truncated"):
        transcribe(client, damaged)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        transcribe(client, speech[0], response_format="xml")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        transcribe(client, speech[0], temperature=3)
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (5 << 20))
    with pytest.raises(openai.APIStatusError) as too_big:
        transcribe(client, big)
    assert too_big.value.status_code == 413
    status, _ = curl(f"{service.http_url}/health")
    assert status == 200


def huge_upload(url: str, claimed: int) -> bytes:
    """Starts an upload of `claimed` bytes and keeps sending until the service answers or
    hangs up; returns what it answered."""
    host, port = url.removeprefix("http://").split(":")
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            (
                f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {claimed}\r\n\r\n"
            ).encode()
            + head
        )
        chunk = b"\0" * (1 << 20)
        try:
            for _ in range(claimed >> 20):
                s.sendall(chunk)
        except OSError:
            pass  # the service hung up once it had enough
        answer = b""
        try:
            while part := s.recv(65536):
                answer += part
        except OSError:
            pass
        return answer


def test_a_two_gigabyte_upload_is_refused_early(service: Daemon) -> None:
    started = time.monotonic()
    answer = huge_upload(service.http_url or "", 2 << 30)
    # Refused after the limit's few megabytes, not after reading two gigabytes.
    assert time.monotonic() - started < 20
    assert answer == b"" or b" 413 " in answer.split(b"\r\n", 1)[0]
    status, _ = curl(f"{service.http_url}/health")
    assert status == 200


def test_a_client_that_leaves_mid_upload_frees_its_work(
    service: Daemon, speech: list[Path]
) -> None:
    host, port = (service.http_url or "").removeprefix("http://").split(":")
    body = speech[3].read_bytes()
    boundary = "leaving"
    for cut in (len(body) // 2, None):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="l.wav"\r\n\r\n'
            ).encode()
            tail = f"\r\n--{boundary}--\r\n".encode()
            length = len(head) + len(body) + len(tail)
            s.sendall(
                (
                    f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {length}\r\n\r\n"
                ).encode()
                + head
                + (body[:cut] if cut else body + tail)
            )
        # Both leave: mid-upload, and right after the upload while the model works.

    def uploads_held() -> list[str]:
        held = []
        for fd in Path(f"/proc/{service.pid}/fd").iterdir():
            try:
                target = str(fd.readlink())
            except OSError:
                continue  # closed while listed
            if "memfd:" in target:
                held.append(target)
        return held

    # The queue empties when the work is taken; the upload is dropped when the work that
    # holds it ends (on a loaded machine, a moment later): wait for both.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        metrics(service)["audiodecode_queue_requests"] > 0 or uploads_held()
    ):
        time.sleep(0.2)
    assert metrics(service)["audiodecode_queue_requests"] == 0
    # No upload is held in memory any more.
    assert not uploads_held()
    status, _ = curl(f"{service.http_url}/health")
    assert status == 200


def test_sixteen_concurrent_requests_share_batches(
    client: openai.OpenAI, service: Daemon, speech: list[Path], labels: dict[str, str]
) -> None:
    before = metrics(service)
    files = [speech[i % len(speech)] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda p: transcribe(client, p).text, files))  # type: ignore[attr-defined]
    # Packed with other requests' clips a word may be read differently (an espeak-ng "model
    # stands" heard as "bottles tend"), so the words must agree in sum, not each one.
    matched = wanted = 0
    for path, text in zip(files, answers, strict=True):
        want, got = stems(labels[path.name]), stems(text)
        assert len(want & got) >= 0.6 * len(want), (path.name, text)
        matched, wanted = matched + len(want & got), wanted + len(want)
    assert matched >= 0.9 * wanted, answers
    after = metrics(service)
    batches = after["audiodecode_batches_total"] - before["audiodecode_batches_total"]
    requests = (
        after["audiodecode_batch_requests_total"] - before["audiodecode_batch_requests_total"]
    )
    assert batches >= 1 and requests > batches  # some batch held several requests
    assert (
        after['audiodecode_batch_requests_bucket{le="1"}']
        < after["audiodecode_batch_requests_count"]
    )


def test_a_short_request_does_not_wait_for_a_long_one(
    binary: Path, speech: list[Path], very_long: Path
) -> None:
    # Batches of one window: the long request needs seven or more model calls.
    with serve_http("127.0.0.1:0", model="tiny.en", threads=2, batch_size=1) as fair:
        client = openai.OpenAI(base_url=f"{fair.http_url}/v1", api_key="unused", max_retries=0)
        finished: dict[str, float] = {}

        def timed(name: str, path: Path) -> None:
            transcribe(client, path)
            finished[name] = time.monotonic()

        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(timed, "long", very_long)
            time.sleep(1.0)  # the long one is decoded and in the model's hands
            short = pool.submit(timed, "short", speech[0])
            long.result(), short.result()
        assert finished["short"] < finished["long"]


def test_a_long_stream_sends_each_pieces_text_as_it_is_final(binary: Path, very_long: Path) -> None:
    # Batches of one window: the pieces finish one model call after another, and each
    # piece's text goes out then, not all at the end (Note [Streamed pieces]).
    with serve_http("127.0.0.1:0", model="tiny.en", threads=2, batch_size=1) as fair:
        client = openai.OpenAI(base_url=f"{fair.http_url}/v1", api_key="unused", max_retries=0)
        started = time.monotonic()
        arrivals: list[tuple[float, object]] = []
        with open(very_long, "rb") as f:
            for event in client.audio.transcriptions.create(model="whisper-1", file=f, stream=True):
                arrivals.append((time.monotonic() - started, event))
        whole = transcribe(client, very_long).text  # type: ignore[attr-defined]
    deltas = [(t, e.delta) for t, e in arrivals if e.type == "transcript.text.delta"]  # type: ignore[attr-defined]
    done_at, done = arrivals[-1]
    assert done.type == "transcript.text.done"  # type: ignore[attr-defined]
    assert len(deltas) >= 5, deltas
    assert "".join(d for _, d in deltas) == done.text == whole  # type: ignore[attr-defined]
    # The first piece's text came while most of the model's work was still ahead.
    assert deltas[0][0] < 0.6 * done_at, (deltas[0][0], done_at)


def test_a_full_queue_answers_503_at_once(
    binary: Path, speech: list[Path], very_long: Path
) -> None:
    with serve_http("127.0.0.1:0", model="tiny.en", threads=2, batch_size=1, max_queued=1) as busy:
        client = openai.OpenAI(base_url=f"{busy.http_url}/v1", api_key="unused", max_retries=0)
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(transcribe, client, very_long)
            time.sleep(1.0)
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as refused:
                transcribe(client, speech[0])
            assert refused.value.status_code == 503 and time.monotonic() - started < 5
            long.result()
        assert transcribe(client, speech[0]).text  # type: ignore[attr-defined]


def test_a_key_is_required_when_set_and_public_addresses_need_one(
    binary: Path, speech: list[Path], very_long: Path, tmp_path: Path
) -> None:
    keyed_service = serve_http(
        "127.0.0.1:0", model="tiny.en", api_key="s3cret", threads=1, request_timeout_s=2
    )
    with keyed_service as keyed:
        url = keyed.http_url
        status, body = curl("-F", f"file=@{speech[0]}", f"{url}/v1/audio/transcriptions")
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            transcribe(wrong, speech[0])
        right = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert "kitchen" in transcribe(right, speech[0]).text.lower()  # type: ignore[attr-defined]
        # Past the request timeout: a 504, and the work is dropped.
        with pytest.raises(openai.APIStatusError) as slow:
            transcribe(right, very_long)
        assert slow.value.status_code == 504
        assert curl(f"{url}/health")[0] == 200
    refused = subprocess.run(
        [str(binary), "serve", "--foreground", "--socket", str(tmp_path / "s.sock")]
        + ["--http", "0.0.0.0:0", "--model", "tiny.en"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "--api-key" in refused.stderr


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_multilingual_model_translates_and_detects(binary: Path, tmp_path: Path) -> None:
    german = tmp_path / "de.wav"
    text = "Der Zug kommt heute Abend um acht Uhr in Berlin an."
    speak(german, text, voice="de")
    with serve_http("127.0.0.1:0", model="base", threads=2) as multilingual:
        url = multilingual.http_url
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with open(german, "rb") as f:
            english = client.audio.translations.create(model="whisper-1", file=f).text
        assert "berlin" in english.lower() and "zug" not in english.lower(), english
        status, body = curl("-F", f"audio_file=@{german}", f"{url}/detect-language")
        assert status == 200 and json.loads(body)["language_code"] == "de"
        heard = transcribe(client, german, response_format="verbose_json")
        assert heard.language == "german"  # type: ignore[attr-defined]
