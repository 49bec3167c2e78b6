"""Labeling on Ray: `audiodecode.ray.label` against `audiodecode label` (the CLI) and
against faster-whisper's `WhisperModel` in a Ray `map_batches` actor (what people run
today), on the same real clips, model (base, int8), threads and machine.

Requests cycle over the clips of a make_real_mixes.py directory through distinct symlinks
(the CLI labels a path once). Ray runs a local cluster of --threads CPUs with one actor
of all of them; faster-whisper transcribes file by file with its VAD on, as the daemon
does by default. Word agreement is 1 - WER against the CLI's text. The load average is
printed with every timing: on a shared machine it explains outliers, and the CPU seconds
of the labelling process (the CLI; the actor's daemon) compare the work done whatever
else runs. Ray's workers run at nice 0 here, as the CLI does (Ray's default is 15).

    python3 benches/ray_label.py [--real ~/.cache/audiodecode/real-mixes] [--requests 200]
        [--threads 2] [--rounds 1] [--skip-faster-whisper] [--daemon-modes N]

--daemon-modes N times, on N clips, one daemon per actor against the node's shared daemon
at one actor of all CPUs and at one actor per CPU (the choice documented in
audiodecode/ray/__init__.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import _checkout  # binary and client from this checkout
import numpy as np
from label_peers import corpus_wer, model_dir


def load() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def requests(clips: list[Path], count: int, root: Path) -> list[Path]:
    """``count`` distinct paths cycling over ``clips``."""
    root.mkdir(parents=True, exist_ok=True)
    links = []
    for i in range(count):
        link = root / f"r{i:04d}.wav"
        link.symlink_to(clips[i % len(clips)].resolve())
        links.append(link)
    return links


def texts(manifest: Path, files: list[Path]) -> list[str]:
    by_path = {}
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        by_path[record["audio_filepath"]] = record.get("text", "")
    return [by_path.get(str(f), "") for f in files]


def run_cli(files: list[Path], threads: int, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds."""
    binary = os.environ.get("AUDIODECODE_BIN", "audiodecode")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [binary, "label", *map(str, files), "--out", str(out), "--overwrite", "--model", "base"]
        + ["--compute-type", "int8", "--threads", str(threads), "--quiet"],
        check=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


class DaemonCpu:
    """CPU seconds of the label actors' daemons, sampled from /proc while a job runs (the
    CLI's CPU time is its own; on a shared machine CPU time, unlike wall time, does not
    depend on what else runs)."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(0.2):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if b"audiodecode-ray-" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        continue
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                self.seconds[int(pid)] = (int(stat[11]) + int(stat[12])) / tick

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seconds.values())


def run_ray(
    files: list[Path], out: Path, concurrency: int, cpus: float, daemon: str, batch: int
) -> tuple[float, float]:
    """Wall seconds and the daemons' CPU seconds (sampled: a daemon's last 0.2 s is lost)."""
    import audiodecode.ray as adray

    cpu = DaemonCpu()
    start = time.perf_counter()
    ds = adray.label(
        list(map(str, files)),
        "base",
        compute_type="int8",
        concurrency=concurrency,
        num_cpus=cpus,
        batch_size=batch,
        daemon=daemon,
    )
    adray.write_manifest(ds, out)
    return time.perf_counter() - start, cpu.stop()


class FasterWhisperActor:
    """The usual Ray recipe: a model per actor, `transcribe` per file of each batch."""

    def __init__(self, model: str, threads: int) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for path in batch["path"]:
            segments, _ = self.model.transcribe(str(path), beam_size=5, vad_filter=True)
            out.append(" ".join(s.text.strip() for s in segments))
        return {"path": batch["path"], "text": np.array(out, dtype=object)}


def run_faster_whisper(files: list[Path], threads: int, batch: int) -> tuple[float, list[str]]:
    import ray

    start = time.perf_counter()
    ds = ray.data.from_items([{"path": str(f)} for f in files]).map_batches(
        FasterWhisperActor,
        fn_constructor_kwargs={"model": model_dir(), "threads": threads},
        batch_size=batch,
        concurrency=1,
        num_cpus=threads,
    )
    by_path = {r["path"]: r["text"] for r in ds.take_all()}
    return time.perf_counter() - start, [by_path[str(f)] for f in files]


def daemon_modes(clips: list[Path], threads: int, root: Path) -> None:
    """Per-actor daemons against the node's shared one (a fresh one each run, at a private
    socket), in the order actor, node, node, actor per placement: the machine is shared,
    and the load drifts."""
    os.environ["AUDIODECODE_SOCKET"] = str(root / "node.sock")
    print(f"daemon per actor vs per node: {len(clips)} clips, batch 8")
    try:
        for concurrency, cpus in ((1, float(threads)), (threads, 1.0)):
            times: dict[str, list[float]] = {"actor": [], "node": []}
            for mode in ("actor", "node", "node", "actor"):
                out = root / f"{mode}-{concurrency}.jsonl"
                times[mode].append(run_ray(clips, out, concurrency, cpus, mode, 8)[0])
                if mode == "node":
                    _stop_node_daemon()
                print(
                    f"  {concurrency} actor(s) x {cpus:g} CPU, daemon={mode:5s} "
                    f"{times[mode][-1]:6.1f} s   ({load()})",
                    flush=True,
                )
            for mode, t in times.items():
                print(
                    f"  {concurrency} actor(s) x {cpus:g} CPU, daemon={mode:5s} "
                    f"mean {sum(t) / len(t):6.1f} s"
                )
    finally:
        del os.environ["AUDIODECODE_SOCKET"]


def _stop_node_daemon() -> None:
    from audiodecode import _daemon
    from audiodecode._protocol import Request, Response

    with _daemon.connect() as conn:
        conn.request(Request.Shutdown(), Response.Ok, timeout=10)
    time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", type=Path, default=Path.home() / ".cache/audiodecode/real-mixes")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="files per actor call")
    parser.add_argument("--daemon-modes", type=int, default=0, metavar="N")
    parser.add_argument("--skip-faster-whisper", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="CLI/Ray pairs, order alternating")
    args = parser.parse_args()
    import ray

    clips = sorted((args.real / "clips").glob("*.wav"))
    if not clips:
        raise SystemExit(f"no clips under {args.real / 'clips'} (make_real_mixes.py makes them)")
    # Ray workers import the client from this checkout too.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(
            None, [_checkout.REPO.joinpath("client-py").as_posix(), os.environ.get("PYTHONPATH")]
        )
    )
    # Ray runs its workers at nice 15; on a shared machine that would leave them (and the
    # daemons they start) the CPU others do not use, while the CLI runs at nice 0.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory(prefix="ray-label-bench-") as tmp:
        root = Path(tmp)
        if args.daemon_modes:
            daemon_modes(requests(clips, args.daemon_modes, root / "modes"), args.threads, root)
            return
        files = requests(clips, args.requests, root)
        print(
            f"{len(files)} requests over {len(clips)} real clips; base int8, "
            f"{args.threads} threads; Ray batch {args.batch_size}\nbefore: {load()}"
        )
        run_cli(files[:2], args.threads, root / "warm.jsonl")  # model files, page cache
        # CLI and Ray in alternating order (CLI first on even rounds): the load drifts.
        runs: dict[str, list[tuple[float, float]]] = {"cli": [], "ray": []}
        for round_ in range(args.rounds):
            for tool in ("cli", "ray") if round_ % 2 == 0 else ("ray", "cli"):
                if tool == "cli":
                    runs["cli"].append(run_cli(files, args.threads, root / "cli.jsonl"))
                    cli_texts = texts(root / "cli.jsonl", files)
                    report("audiodecode label", *runs["cli"][-1], files, cli_texts, cli_texts)
                else:
                    jsonl = root / "ray.jsonl"
                    runs["ray"].append(
                        run_ray(files, jsonl, 1, args.threads, "actor", args.batch_size)
                    )
                    ours = texts(jsonl, files)
                    report("audiodecode.ray.label", *runs["ray"][-1], files, ours, cli_texts)
        (cli_t, cli_cpu), (ray_t, ray_cpu) = (mean(runs["cli"]), mean(runs["ray"]))
        print(
            f"  ray.label / CLI: wall {ray_t / cli_t:.3f} (target <= 1.10), "
            f"labelling CPU {ray_cpu / cli_cpu:.3f}",
            flush=True,
        )
        if not args.skip_faster_whisper:
            fw_t, fw = run_faster_whisper(files, args.threads, args.batch_size)
            report("faster-whisper Ray actor", fw_t, None, files, fw, cli_texts)
            print(f"  faster-whisper actor / ray.label time: {fw_t / ray_t:.2f}x (target >= 1.5)")


def mean(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return sum(w for w, _ in runs) / len(runs), sum(c for _, c in runs) / len(runs)


def report(
    name: str, t: float, cpu: float | None, files: list[Path], out: list[str], cli: list[str]
) -> None:
    agreement = 1 - corpus_wer(cli, out)
    used = "" if cpu is None else f"CPU {cpu:6.1f} s  "
    print(
        f"  {name:26s} {t:7.1f} s  {used}{len(files) / t:5.2f} files/s  "
        f"words agree with CLI {agreement * 100:5.1f} %   ({load()})",
        flush=True,
    )


if __name__ == "__main__":
    main()
