"""``python3 -m audiodecode.ray label INPUT... --out OUT.jsonl``: ``audiodecode label`` on a
Ray cluster (the interface is described in the package docstring)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import audiodecode
from audiodecode.ray._datasets import _ray, gpus_per_actor, label, write_manifest
from audiodecode.ray._inputs import expand_inputs, labelled_paths
from audiodecode.ray._label_paths import DoneLines, PathRule

USAGE, FAILED = 2, 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m audiodecode.ray")
    sub = p.add_subparsers(dest="command", required=True)
    lab = sub.add_parser("label", help="transcribe inputs on a Ray cluster into a JSONL manifest")
    lab.add_argument("inputs", nargs="+", help="audio files, directories or JSONL/CSV manifests")
    lab.add_argument("-o", "--out", required=True, type=Path, help="the JSONL manifest")
    lab.add_argument("--model", default="base")
    lab.add_argument("--address", help="the cluster (default: $RAY_ADDRESS, else a local one)")
    done = lab.add_mutually_exclusive_group()
    done.add_argument("--resume", action="store_true", help="skip inputs already in --out")
    done.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    lab.add_argument("--language", help="language code (default: detected per file)")
    lab.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    lab.add_argument("--compute-type", default="auto")
    lab.add_argument("--beam-size", type=int, default=5)
    lab.add_argument("--batch-size", type=int, default=64, help="files per actor call")
    lab.add_argument("--concurrency", type=int, help="actors (default: one per node or GPU)")
    lab.add_argument("--cpus-per-actor", type=float, help="default: the smallest node's CPUs")
    lab.add_argument("--gpus-per-actor", type=float, help="default: 1 if the cluster has GPUs")
    lab.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        files = expand_inputs(args.inputs)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE
    out: Path = args.out
    if out.exists() and out.stat().st_size > 0 and not (args.resume or args.overwrite):
        print(
            f"error: {out} already exists; use --resume to continue it or --overwrite to "
            "replace it",
            file=sys.stderr,
        )
        return FAILED
    out.parent.mkdir(parents=True, exist_ok=True)
    # Lines name their inputs from the manifest's directory, or (older versions of either
    # tool) as given: both match.
    done = DoneLines(labelled_paths(out) if args.resume else set(), PathRule(out))
    todo = [f for f in files if f not in done]
    if not args.quiet and len(todo) < len(files):
        print(
            f"resuming: {len(files) - len(todo)} of {len(files)} files already labelled",
            file=sys.stderr,
        )
    if args.overwrite or not out.exists():
        out.write_bytes(b"")
    if not todo:
        return 0
    ray = _connect(args.address)
    if args.quiet:
        ray.data.DataContext.get_current().enable_progress_bars = False
    placement = _placement(ray, args)
    options: dict[str, Any] = {
        "device": args.device,
        "compute_type": args.compute_type,
        "beam_size": args.beam_size,
    }
    if args.language and args.language != "auto":  # "auto": detected, as in the Rust CLI
        options["language"] = args.language
    started = time.monotonic()
    try:
        ds = label(todo, args.model, batch_size=args.batch_size, **placement, **options)
        written = write_manifest(ds, out, append=True)
    except Exception as e:  # noqa: BLE001 - a failed job (bad model, lost cluster) is reported
        print(f"error: {e}", file=sys.stderr)
        return FAILED
    if not args.quiet:
        seconds = time.monotonic() - started
        nodes = len([n for n in ray.nodes() if n["Alive"]])
        print(
            f"labelled {written} files in {seconds:.1f} s on {nodes} node(s) "
            f"({placement['concurrency']} actors)",
            file=sys.stderr,
        )
    return 0 if written == len(todo) else FAILED


def _connect(address: str | None) -> Any:
    """Joins ``address`` or ``$RAY_ADDRESS``; else starts a local cluster whose workers
    can import this client (from a checkout too: they get our import path)."""
    ray = _ray()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        client = str(Path(audiodecode.__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = client if not path else f"{client}{os.pathsep}{path}"
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def _placement(ray: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One actor per node using all its CPUs, or one per GPU when the cluster has GPUs."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    gpus = sum(int(n.get("GPU", 0)) for n in nodes)
    per_actor = args.gpus_per_actor
    if per_actor is None:
        per_actor = gpus_per_actor({"GPU": gpus})
    if per_actor:
        concurrency = args.concurrency or max(1, int(gpus // per_actor))
        cpus = args.cpus_per_actor or 1
    else:
        concurrency = args.concurrency or len(nodes)
        cpus = args.cpus_per_actor or min(n.get("CPU", 1) for n in nodes)
    return {"concurrency": concurrency, "num_cpus": cpus, "num_gpus": per_actor}


if __name__ == "__main__":
    sys.exit(main())
