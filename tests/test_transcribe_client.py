"""The transcription client without a model: records to results and back, subtitles, the
option mapping, and the Transcribe message flow against a fake daemon."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from audiodecode import (
    BadRequestError,
    DaemonError,
    Segment,
    Transcription,
    TranscriptionError,
    WhisperInference,
    Word,
    transcribe_batch,
    transcribe_file,
)
from audiodecode import transcribe as transcribe_module
from audiodecode._protocol import (
    ErrorInfo,
    ErrorKind,
    Request,
    Response,
    TranscribeOptions,
)
from audiodecode._whisper_options import _CONVERT, transcribe_options
from conftest import greet, recv_request, send

RECORD: dict[str, Any] = {
    "audio_filepath": "/data/a.wav",
    "duration": 3661.5,
    "text": "Hello. Bye.",
    "language": "en",
    "language_probability": 0.97,
    "segments": [
        {
            "start": 0.0,
            "end": 1.5,
            "text": " Hello.",
            "avg_logprob": -0.25,
            "no_speech_prob": 0.01,
            "compression_ratio": 0.8,
            "words": [{"start": 0.0, "end": 1.5, "word": " Hello.", "probability": 0.9}],
        },
        {
            "start": 3661.25,
            "end": 3662.0,
            "text": " Bye. ",
            "avg_logprob": -0.5,
            "no_speech_prob": 0.02,
            "compression_ratio": 1.0,
            "language": "de",
        },
    ],
}


def record(path: str, text: str) -> dict[str, Any]:
    return {**RECORD, "audio_filepath": path, "text": text}


# --- Results. -------------------------------------------------------------------------------


def test_record_round_trip() -> None:
    t = Transcription.from_record(json.loads(json.dumps(RECORD)))
    assert t.path == "/data/a.wav" and t.language == "en" and t.duration == 3661.5
    first, second = t.segments
    assert first.words == [Word(start=0.0, end=1.5, word=" Hello.", probability=0.9)]
    assert first.language is None
    assert second == Segment(3661.25, 3662.0, " Bye. ", -0.5, 0.02, 1.0, language="de")
    # Optional fields stay absent rather than null, as in the daemon's records.
    assert t.to_dict() == RECORD
    assert json.dumps(t.to_dict()) == json.dumps(RECORD)


def test_damage_is_kept_from_a_record() -> None:
    damaged = {**RECORD, "damage": "/data/a.wav: truncated after 2.000 s"}
    t = Transcription.from_record(damaged)
    assert t.damage == "/data/a.wav: truncated after 2.000 s"
    assert t.to_dict() == damaged
    assert Transcription.from_record(RECORD).damage is None


def test_error_record_raises() -> None:
    failed = {"audio_filepath": "/bad.mp3", "error": "/bad.mp3: corrupt"}
    with pytest.raises(TranscriptionError, match="/bad.mp3: corrupt") as e:
        Transcription.from_record(failed)
    assert e.value.path == "/bad.mp3"


def test_subtitles(tmp_path: Path) -> None:
    t = Transcription.from_record(RECORD)
    srt = "1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n"
    vtt = (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello.\n\n01:01:01.250 --> 01:01:02.000\nBye.\n\n"
    )
    assert t.to_srt() == srt
    assert t.to_vtt() == vtt
    t.save_srt(tmp_path / "a.srt")
    t.save_vtt(str(tmp_path / "a.vtt"))
    assert (tmp_path / "a.srt").read_bytes() == srt.encode()
    assert (tmp_path / "a.vtt").read_bytes() == vtt.encode()
    empty = Transcription("/x.wav", 0.0, "", "en", 0.0, [])
    assert empty.to_srt() == "" and empty.to_vtt() == "WEBVTT\n\n"


@pytest.mark.parametrize(
    ("seconds", "srt"),
    [
        (0.0005, "00:00:00,001"),  # half a millisecond rounds up, as in Rust
        (0.0025, "00:00:00,003"),  # not to even, as Python's round() would
        (-1.0, "00:00:00,000"),
        (59.9996, "00:01:00,000"),
        (360000.0, "100:00:00,000"),
    ],
)
def test_clock(seconds: float, srt: str) -> None:
    seg = Segment(seconds, seconds, "x", 0.0, 0.0, 0.0)
    assert Transcription("/x", 0.0, "", "", 0.0, [seg]).to_srt() == f"1\n{srt} --> {srt}\nx\n\n"


# --- Options. -------------------------------------------------------------------------------


def test_options_default_to_the_protocol_defaults() -> None:
    assert transcribe_options() == TranscribeOptions()
    fields = {f.name for f in dataclasses.fields(TranscribeOptions)}
    assert set(_CONVERT) == fields


def test_faster_whisper_names() -> None:
    opts = transcribe_options(
        model="large-v3",
        language="de",
        temperature=0.3,
        cpu_threads=4,
        batch_size=None,
        suppress_tokens=None,
        compression_ratio_threshold=None,
        beam_size=1,
        word_timestamps=True,
    )
    assert opts.model == "large-v3" and opts.language == "de"
    assert opts.temperatures == [0.3]
    assert opts.threads == 4 and opts.batch_size == 0
    assert opts.suppress_tokens == [] and opts.compression_ratio_threshold is None
    assert opts.beam_size == 1 and opts.word_timestamps is True
    assert transcribe_options(temperature=(0, 0.5)).temperatures == [0.0, 0.5]
    assert transcribe_options(threads=2).threads == 2


def test_vad_options_take_faster_whispers_names() -> None:
    assert transcribe_options().vad_filter is True
    off = transcribe_options(vad_filter=False)
    assert off.vad_filter is False
    given = transcribe_options(
        vad_parameters={"min_silence_duration_ms": 500, "max_speech_duration_s": float("inf")}
    ).vad
    assert given.min_silence_duration_ms == 500
    assert given.max_speech_duration_s is None
    assert given.speech_pad_ms == 400 and given.threshold == 0.5

    @dataclasses.dataclass
    class LikeFasterWhispers:
        threshold: float = 0.6
        neg_threshold: float | None = None
        min_speech_duration_ms: int = 0
        max_speech_duration_s: float = float("inf")
        min_silence_duration_ms: int = 2000
        speech_pad_ms: int = 400

    theirs = transcribe_options(vad_parameters=LikeFasterWhispers()).vad
    assert (theirs.threshold, theirs.min_silence_duration_ms) == (0.6, 2000)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"clip_timestamps": "0"}, TypeError, "'clip_timestamps'"),
        ({"vad_filter": 1}, TypeError, "vad_filter"),
        ({"vad_parameters": {"threshold": 2}}, ValueError, "threshold"),
        ({"vad_parameters": {"window_size_samples": 512}}, TypeError, "window_size_samples"),
        ({"vad_parameters": [0.5]}, TypeError, "vad_parameters"),
        (
            {"temperatures": [0.1], "temperature": 0.2},
            TypeError,
            "'temperatures' and 'temperature'",
        ),
        ({"threads": 1, "cpu_threads": 2}, TypeError, "'threads' and 'cpu_threads'"),
        ({"beam_size": -1}, ValueError, "beam_size"),
        ({"beam_size": 2.5}, TypeError, "beam_size"),
        ({"word_timestamps": 1}, TypeError, "word_timestamps"),
        ({"language": 3}, TypeError, "language"),
        ({"temperature": []}, ValueError, "temperature"),
        ({"temperature": "0.2"}, TypeError, "temperature"),
        ({"suppress_tokens": [1 << 40]}, TypeError, "suppress_tokens"),
    ],
)
def test_bad_options(options: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        transcribe_options(**options)


def test_whisper_inference_options() -> None:
    with pytest.raises(TypeError, match="'clip_timestamps'"):
        WhisperInference("tiny", clip_timestamps="0")
    assert WhisperInference("tiny", vad_filter=False)._options({}).vad_filter is False
    w = WhisperInference("tiny", language="fr", cpu_threads=2, temperature=0.0)
    base = w._options({})
    assert (base.model, base.language, base.threads, base.temperatures) == ("tiny", "fr", 2, [0.0])
    assert base.batch_size == 0 and base.beam_size == 5
    # A call's keywords override the constructor's, aliases included.
    changed = w._options({"threads": 8, "language": None})
    assert (changed.threads, changed.language, changed.model) == (8, None, "tiny")


# --- The message flow against a fake daemon. ------------------------------------------------


@pytest.fixture
def socket_env(fake_daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Start a fake daemon at the default socket the client connects to."""
    monkeypatch.chdir(tmp_path)

    def start(script) -> None:
        monkeypatch.setenv("AUDIODECODE_SOCKET", fake_daemon(script))

    return start


def transcribed(index: int, rec: dict[str, Any]) -> Response.Transcribed:
    return Response.Transcribed(index=index, record=json.dumps(rec))


def test_batch_in_input_order(socket_env, tmp_path: Path) -> None:
    a, b = str(tmp_path / "a.wav"), str(tmp_path / "b.wav")

    def script(sock: socket.socket) -> None:
        greet(sock)
        req = recv_request(sock)
        assert isinstance(req, Request.Transcribe)
        # Relative paths arrive absolute; options are mapped.
        assert req.spec.paths == [a, b]
        assert req.spec.options == TranscribeOptions(model="tiny", language="de", beam_size=1)
        # Out of order on purpose: results are placed by index.
        send(
            sock,
            transcribed(1, record(b, "B")),
            transcribed(0, record(a, "A")),
            Response.TranscribeDone(files=2, errors=0),
        )

    socket_env(script)
    out = transcribe_batch(["a.wav", "b.wav"], False, model="tiny", language="de", beam_size=1)
    assert [t.text for t in out] == ["A", "B"]
    assert [t.path for t in out] == [a, b]


def test_failed_file_raises_and_abandons_the_request(socket_env, tmp_path: Path) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        recv_request(sock)
        send(sock, transcribed(0, {"audio_filepath": "/x/a.wav", "error": "/x/a.wav: corrupt"}))
        # The client closes the connection, which cancels the daemon's work.
        with pytest.raises(EOFError):
            recv_request(sock)

    socket_env(script)
    with pytest.raises(TranscriptionError, match="/x/a.wav: corrupt") as e:
        transcribe_batch(["a.wav", "b.wav"], show_progress=False)
    assert e.value.path == str(tmp_path / "a.wav")


def test_failed_file_skipped(socket_env, tmp_path: Path) -> None:
    bad = str(tmp_path / "bad.wav")

    def script(sock: socket.socket) -> None:
        greet(sock)
        recv_request(sock)
        send(
            sock,
            transcribed(0, {"audio_filepath": bad, "error": f"{bad}: corrupt"}),
            transcribed(1, record("/b.wav", "B")),
            Response.TranscribeDone(files=2, errors=1),
        )

    socket_env(script)
    w = WhisperInference("tiny")
    out = w.transcribe_batch(["bad.wav", "/b.wav"], show_progress=False, on_error="skip")
    assert out[0] is None and out[1] is not None and out[1].text == "B"
    assert w.skipped == [(bad, f"{bad}: corrupt")]


def test_request_error_raises(socket_env) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        recv_request(sock)
        info = ErrorInfo(kind=ErrorKind.BAD_REQUEST, path=None, message="no model 'nope'")
        send(sock, Response.Error(info))

    socket_env(script)
    with pytest.raises(BadRequestError, match="no model 'nope'"):
        transcribe_file("a.wav", model="nope")


def test_missing_files_are_a_daemon_error(socket_env) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        recv_request(sock)
        send(sock, transcribed(0, record("/a.wav", "A")), Response.TranscribeDone(1, 0))

    socket_env(script)
    with pytest.raises(DaemonError, match="1 of 2 files not transcribed"):
        transcribe_batch(["/a.wav", "/b.wav"], show_progress=False)


def test_malformed_record_is_a_daemon_error(socket_env) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        recv_request(sock)
        send(sock, Response.Transcribed(index=0, record='{"text": "no path"}'))
        with pytest.raises(EOFError):
            recv_request(sock)

    socket_env(script)
    with pytest.raises(DaemonError, match="malformed transcript"):
        transcribe_file("/a.wav")


def test_transcribe_file(socket_env) -> None:
    def script(sock: socket.socket) -> None:
        greet(sock)
        assert recv_request(sock).spec.paths == ["/a.wav"]
        send(sock, transcribed(0, RECORD), Response.TranscribeDone(files=1, errors=0))

    socket_env(script)
    assert transcribe_file("/a.wav").to_dict() == RECORD


def test_no_files_and_bad_arguments() -> None:
    # Nothing to do: no daemon is contacted.
    assert transcribe_batch([], show_progress=False) == []
    with pytest.raises(TypeError, match="list of paths"):
        transcribe_batch("a.wav")
    with pytest.raises(ValueError, match="on_error"):
        transcribe_batch(["a.wav"], on_error="ignore")


def test_progress_line_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails
    monkeypatch.setattr(sys, "stderr", Terminal())
    progress = transcribe_module._Progress(2, enabled=True)
    progress.update()
    progress.update()
    progress.close()
    out = sys.stderr.getvalue()
    assert out.startswith("\rtranscribed 1/2 files (") and out.endswith(" files/s)\n")
    assert "\rtranscribed 2/2 files (" in out
