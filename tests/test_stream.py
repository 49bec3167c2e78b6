"""A stream's per-batch loop against a fake daemon and a synthetic ring.

Socket mode: a Release with the count per batch, announcements taken from the inbox
without decoding, pushes of other streams left queued, the epoch's end and the daemon's
errors. Shared mode (x86-64): announcements taken from the ring header's table, Release
only at the doorbell or before waiting, stale pushes dropped.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import audiodecode._stream
import numpy as np
import pytest
from audiodecode import DaemonError
from audiodecode._batch import SlotBatches
from audiodecode._client import Connection
from audiodecode._protocol import (
    ANNOUNCE_LOG_OFFSET,
    ANNOUNCED_OFFSET,
    DOORBELL_OFFSET,
    CropMode,
    Dataset,
    ItemInfo,
    OnError,
    Request,
    Response,
    RingGeometry,
    SkippedItem,
    StreamInfo,
    encode_response,
    frame,
)
from audiodecode._ring import SlotHeader
from audiodecode._stream import Stream
from conftest import greet, recv_request, send
from test_protocol import stream_spec
from test_ring import make_ring_file, write_slot

GEOMETRY = RingGeometry.new(2, 2, 1, 4, 16000)
SPEC = stream_spec(
    dataset=Dataset.Files(paths=["/a.wav", "/b.wav", "/c.wav"], labels=[0, 1, 2]),
    batch_size=2,
    max_seconds=None,
    crop=CropMode.START,
    shuffle=False,
    seed=0,
    epoch=0,
    start_batch=0,
    rank=0,
    world_size=1,
    on_error=OnError.SKIP,
    augment=[],
)


def fill(path: str, slot: int, seq: int) -> None:
    """Slot ``slot`` holds batch ``seq``: two items, audio all ``seq``."""
    header = SlotHeader(seq=seq, epoch=0, batch=2, channels=1, frames=4, sample_rate=16000)
    write_slot(path, GEOMETRY, slot, header, [4, 3], [seq, seq], [0, 1], np.full((2, 1, 4), seq))


def info(shm: str) -> StreamInfo:
    items = [ItemInfo(p, i, None) for i, p in enumerate(["/a.wav", "/b.wav", "/c.wav"])]
    return StreamInfo(
        stream=1, shm_name=shm, ring=GEOMETRY, batches_per_epoch=3, items=items, classes=[]
    )


def frames(*messages: Any) -> bytes:
    return b"".join(frame(encode_response(m)) for m in messages)


def set_word(path: str, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<Q", value))


def announce(path: str, index: int, slot: int, seq: int) -> None:
    """What the daemon does in the ring header for announcement ``index``."""
    set_word(path, ANNOUNCE_LOG_OFFSET + 8 * (index % GEOMETRY.slots), seq << 32 | slot)
    set_word(path, ANNOUNCED_OFFSET, index + 1)


def test_socket_mode_releases_every_batch_and_ends_with_the_epoch(
    fake_daemon: Any, shm_name: str
) -> None:
    path = make_ring_file(shm_name, GEOMETRY)
    fill(path, 0, 0)
    fill(path, 1, 1)
    skipped = [SkippedItem(index=2, path="/c.wav", message="bad")]

    def script(sock: socket.socket) -> None:
        greet(sock)
        assert isinstance(recv_request(sock), Request.OpenStream)
        # One write: the client reads the announcements with the response, then takes them
        # from its inbox (another stream's push among them stays queued for that stream).
        sock.sendall(
            frames(
                Response.StreamOpened(info(shm_name)),
                Response.BatchReady(stream=1, slot=0, seq=0),
                Response.BatchReady(stream=2, slot=1, seq=0),
                Response.BatchReady(stream=1, slot=1, seq=1),
            )
        )
        assert recv_request(sock) == Request.Release(stream=1, released=1)
        fill(path, 0, 2)
        send(sock, Response.BatchReady(stream=1, slot=0, seq=2))
        assert recv_request(sock) == Request.Release(stream=1, released=2)
        send(sock, Response.EndOfEpoch(stream=1, skipped=skipped, damaged=[]))
        assert recv_request(sock) == Request.Release(stream=1, released=3)
        assert recv_request(sock) == Request.CloseStream(stream=1)
        send(sock, Response.Ok())

    with Connection.open(fake_daemon(script)) as conn:
        stream = Stream(conn, SPEC, shared=False)
        made = SlotBatches(stream.ring, stream.info, None, texts=False, copy=False)
        seen = []
        for batch in stream.batches(made.make):
            seen.append((stream.held, float(batch.audio.max()), batch.labels.tolist()))
            assert stream.batches_taken == len(seen)
        assert seen == [(0, 0.0, [0, 0]), (1, 1.0, [1, 1]), (0, 2.0, [2, 2])]
        assert stream.finished and stream.skipped == skipped
        assert conn.next_push(2) == Response.BatchReady(stream=2, slot=1, seq=0)
        made.close()
        stream.close()


def test_shared_mode_takes_batches_from_the_ring_header_and_rings_only_when_asked(
    fake_daemon: Any, shm_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audiodecode._stream, "_DROP_STALE_EVERY", 2)
    path = make_ring_file(shm_name, GEOMETRY)
    set_word(path, DOORBELL_OFFSET, 2**64 - 1)
    fill(path, 0, 0)
    fill(path, 1, 1)
    announce(path, 0, 0, 0)
    announce(path, 1, 1, 1)

    def script(sock: socket.socket) -> None:
        greet(sock)
        assert isinstance(recv_request(sock), Request.OpenStream)
        # The push of batch 0 comes with the response; batch 1's only once the client
        # waits. Both are in the table already, so both pushes are stale.
        sock.sendall(frames(Response.StreamOpened(info(shm_name)), Response.BatchReady(1, 0, 0)))
        # No doorbell: the client says nothing until it has to wait, then hands back both.
        assert recv_request(sock) == Request.Release(stream=1, released=2)
        fill(path, 0, 2)
        announce(path, 2, 0, 2)
        set_word(path, DOORBELL_OFFSET, 3)  # the driver waits for one more slot
        send(sock, Response.BatchReady(1, 1, 1), Response.BatchReady(1, 0, 2))
        assert recv_request(sock) == Request.Release(stream=1, released=3)
        send(sock, Response.EndOfEpoch(stream=1, skipped=[], damaged=[]))
        assert recv_request(sock) == Request.CloseStream(stream=1)
        send(sock, Response.Ok())

    with Connection.open(fake_daemon(script)) as conn:
        stream = Stream(conn, SPEC, shared=True)
        made = SlotBatches(stream.ring, stream.info, None, texts=False, copy=False)
        seen = []
        for batch in stream.batches(made.make):
            seen.append((stream.held, float(batch.audio.max())))
            if len(seen) == 2:
                assert not conn.inbox, "the stale push of batch 0 was dropped"
        assert seen == [(0, 0.0), (1, 1.0), (0, 2.0)]
        assert stream.finished and stream.batches_taken == 3
        assert struct.unpack_from("<Q", stream.ring.mapping, 64)[0] == 3  # handed back
        made.close()
        stream.close()


def test_a_batch_whose_items_all_failed_is_skipped(fake_daemon: Any, shm_name: str) -> None:
    path = make_ring_file(shm_name, GEOMETRY)
    fill(path, 0, 1)

    def script(sock: socket.socket) -> None:
        greet(sock)
        recv_request(sock)
        sock.sendall(
            frames(
                Response.StreamOpened(info(shm_name)),
                Response.BatchReady(stream=1, slot=0, seq=1),
                Response.EndOfEpoch(stream=1, skipped=[], damaged=[]),
            )
        )
        assert recv_request(sock) == Request.Release(stream=1, released=1)
        assert recv_request(sock) == Request.CloseStream(stream=1)
        send(sock, Response.Ok())

    with Connection.open(fake_daemon(script)) as conn:
        stream = Stream(conn, SPEC, shared=False)
        assert list(stream.batches(lambda slot: slot)) == [0]
        assert stream.batches_taken == 2
        stream.close()


@pytest.mark.parametrize(
    "pushes, error",
    [
        (
            [Response.BatchReady(stream=1, slot=0, seq=1), Response.BatchReady(1, 1, 0)],
            "batch 0 announced in slot 1, expected batch 2 or later",
        ),
        ([Response.BatchReady(stream=1, slot=2, seq=0)], "in a ring of 2"),
    ],
)
def test_unexpected_announcements_are_errors(
    fake_daemon: Any, shm_name: str, pushes: list[Any], error: str
) -> None:
    make_ring_file(shm_name, GEOMETRY)

    def script(sock: socket.socket) -> None:
        greet(sock)
        recv_request(sock)
        sock.sendall(frames(Response.StreamOpened(info(shm_name)), *pushes))
        while not isinstance(recv_request(sock), Request.CloseStream):
            pass  # the Release of a first, valid batch
        send(sock, Response.Ok())

    with Connection.open(fake_daemon(script)) as conn:
        stream = Stream(conn, SPEC, shared=False)
        with pytest.raises(DaemonError, match=error):
            list(stream.batches(lambda slot: slot))
        stream.close()
