"""The control-socket messages and a bincode 2.0.1 codec for them.

This mirrors ``protocol/src/lib.rs`` and ``protocol/src/ring.rs`` (see ``protocol/README.md``
for the bytes). The encoding is driven by the field annotations, so each message is declared
once: ``U32``/``U64``/``I32``/``I64``/``F32``/``F64`` are fixed-width little-endian (an ``F32``
decodes to the shortest decimal that is the same f32, so ``0.2`` reads back as ``0.2``),
``bool`` is one byte, ``str``/``bytes``/``list`` carry a u64 length, ``X | None`` is a u8 tag
then the value, an ``IntEnum`` is its u32 variant index, and a union of dataclasses is a Rust
enum whose u32 variant index is the position in the union. The golden vectors written by the
Rust tests (``protocol/golden``) are checked against this codec byte for byte.

The field types are resolved once per class with ``typing.get_type_hints``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import struct
import types
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

PROTOCOL_VERSION = 8
# A corrupt length prefix must not make us allocate gigabytes; matches MAX_FRAME_BYTES.
MAX_FRAME_BYTES = 1 << 30
RING_MAGIC = b"ADRING01"  # the first 8 bytes of every ring segment
RING_HEADER_BYTES = 4096
SLOT_HEADER_BYTES = 64
# The ring header's hand-off words (byte offsets of little-endian u64s; protocol/src/ring.rs).
RELEASED_OFFSET = 64  # client: batches handed back since the stream opened
DOORBELL_OFFSET = 128  # daemon: send Release once that count reaches this
ANNOUNCED_OFFSET = 192  # daemon: batches announced since the stream opened
ANNOUNCE_LOG_OFFSET = 256  # announcement i is entry i % slots: seq << 32 | slot
MAX_SLOTS = (RING_HEADER_BYTES - ANNOUNCE_LOG_OFFSET) // 8  # the announcement table's size
SLOT_ALIGN = 4096
AUDIO_ALIGN = 64


class ProtocolError(ValueError):
    """Bytes that are not a valid message (truncated, trailing data, unknown tag...)."""


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """A fixed-width little-endian number: its ``struct`` format code."""

    code: str


U32 = Annotated[int, _Fixed("I")]
U64 = Annotated[int, _Fixed("Q")]
I32 = Annotated[int, _Fixed("i")]
I64 = Annotated[int, _Fixed("q")]
F32 = Annotated[float, _Fixed("f")]
F64 = Annotated[float, _Fixed("d")]


# --- Fieldless enums: the member value is the variant index (declaration order). ---------


class ErrorKind(enum.IntEnum):
    VERSION_MISMATCH = 0
    BAD_REQUEST = 1
    NOT_FOUND = 2
    IO = 3
    UNSUPPORTED = 4
    CORRUPT = 5
    TRUNCATED = 6
    EMPTY = 7
    OFFSET_PAST_END = 8
    DECODER_PANIC = 9
    INTERNAL = 10
    TIMED_OUT = 11


class CropMode(enum.IntEnum):
    RANDOM = 0
    START = 1


class OnError(enum.IntEnum):
    SKIP = 0
    RAISE = 1


class Quality(enum.IntEnum):
    FAST = 0
    HQ = 1
    VHQ = 2


class Downmix(enum.IntEnum):
    """How ``mono`` combines channels: the mean (librosa's convention) or ITU-R BS.775
    weights (FFmpeg's ``-ac 1``: centre full, surrounds -6 dB, LFE dropped, normalised)."""

    MEAN = 0
    ITU = 1


# --- Structs. -------------------------------------------------------------------------------

_frozen = dataclasses.dataclass(frozen=True)


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


@_frozen
class RingGeometry:
    """Everything needed to map a stream's ring (``ring.rs``)."""

    slots: U32
    batch_capacity: U32
    channels: U32
    max_frames: U64
    sample_rate: U32
    slot_bytes: U64
    lengths_offset: U64
    labels_offset: U64
    indices_offset: U64
    audio_offset: U64

    @classmethod
    def new(
        cls,
        slots: int,
        batch_capacity: int,
        channels: int,
        max_frames: int,
        sample_rate: int,
    ) -> RingGeometry:
        """The layout ``RingGeometry::new`` computes (used by tests to build rings)."""
        b = batch_capacity
        lengths = SLOT_HEADER_BYTES
        labels = _align(lengths + 4 * b, 8)
        indices = labels + 8 * b
        audio = _align(indices + 8 * b, AUDIO_ALIGN)
        slot_bytes = _align(audio + b * channels * max_frames * 4, SLOT_ALIGN)
        return cls(
            slots,
            batch_capacity,
            channels,
            max_frames,
            sample_rate,
            slot_bytes,
            lengths,
            labels,
            indices,
            audio,
        )

    def slot_offset(self, slot: int) -> int:
        return RING_HEADER_BYTES + slot * self.slot_bytes

    def total_bytes(self) -> int:
        return RING_HEADER_BYTES + self.slots * self.slot_bytes


@_frozen
class ErrorInfo:
    kind: ErrorKind
    path: str | None
    message: str


@_frozen
class SkippedItem:
    index: U64
    path: str
    message: str


class Dataset:
    """Namespace for the ``Dataset`` enum's variants (see ``AnyDataset`` for their order)."""

    @_frozen
    class Files:
        paths: list[str]
        labels: list[I64] | None = None

    @_frozen
    class Manifest:
        path: str
        label_field: str | None = None

    @_frozen
    class Directory:
        path: str

    @_frozen
    class Shards:
        format: str
        sources: list[str]
        label_field: str | None = None


AnyDataset = Dataset.Files | Dataset.Manifest | Dataset.Directory | Dataset.Shards


class Augment:
    """Namespace for the ``Augment`` enum's variants (see ``AnyAugment`` for their order)."""

    @_frozen
    class Gain:
        min_db: F64
        max_db: F64
        p: F64

    @_frozen
    class Noise:
        min_snr_db: F64
        max_snr_db: F64
        noise: AnyDataset | None
        p: F64

    @_frozen
    class Speed:
        factors: list[F64]
        p: F64

    @_frozen
    class Shift:
        max_seconds: F64
        p: F64

    @_frozen
    class Reverb:
        rirs: AnyDataset
        p: F64


AnyAugment = Augment.Gain | Augment.Noise | Augment.Speed | Augment.Shift | Augment.Reverb


@_frozen
class StreamSpec:
    dataset: AnyDataset
    sample_rate: U32
    mono: bool
    channels: U32
    batch_size: U32
    max_seconds: F64 | None
    crop: CropMode
    pad_to_max: bool
    shuffle: bool
    seed: U64
    epoch: U64
    start_batch: U64
    rank: U32
    world_size: U32
    drop_last: bool
    on_error: OnError
    quality: Quality
    prefetch: U32
    cache: bool
    max_batch_seconds: F64 | None
    augment: list[AnyAugment]
    strict: bool
    downmix: Downmix


@_frozen
class ItemInfo:
    path: str
    label: I64
    text: str | None


@_frozen
class StreamInfo:
    stream: U32
    shm_name: str
    ring: RingGeometry
    batches_per_epoch: U64
    items: list[ItemInfo]
    classes: list[str]


@_frozen
class LoadSpec:
    path: str
    sample_rate: U32 | None
    mono: bool
    offset: F64
    duration: F64 | None
    quality: Quality
    strict: bool
    downmix: Downmix


@_frozen
class VadOptions:
    """Silero VAD's options, with faster-whisper's names; the defaults are those of its
    batched pipeline (160 ms of silence ends speech, speech pieces under 30 s). Mirrors
    Rust's ``VadOptions::default``."""

    threshold: F32 = 0.5
    neg_threshold: F32 | None = None  # None: threshold - 0.15 (at least 0.01)
    min_speech_duration_ms: U32 = 0
    max_speech_duration_s: F32 | None = 30.0  # None: never split
    min_silence_duration_ms: U32 = 160
    speech_pad_ms: U32 = 400


@_frozen
class TranscribeOptions:
    """Model choice and decoding options, with faster-whisper's names and defaults.

    The client's one definition of the defaults (``transcribe_options`` fills what it is
    not given from them): they mirror Rust's ``TranscribeOptions::default``, and
    ``tests/test_protocol.py`` decodes that value's golden vector
    (``protocol/golden/transcribe_options_default.bin``) to compare."""

    model: str = "base"  # a CTranslate2 model directory or a name (base, large-v3, ...)
    device: str = "auto"
    compute_type: str = "auto"
    threads: U32 = 0  # 0: the cores the daemon may use
    batch_size: U32 = 0  # 0: sized from memory
    language: str | None = None  # None: detected per file
    multilingual: bool = False
    task: str = "transcribe"
    beam_size: U32 = 5
    best_of: U32 = 5
    patience: F32 = 1.0
    length_penalty: F32 = 1.0
    repetition_penalty: F32 = 1.0
    no_repeat_ngram_size: U32 = 0
    temperatures: list[F32] = dataclasses.field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    )
    compression_ratio_threshold: F32 | None = 2.4
    log_prob_threshold: F32 | None = -1.0
    no_speech_threshold: F32 | None = 0.6
    initial_prompt: str | None = None
    hotwords: str | None = None
    word_timestamps: bool = False
    without_timestamps: bool = False
    suppress_blank: bool = True
    suppress_tokens: list[I32] = dataclasses.field(default_factory=lambda: [-1])
    max_initial_timestamp: F32 = 1.0
    vad_filter: bool = True  # transcribe only the speech Silero VAD finds
    vad: VadOptions = dataclasses.field(default_factory=VadOptions)


@_frozen
class TranscribeSpec:
    paths: list[str]
    options: TranscribeOptions


@_frozen
class LoadedAudio:
    sample_rate: U32
    channels: U32
    frames: U64
    # Planar little-endian f32, [channels, frames]; decoded as a bytearray so that arrays
    # made from it are writable without another copy.
    samples: bytearray
    damage: str | None  # the damage lenient decoding met, when the file has some


@_frozen
class StreamStatus:
    stream: U32
    batches_done: U64
    batches_total: U64
    items_per_second: F64
    audio_seconds_per_second: F64
    workers: U32
    ring_depth: U32
    ring_filled: U32
    skipped: U64
    damaged: U64  # items used although damaged
    padding_share: F64
    decode_wait_share: F64
    client_wait_share: F64


@_frozen
class GpuStatus:
    name: str
    memory_bytes: U64


@_frozen
class StatusReport:
    daemon_pid: U32
    uptime_seconds: F64
    clients: U32
    streams: list[StreamStatus]
    cache_bytes: U64
    cache_capacity: U64
    cache_hits: U64
    cache_misses: U64
    decodes: U64
    workers: U32
    min_workers: U32
    max_workers: U32
    worker_busy_share: F64
    ring_budget_bytes: U64
    gpus: list[GpuStatus]
    failed_jobs: U64
    abandoned_jobs: U64


# --- The two message enums. A newtype variant such as ``OpenStream(StreamSpec)`` encodes
# exactly like a struct variant with one field, so it is a one-field dataclass here. -------


class Request:
    """Client to daemon (see ``AnyRequest`` for the variant order)."""

    @_frozen
    class Hello:
        version: U32
        client_pid: U32

    @_frozen
    class OpenStream:
        spec: StreamSpec

    @_frozen
    class Release:
        stream: U32
        released: U64

    @_frozen
    class CloseStream:
        stream: U32

    @_frozen
    class Load:
        spec: LoadSpec

    @_frozen
    class Status:
        pass

    @_frozen
    class Shutdown:
        pass

    @_frozen
    class Transcribe:
        spec: TranscribeSpec


AnyRequest = (
    Request.Hello
    | Request.OpenStream
    | Request.Release
    | Request.CloseStream
    | Request.Load
    | Request.Status
    | Request.Shutdown
    | Request.Transcribe
)


class Response:
    """Daemon to client (see ``AnyResponse`` for the variant order)."""

    @_frozen
    class Hello:
        version: U32
        daemon_pid: U32

    @_frozen
    class StreamOpened:
        info: StreamInfo

    @_frozen
    class BatchReady:
        stream: U32
        slot: U32
        seq: U64

    @_frozen
    class EndOfEpoch:
        stream: U32
        skipped: list[SkippedItem]
        damaged: list[SkippedItem]  # items used although damaged

    @_frozen
    class StreamFailed:
        stream: U32
        error: ErrorInfo

    @_frozen
    class Loaded:
        audio: LoadedAudio

    @_frozen
    class Status:
        report: StatusReport

    @_frozen
    class Ok:
        pass

    @_frozen
    class Error:
        error: ErrorInfo

    @_frozen
    class Transcribed:
        """File ``index`` of a ``Transcribe`` request: its JSON record (``audiodecode
        label``'s JSONL line, with an ``error`` field when the file failed)."""

        index: U64
        record: str

    @_frozen
    class TranscribeDone:
        files: U64
        errors: U64


AnyResponse = (
    Response.Hello
    | Response.StreamOpened
    | Response.BatchReady
    | Response.EndOfEpoch
    | Response.StreamFailed
    | Response.Loaded
    | Response.Status
    | Response.Ok
    | Response.Error
    | Response.Transcribed
    | Response.TranscribeDone
)

# Pushed by the daemon at any time, interleaved with the one response per request.
PUSH_TYPES = (Response.BatchReady, Response.EndOfEpoch, Response.StreamFailed)
# Sent while a long request is served, before its one response (``TranscribeDone``).
PROGRESS_TYPES = (Response.Transcribed,)


# --- The codec. -----------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.view = memoryview(data).cast("B")
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.view):
            raise ProtocolError(
                f"truncated message: need {n} bytes at offset {self.pos}, "
                f"only {len(self.view) - self.pos} left"
            )
        out = self.view[self.pos : end]
        self.pos = end
        return out

    def fixed(self, code: str) -> Any:
        value = struct.unpack("<" + code, self.take(struct.calcsize(code)))[0]
        return _shortest_f32(value) if code == "f" else value

    def length(self) -> int:
        n = self.fixed("Q")
        # Every element takes at least one byte, so a longer length is corrupt; checking
        # here keeps a bad prefix from allocating a huge list.
        if n > len(self.view) - self.pos:
            raise ProtocolError(
                f"length {n} at offset {self.pos - 8} exceeds the remaining "
                f"{len(self.view) - self.pos} bytes"
            )
        return n


def _shortest_f32(value: float) -> float:
    """The shortest decimal that rounds to the same f32 (what Rust prints): ``0.2`` stays
    ``0.2`` instead of becoming ``0.20000000298023224`` on the way through an f32."""
    if not math.isfinite(value):
        return value
    exact = struct.pack("<f", value)
    for digits in range(1, 10):  # 9 significant digits always suffice for an f32
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == exact:
            return candidate
    return value


@functools.cache
def _fields(cls: type) -> list[tuple[str, Any]]:
    """A dataclass's fields in declaration order, with their resolved wire types."""
    hints = get_type_hints(cls, include_extras=True)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    if get_origin(tp) in (Union, types.UnionType):
        return get_args(tp)
    return None


def _option_inner(members: tuple[Any, ...]) -> Any:
    """``T`` of ``T | None``; for ``A | B | None`` (an ``Option`` of an enum) the union
    ``A | B``, whose variant index follows the option tag."""
    rest = tuple(m for m in members if m is not type(None))
    if len(rest) > 1:
        return Union[rest]  # noqa: UP007 - built from a tuple at run time
    (inner,) = rest
    return inner


def _encode(tp: Any, value: Any, out: bytearray) -> None:
    if get_origin(tp) is Annotated:
        code = get_args(tp)[1].code
        out += struct.pack("<" + code, value)
    elif tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected bool, got {value!r}")
        out.append(1 if value else 0)
    elif tp is str:
        raw = value.encode("utf-8")
        out += struct.pack("<Q", len(raw))
        out += raw
    elif tp in (bytes, bytearray):
        out += struct.pack("<Q", len(value))
        out += value
    elif get_origin(tp) is list:
        (elem,) = get_args(tp)
        out += struct.pack("<Q", len(value))
        if get_origin(elem) is Annotated:
            # Numbers in one pack call: label lists can hold millions of entries.
            out += struct.pack(f"<{len(value)}{get_args(elem)[1].code}", *value)
        else:
            for v in value:
                _encode(elem, v, out)
    elif (members := _union_members(tp)) is not None:
        if type(None) in members:
            if value is None:
                out.append(0)
            else:
                out.append(1)
                _encode(_option_inner(members), value, out)
        else:
            try:
                index = members.index(type(value))
            except ValueError:
                raise TypeError(f"{value!r} is not one of {members}") from None
            out += struct.pack("<I", index)
            _encode(type(value), value, out)
    elif isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        out += struct.pack("<I", tp(value).value)
    elif dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):
            raise TypeError(f"expected {tp.__qualname__}, got {value!r}")
        for name, field_type in _fields(tp):
            _encode(field_type, getattr(value, name), out)
    else:
        raise TypeError(f"no wire encoding for {tp!r}")


def _decode(tp: Any, r: _Reader) -> Any:
    if get_origin(tp) is Annotated:
        return r.fixed(get_args(tp)[1].code)
    if tp is bool:
        b = r.take(1)[0]
        if b > 1:
            raise ProtocolError(f"invalid bool byte {b} at offset {r.pos - 1}")
        return b == 1
    if tp is str:
        raw = r.take(r.length())
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"invalid UTF-8 in string: {e}") from None
    if tp in (bytes, bytearray):
        return tp(r.take(r.length()))
    if get_origin(tp) is list:
        (elem,) = get_args(tp)
        n = r.length()
        if get_origin(elem) is Annotated:
            code = get_args(elem)[1].code
            values = struct.unpack(f"<{n}{code}", r.take(n * struct.calcsize(code)))
            return [_shortest_f32(v) for v in values] if code == "f" else list(values)
        return [_decode(elem, r) for _ in range(n)]
    if (members := _union_members(tp)) is not None:
        if type(None) in members:
            tag = r.take(1)[0]
            if tag == 0:
                return None
            if tag != 1:
                raise ProtocolError(f"invalid option tag {tag} at offset {r.pos - 1}")
            return _decode(_option_inner(members), r)
        index = r.fixed("I")
        if index >= len(members):
            raise ProtocolError(f"unknown variant {index} at offset {r.pos - 4}")
        return _decode(members[index], r)
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        index = r.fixed("I")
        try:
            return tp(index)
        except ValueError:
            raise ProtocolError(f"unknown {tp.__name__} variant {index}") from None
    if dataclasses.is_dataclass(tp):
        return tp(*(_decode(field_type, r) for _, field_type in _fields(tp)))
    raise TypeError(f"no wire decoding for {tp!r}")


def encode(tp: Any, value: Any) -> bytes:
    out = bytearray()
    _encode(tp, value, out)
    return bytes(out)


def decode(tp: Any, data: bytes | bytearray | memoryview) -> Any:
    """Decode exactly one value; trailing bytes are an error, as on the Rust side."""
    r = _Reader(data)
    value = _decode(tp, r)
    if r.pos != len(r.view):
        raise ProtocolError(f"{len(r.view) - r.pos} trailing bytes after message")
    return value


# The two messages of the per-batch hot path skip the generic, annotation-driven codec:
# a Release and a BatchReady cost a few microseconds instead of ~100. The golden-vector
# tests cover both paths.
_RELEASE = struct.Struct("<IIQ")
_BATCH_READY = struct.Struct("<IIIQ")
_RELEASE_INDEX = get_args(AnyRequest).index(Request.Release)
_BATCH_READY_INDEX = get_args(AnyResponse).index(Response.BatchReady)
BATCH_READY_BYTES = _BATCH_READY.size
_RELEASE_FRAME = struct.Struct("<IIIQ")  # length prefix, then the Release


def release_frame(stream: int, released: int) -> bytes:
    """A framed ``Release`` in one pack: it is sent from the training loop's ``next()``."""
    return _RELEASE_FRAME.pack(_RELEASE.size, _RELEASE_INDEX, stream, released)


def batch_ready_prefix(stream: int) -> bytes:
    """The first 12 bytes of every framed ``BatchReady`` for ``stream``."""
    return struct.pack("<III", BATCH_READY_BYTES, _BATCH_READY_INDEX, stream)


def encode_request(msg: AnyRequest) -> bytes:
    if type(msg) is Request.Release:
        return _RELEASE.pack(_RELEASE_INDEX, msg.stream, msg.released)
    return encode(AnyRequest, msg)


def decode_request(data: bytes | bytearray | memoryview) -> AnyRequest:
    return decode(AnyRequest, data)


def encode_response(msg: AnyResponse) -> bytes:
    return encode(AnyResponse, msg)


def decode_response(data: bytes | bytearray | memoryview) -> AnyResponse:
    if len(data) == _BATCH_READY.size:
        index, stream, slot, seq = _BATCH_READY.unpack(data)
        if index == _BATCH_READY_INDEX:
            return Response.BatchReady(stream=stream, slot=slot, seq=seq)
    return decode(AnyResponse, data)


def _resolve_all_fields() -> None:
    """Resolve every message's field types now: lazily, the first use could come during
    interpreter shutdown (a generator's ``finally``), when module globals are gone."""
    pending: list[Any] = [AnyRequest, AnyResponse]
    while pending:
        tp = pending.pop()
        pending.extend(get_args(tp))
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            pending.extend(field_type for _, field_type in _fields(tp))


_resolve_all_fields()


# --- Framing: u32 little-endian payload length, then the payload. ---------------------------


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return struct.pack("<I", len(payload)) + payload


def frame_length(prefix: bytes | bytearray | memoryview) -> int:
    """The payload length announced by a 4-byte frame prefix, refusing oversized frames."""
    if len(prefix) != 4:
        raise ProtocolError(f"frame prefix must be 4 bytes, got {len(prefix)}")
    (n,) = struct.unpack("<I", prefix)
    if n > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {n} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return n


__all__ = [
    "BATCH_READY_BYTES",
    "MAX_FRAME_BYTES",
    "PROGRESS_TYPES",
    "PROTOCOL_VERSION",
    "PUSH_TYPES",
    "AnyAugment",
    "AnyDataset",
    "AnyRequest",
    "AnyResponse",
    "Augment",
    "CropMode",
    "Dataset",
    "ErrorInfo",
    "ErrorKind",
    "GpuStatus",
    "ItemInfo",
    "LoadSpec",
    "LoadedAudio",
    "OnError",
    "ProtocolError",
    "Quality",
    "Request",
    "Response",
    "RingGeometry",
    "SkippedItem",
    "StatusReport",
    "StreamInfo",
    "StreamSpec",
    "StreamStatus",
    "TranscribeOptions",
    "TranscribeSpec",
    "VadOptions",
    "batch_ready_prefix",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "frame",
    "frame_length",
]
