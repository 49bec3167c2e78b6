"""The Python codec against the golden vectors the Rust protocol tests write: each decodes
to the values `protocol/tests/golden.rs` encodes and re-encodes to identical bytes."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from audiodecode._protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Augment,
    CropMode,
    Dataset,
    Downmix,
    ErrorInfo,
    ErrorKind,
    GpuStatus,
    ItemInfo,
    LoadedAudio,
    LoadSpec,
    OnError,
    ProtocolError,
    Quality,
    Request,
    Response,
    RingGeometry,
    SkippedItem,
    StatusReport,
    StreamInfo,
    StreamSpec,
    StreamStatus,
    TranscribeOptions,
    TranscribeSpec,
    decode,
    decode_request,
    decode_response,
    encode,
    encode_request,
    encode_response,
    frame,
    frame_length,
)
from conftest import REPO

GOLDEN = REPO / "protocol" / "golden"


def stream_spec(**changes: Any) -> StreamSpec:
    fields: dict[str, Any] = {
        "dataset": Dataset.Files(paths=["/data/a.wav", "/data/b é.flac"], labels=[0, -3]),
        "sample_rate": 16000,
        "mono": True,
        "channels": 1,
        "batch_size": 32,
        "max_seconds": 2.5,
        "crop": CropMode.RANDOM,
        "pad_to_max": False,
        "shuffle": True,
        "seed": 0x0123_4567_89AB_CDEF,
        "epoch": 3,
        "start_batch": 5,
        "rank": 1,
        "world_size": 4,
        "drop_last": False,
        "on_error": OnError.RAISE,
        "quality": Quality.HQ,
        "prefetch": 0,
        "cache": True,
        "max_batch_seconds": None,
        "augment": [
            Augment.Gain(min_db=-6.0, max_db=6.0, p=1.0),
            Augment.Noise(
                min_snr_db=5.0,
                max_snr_db=20.0,
                noise=Dataset.Directory(path="/noise"),
                p=0.5,
            ),
            Augment.Speed(factors=[0.9, 1.0, 1.1], p=1.0),
            Augment.Shift(max_seconds=0.25, p=0.3),
            Augment.Reverb(rirs=Dataset.Manifest(path="/rir.jsonl", label_field=None), p=0.3),
        ],
        "strict": False,
        "downmix": Downmix.MEAN,
    }
    fields.update(changes)
    return StreamSpec(**fields)


REQUESTS: dict[str, Any] = {
    "req_hello": Request.Hello(version=PROTOCOL_VERSION, client_pid=4242),
    "req_open_stream": Request.OpenStream(stream_spec()),
    "req_open_manifest": Request.OpenStream(
        StreamSpec(
            dataset=Dataset.Manifest(path="/m.jsonl", label_field="text"),
            sample_rate=8000,
            mono=False,
            channels=2,
            batch_size=1,
            max_seconds=None,
            crop=CropMode.START,
            pad_to_max=True,
            shuffle=False,
            seed=0,
            epoch=0,
            start_batch=0,
            rank=0,
            world_size=1,
            drop_last=True,
            on_error=OnError.SKIP,
            quality=Quality.VHQ,
            prefetch=3,
            cache=False,
            max_batch_seconds=120.5,
            augment=[],
            strict=True,
            downmix=Downmix.ITU,
        )
    ),
    "req_open_directory": Request.OpenStream(
        stream_spec(dataset=Dataset.Directory(path="/d"), quality=Quality.FAST)
    ),
    "req_open_shards": Request.OpenStream(
        stream_spec(
            dataset=Dataset.Shards(
                format="webdataset", sources=["s3://b/s-{0..1}.tar"], label_field="cls"
            )
        )
    ),
    "req_release": Request.Release(stream=2, released=7),
    "req_close": Request.CloseStream(stream=2),
    "req_load": Request.Load(
        LoadSpec(
            path="/x.mp3",
            sample_rate=None,
            mono=False,
            offset=1.25,
            duration=0.5,
            quality=Quality.FAST,
            strict=True,
            downmix=Downmix.ITU,
        )
    ),
    "req_status": Request.Status(),
    "req_shutdown": Request.Shutdown(),
    "req_transcribe": Request.Transcribe(
        TranscribeSpec(
            paths=["/data/a.wav", "/data/b é.flac"],
            options=TranscribeOptions(language="de", hotwords="AudioDecode", word_timestamps=True),
        )
    ),
}

RESPONSES: dict[str, Any] = {
    "resp_hello": Response.Hello(version=PROTOCOL_VERSION, daemon_pid=99),
    "resp_stream_opened": Response.StreamOpened(
        StreamInfo(
            stream=1,
            shm_name="/audiodecode-0-1-abc",
            ring=RingGeometry.new(3, 4, 1, 16000, 16000),
            batches_per_epoch=10,
            items=[
                ItemInfo(path="/a.wav", label=1, text=None),
                ItemInfo(path="/b.wav", label=-1, text="hello"),
            ],
            classes=["cat", "dog"],
        )
    ),
    "resp_batch_ready": Response.BatchReady(stream=1, slot=2, seq=9),
    "resp_end_of_epoch": Response.EndOfEpoch(
        stream=1,
        skipped=[SkippedItem(index=4, path="/bad.mp3", message="/bad.mp3: corrupt")],
        damaged=[
            SkippedItem(
                index=7, path="/cut.flac", message="/cut.flac: truncated: audio ends at 1.500 s"
            )
        ],
    ),
    "resp_stream_failed": Response.StreamFailed(
        stream=1,
        error=ErrorInfo(kind=ErrorKind.CORRUPT, path="/bad.mp3", message="m"),
    ),
    "resp_loaded": Response.Loaded(
        LoadedAudio(
            sample_rate=16000,
            channels=1,
            frames=2,
            samples=bytearray(struct.pack("<2f", 0.5, -1.0)),
            damage="/x.mp3: corrupt audio data near 0.500 s: bad frame",
        )
    ),
    "resp_status": Response.Status(
        StatusReport(
            daemon_pid=1,
            uptime_seconds=2.5,
            clients=1,
            streams=[
                StreamStatus(
                    stream=1,
                    batches_done=3,
                    batches_total=10,
                    items_per_second=100.0,
                    audio_seconds_per_second=500.0,
                    workers=2,
                    ring_depth=4,
                    ring_filled=1,
                    skipped=0,
                    damaged=2,
                    padding_share=0.25,
                    decode_wait_share=0.5,
                    client_wait_share=0.125,
                )
            ],
            cache_bytes=1 << 20,
            cache_capacity=1 << 30,
            cache_hits=7,
            cache_misses=3,
            decodes=3,
            workers=2,
            min_workers=1,
            max_workers=4,
            worker_busy_share=0.75,
            ring_budget_bytes=1 << 28,
            gpus=[GpuStatus(name="H200", memory_bytes=141 << 30)],
            failed_jobs=2,
            abandoned_jobs=1,
        )
    ),
    "resp_ok": Response.Ok(),
    "resp_error": Response.Error(
        ErrorInfo(kind=ErrorKind.VERSION_MISMATCH, path=None, message="v")
    ),
    "resp_error_timed_out": Response.Error(
        ErrorInfo(kind=ErrorKind.TIMED_OUT, path="/slow.flac", message="t")
    ),
    "resp_transcribed": Response.Transcribed(
        index=3, record='{"audio_filepath":"/a.wav","duration":1.5,"text":"Hallo."}'
    ),
    "resp_transcribe_done": Response.TranscribeDone(files=5, errors=1),
}


def golden(name: str) -> bytes:
    return (GOLDEN / f"{name}.bin").read_bytes()


# Golden vectors of single values rather than messages.
VALUES: dict[str, Any] = {
    # Rust's TranscribeOptions::default(), the one definition of the Whisper defaults (the
    # CLI's flags read theirs from it): the dataclass's defaults must decode from it.
    "transcribe_options_default": TranscribeOptions(),
}


def test_every_golden_file_is_covered() -> None:
    on_disk = {p.stem for p in GOLDEN.glob("*.bin")}
    assert on_disk == set(REQUESTS) | set(RESPONSES) | set(VALUES)


def test_transcribe_options_defaults_match_rust() -> None:
    data = golden("transcribe_options_default")
    assert decode(TranscribeOptions, data) == VALUES["transcribe_options_default"]
    assert encode(TranscribeOptions, TranscribeOptions()) == data


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_request_vectors(name: str) -> None:
    data = golden(name)
    assert decode_request(data) == REQUESTS[name]
    assert encode_request(REQUESTS[name]) == data


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_response_vectors(name: str) -> None:
    data = golden(name)
    assert decode_response(data) == RESPONSES[name]
    assert encode_response(RESPONSES[name]) == data


def test_ring_geometry_matches_rust_layout() -> None:
    # The golden StreamOpened carries RingGeometry::new(3, 4, 1, 16000, 16000) as Rust
    # computed it; the Python twin must agree field by field.
    info = decode_response(golden("resp_stream_opened")).info
    assert info.ring == RingGeometry.new(3, 4, 1, 16000, 16000)
    g = RingGeometry.new(4, 33, 2, 16000 * 5 + 3, 16000)
    assert g.labels_offset % 8 == 0 and g.audio_offset % 64 == 0
    assert g.slot_bytes % 4096 == 0
    assert g.audio_offset + 33 * 2 * (16000 * 5 + 3) * 4 <= g.slot_bytes
    assert g.total_bytes() == g.slot_offset(4)


@pytest.mark.parametrize("name", sorted(REQUESTS) + sorted(RESPONSES))
def test_truncated_messages_are_errors(name: str) -> None:
    data = golden(name)
    decode = decode_request if name.startswith("req_") else decode_response
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode(data[:cut])


def test_trailing_bytes_are_errors() -> None:
    with pytest.raises(ProtocolError, match="1 trailing bytes"):
        decode_request(golden("req_status") + b"\0")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("<I", 11), "unknown variant 11"),
        (bytes.fromhex("05000000") + b"\x00" * 8 + b"\xff\xff", "truncated"),
    ],
)
def test_malformed_messages_are_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_response(data)


def test_invalid_bool_option_and_utf8_are_errors() -> None:
    # LoadSpec: path "" then sample_rate option tag 2.
    bad_tag = struct.pack("<IQ", 4, 0) + b"\x02"
    with pytest.raises(ProtocolError, match="option tag 2"):
        decode_request(bad_tag)
    # ErrorInfo message with invalid UTF-8.
    bad_utf8 = struct.pack("<II", 8, 1) + b"\x00" + struct.pack("<Q", 1) + b"\xff"
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_response(bad_utf8)
    # A bool byte of 2 (LoadSpec.mono).
    load = bytearray(encode_request(REQUESTS["req_load"]))
    mono_at = 4 + 8 + len("/x.mp3") + 1  # variant, path length, path, sample_rate None
    assert load[mono_at] == 0
    load[mono_at] = 2
    with pytest.raises(ProtocolError, match="invalid bool"):
        decode_request(bytes(load))


def test_f32_fields_decode_to_the_shortest_decimal() -> None:
    # 0.2 is no f32; it must still read back as 0.2 (what Rust prints), so that decoded
    # options compare equal to the ones written in Python.
    def through_the_wire(options: TranscribeOptions) -> TranscribeOptions:
        msg = Request.Transcribe(TranscribeSpec(paths=[], options=options))
        return decode_request(encode_request(msg)).spec.options

    options = TranscribeOptions(temperatures=[0.1, 0.2, 1e-7, -3.4e38], patience=0.3)
    assert through_the_wire(options) == options
    # A value with more digits than an f32 holds comes back as that f32's shortest form.
    assert through_the_wire(TranscribeOptions(patience=0.123456789)).patience == 0.12345679


def test_huge_length_prefix_does_not_allocate() -> None:
    data = struct.pack("<IIQ", 3, 1, 1 << 60)  # EndOfEpoch, stream 1, 2^60 skipped items
    with pytest.raises(ProtocolError, match="exceeds the remaining"):
        decode_response(data)


def test_frames() -> None:
    payload = golden("req_hello")
    framed = frame(payload)
    assert framed[:4] == struct.pack("<I", len(payload)) and framed[4:] == payload
    assert frame_length(framed[:4]) == len(payload)
    with pytest.raises(ProtocolError, match="exceeds"):
        frame_length(struct.pack("<I", MAX_FRAME_BYTES + 1))
    assert frame_length(struct.pack("<I", MAX_FRAME_BYTES)) == MAX_FRAME_BYTES


def test_encoding_checks_types() -> None:
    with pytest.raises(TypeError):
        encode_request(Response.Ok())  # a response is not a request
    with pytest.raises(TypeError):
        encode_request(Request.OpenStream(stream_spec(mono=1)))
    with pytest.raises(struct.error):
        encode_request(Request.Release(stream=-1, released=0))
