"""Loader benchmark: AudioDecode's daemon + AudioDataLoader against torch's DataLoader.

Corpus: generated clips of 2-15 s at 44.1 and 48 kHz, mono and stereo, WAV/FLAC/MP3/OGG.
Both sides deliver batches of 32 clips at 16 kHz mono, padded to the longest clip, on the
same cores. The peer is ``torch.utils.data.DataLoader`` with 2 persistent workers and a
Dataset that decodes with the fastest of librosa / soundfile+soxr / PyAV (measured first).

Reports, for the first epoch: seconds of audio delivered per wall second, and the time the
training loop spends inside ``next()``; then ``next()`` latency when batches are already
waiting in the ring, and the daemon's resident memory against the ring size.

    python3 benches/loader_throughput.py [--clips 1000] [--ready-rounds 5] [--json out.json]
    python3 benches/loader_throughput.py --ready-only   # only next() with batches ready
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _checkout import REPO
from audiodecode import AudioDataLoader, Daemon

SR = 16000
BATCH = 32
Decoder = Callable[[str], np.ndarray]


def decode_librosa(path: str) -> np.ndarray:
    import librosa

    return librosa.load(path, sr=SR, mono=True)[0]


def decode_soundfile_soxr(path: str) -> np.ndarray:
    import soundfile
    import soxr

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return soxr.resample(data.mean(axis=1), rate, SR, "HQ").astype(np.float32)


def decode_pyav(path: str) -> np.ndarray:
    from faster_whisper.audio import decode_audio

    return decode_audio(path, sampling_rate=SR)


DECODERS: dict[str, Decoder] = {
    "librosa": decode_librosa,
    "soundfile+soxr": decode_soundfile_soxr,
    "pyav": decode_pyav,
}


class DecodeDataset(torch.utils.data.Dataset):
    def __init__(self, files: list[str], decoder: Decoder) -> None:
        self.files = files
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.decoder(self.files[i]))


def pad_collate(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in items])
    out = torch.zeros(len(items), int(lengths.max()))
    for row, x in zip(out, items):
        row[: len(x)] = x
    return out, lengths


def fastest_decoder(files: list[str]) -> tuple[str, dict[str, float]]:
    """Time each decoder on the same sample (after one warm-up call, which for librosa
    includes its JIT compilation) and keep the fastest that reads every format."""
    sample = files[:: max(1, len(files) // 40)]
    times: dict[str, float] = {}
    for name, decode in DECODERS.items():
        try:
            decode(sample[0])
            t0 = time.perf_counter()
            for f in sample:
                decode(f)
            times[name] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - a peer that cannot read a format is out
            print(f"  {name}: unusable ({type(e).__name__}: {e})")
    return min(times, key=times.__getitem__), times


def timed_epoch(batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    waits: list[float] = []
    audio = 0.0
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        try:
            _, lengths = next(batches)
        except StopIteration:
            break
        waits.append(time.perf_counter() - t0)
        audio += float(lengths.sum()) / SR
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "audio_s": audio,
        "audio_s_per_s": audio / wall,
        "batches": len(waits),
        "next_total_s": sum(waits),
        "next_mean_ms": 1e3 * statistics.mean(waits),
    }


def run_peer(files: list[str], decoder: Decoder) -> dict[str, float]:
    loader = torch.utils.data.DataLoader(
        DecodeDataset(files, decoder),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        collate_fn=pad_collate,
        generator=torch.Generator().manual_seed(0),
    )
    return timed_epoch(iter(loader))


def ours(loader: AudioDataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in loader:
        yield batch.audio, batch.lengths


def rss_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0])
    return fields


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


# Batches in a ready-latency round; its stream holds files[: BATCH * READY_BATCHES].
READY_BATCHES = 16
# Loop shapes of the ready-latency rounds: (compute between batches, ring depth). A ring of
# READY_BATCHES slots holds the whole epoch, so every batch is a slot's first use (pages
# first touched, views first made), as at the start of each epoch; a ring of 4 is refilled
# from the daemon's cache during the compute steps, so after the first 4 batches every slot
# is reused, as for the rest of a long epoch. Back to back, only the full ring stays ready.
READY_SHAPES = {
    "compute": (True, READY_BATCHES),
    "back_to_back": (False, READY_BATCHES),
    "compute_reused_slots": (True, 4),
}


def ready_round(daemon: Daemon, files: list[str], compute: bool, depth: int) -> dict[str, Any]:
    """One epoch of READY_BATCHES batches with the first ``depth`` decoded before timing
    starts: the time in ``next()`` per batch (after the first, untimed), and the same plus
    reading ``audio``, ``lengths`` and ``labels``, which a training step does next. With
    ``compute`` the loop runs matmuls (~20-30 ms here) between batches, as a training step
    does (a sleeping loop would measure the VM waking its idle vCPU instead); without,
    batches are fetched back to back. Only batches after the first ``depth`` count when the
    ring is smaller than the epoch (those reuse a slot)."""
    loader = AudioDataLoader(
        files[: BATCH * READY_BATCHES],
        batch_size=BATCH,
        target_sr=SR,
        max_seconds=2.0,
        crop="start",
        prefetch=depth,
        shuffle=False,
    )
    it = iter(loader)
    next(it)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        streams = daemon.status().streams
        if streams and all(s.batches_done >= min(depth, s.batches_total) for s in streams):
            break
        time.sleep(0.1)
    step = torch.randn(384, 384)
    waits: list[float] = []
    fields: list[float] = []
    for i in range(1, READY_BATCHES):
        if compute:
            for _ in range(20):
                step = torch.tanh(step @ step.T / 384)
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        read = (batch.audio, batch.lengths, batch.labels)
        t2 = time.perf_counter()
        del read
        if depth == READY_BATCHES or i >= depth:
            waits.append(t1 - t0)
            fields.append(t2 - t0)
    loader.close()
    return {"next": waits, "fields": fields}


def ready_next_latency(files: list[str], daemon: Daemon, rounds: int) -> dict[str, Any]:
    """next() when the batch is already in the ring, in each loop shape; the rounds
    alternate between shapes, so all see the same state of this shared machine."""
    # Decode the files once: the reused-slot rounds refill from the daemon's cache.
    for _ in AudioDataLoader(
        files[: BATCH * READY_BATCHES], batch_size=BATCH, target_sr=SR, max_seconds=2.0
    ):
        pass
    samples: dict[str, dict[str, list[float]]] = {
        shape: {"next": [], "fields": []} for shape in READY_SHAPES
    }
    round_medians: dict[str, list[float]] = {shape: [] for shape in READY_SHAPES}
    for _ in range(rounds):
        for shape, (compute, depth) in READY_SHAPES.items():
            got = ready_round(daemon, files, compute, depth)
            for key, values in got.items():
                samples[shape][key] += values
            round_medians[shape].append(1e6 * statistics.median(got["next"]))
    return {
        shape: {
            "median_us": 1e6 * statistics.median(got["next"]),
            "mean_us": 1e6 * statistics.mean(got["next"]),
            "p90_us": 1e6 * percentile(got["next"], 0.9),
            "with_fields_median_us": 1e6 * statistics.median(got["fields"]),
            "round_medians_us": round_medians[shape],
            "samples": len(got["next"]),
        }
        for shape, got in samples.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument(
        "--corpus", type=Path, default=Path.home() / ".cache/audiodecode/bench/loader"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--ready-rounds",
        type=int,
        default=5,
        help="rounds per loop shape of next() timed with batches ready (default 5)",
    )
    parser.add_argument(
        "--ready-only",
        action="store_true",
        help="only the next() latency with batches ready (no peer, no first epoch)",
    )
    args = parser.parse_args()

    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/gen_corpus.py"),
            str(args.corpus),
            "--count",
            str(args.clips),
            "--rates",
            "44100,48000",
            "--formats",
            "wav,flac,mp3,ogg",
        ],
        check=True,
    )
    rows = [json.loads(line) for line in (args.corpus / "manifest.jsonl").read_text().splitlines()]
    files = [r["audio_filepath"] for r in rows]
    if len(files) < BATCH * READY_BATCHES:
        parser.error(f"the ready-batch rounds need --clips >= {BATCH * READY_BATCHES}")
    torch.set_num_threads(1)
    results: dict[str, Any] = {} if args.ready_only else compare_first_epoch(files)

    with Daemon(workers=2) as daemon:
        results["ready"] = ready = ready_next_latency(files, daemon, args.ready_rounds)
    print()
    labels = {
        "compute": "computing between batches, first use of each slot",
        "back_to_back": "back to back, first use of each slot",
        "compute_reused_slots": "computing between batches, slots reused",
    }
    for shape, label in labels.items():
        r = ready[shape]
        spread = ", ".join(f"{m:.0f}" for m in r["round_medians_us"])
        print(
            f"next() with the batch ready, {label}: median {r['median_us']:.0f} us "
            f"(mean {r['mean_us']:.0f}, p90 {r['p90_us']:.0f}) over {r['samples']} batches; "
            f"round medians {spread}; plus reading audio/lengths/labels "
            f"{r['with_fields_median_us']:.0f} us (target <= 100 us)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def compare_first_epoch(files: list[str]) -> dict[str, Any]:
    """Throughput and time in next() over a first epoch, against the peer; daemon RSS."""
    print("choosing the peer's decoder ...")
    name, times = fastest_decoder(files)
    print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    # Single-file timings are noisy; run the DataLoader with every decoder that is close to
    # the fastest and keep the best, so the peer is never handicapped by the choice.
    candidates = [k for k, v in times.items() if v <= 1.5 * times[name]]
    peers = {}
    for candidate in candidates:
        print(f"peer: torch DataLoader, 2 workers, {candidate} ...")
        peers[candidate] = run_peer(files, DECODERS[candidate])
        print(f"  {peers[candidate]['audio_s_per_s']:.1f} audio s/s")
    name = max(peers, key=lambda k: peers[k]["audio_s_per_s"])
    peer = peers[name]

    print("audiodecode: daemon with 2 workers ...")
    with Daemon(workers=2) as daemon:
        # First epoch, cache off: the memory target is for the daemon without it.
        loader = AudioDataLoader(
            files, batch_size=BATCH, target_sr=SR, shuffle=True, seed=0, cache=False
        )
        peak: dict[str, int] = {}

        def sampled() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i, item in enumerate(ours(loader)):
                if i % 4 == 0:
                    now = rss_kb(daemon.pid)
                    if now["VmRSS"] > peak.get("VmRSS", 0):
                        peak.update(now)
                yield item

        mine = timed_epoch(sampled())
        ring_mb = loader.ring_bytes / 2**20
        loader.close()

    ratio = mine["audio_s_per_s"] / peer["audio_s_per_s"]
    print()
    print(f"{'':24s} {'audio s/s':>10s} {'wall s':>8s} {'in next() s':>12s} {'ms/batch':>9s}")
    for label, r in (("torch DataLoader (" + name + ")", peer), ("audiodecode", mine)):
        print(
            f"{label:24s} {r['audio_s_per_s']:10.1f} {r['wall_s']:8.2f} "
            f"{r['next_total_s']:12.2f} {r['next_mean_ms']:9.2f}"
        )
    print(f"\nthroughput ratio audiodecode / peer: {ratio:.2f}x (target >= 1.5x)")
    rss_mb = peak.get("VmRSS", 0) / 1024
    anon_mb = peak.get("RssAnon", 0) / 1024
    print(
        f"daemon RSS peak {rss_mb:.0f} MB (anonymous {anon_mb:.0f} MB, shared "
        f"{peak.get('RssShmem', 0) / 1024:.0f} MB); ring {ring_mb:.0f} MB "
        f"(target RSS <= ring + 64 MB)"
    )
    return {
        "peer_decoder": name,
        "decoder_times": times,
        "peer": peer,
        "audiodecode": mine,
        "ratio": ratio,
        "rss_kb": peak,
        "ring_mb": ring_mb,
    }


if __name__ == "__main__":
    raise SystemExit(main())
