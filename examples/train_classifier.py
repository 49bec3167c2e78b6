"""Train a small audio classifier from an AudioDecode stream.

The daemon decodes, resamples and crops the generated corpus into shared memory; the
training loop only wraps ready slots as tensors. Prints the loss falling and the time the
loop spends waiting in ``next()``.

    python3 examples/train_classifier.py [--steps 300] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "client-py"))
# Run from a checkout: use the binary cargo built unless one is named explicitly.
_TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/audiodecode/target"))
if (_TARGET / "release/audiodecode").exists():
    os.environ.setdefault("AUDIODECODE_BIN", str(_TARGET / "release/audiodecode"))

from audiodecode import AudioDataLoader


def make_model(classes: int) -> nn.Module:
    # Strided 1-D convolutions straight on the waveform: small, and enough to tell tones,
    # sweeps, noise and speech apart.
    return nn.Sequential(
        nn.Conv1d(1, 16, kernel_size=64, stride=16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Conv1d(16, 32, kernel_size=8, stride=4),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Conv1d(32, 64, kernel_size=8, stride=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


def ensure_corpus(corpus: Path, count: int) -> Path:
    manifest = corpus / "manifest.jsonl"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/gen_corpus.py"),
            str(corpus),
            "--count",
            str(count),
            "--labels",
        ],
        check=True,
    )
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=Path.home() / ".cache/audiodecode/quickstart/labeled"
    )
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=1.0)
    args = parser.parse_args()

    manifest = ensure_corpus(args.corpus, args.clips)
    torch.manual_seed(0)
    loader = AudioDataLoader(
        str(manifest),
        batch_size=args.batch_size,
        target_sr=16000,
        max_seconds=args.max_seconds,
        pad_to_max=True,
        shuffle=True,
        seed=0,
    )
    print(f"{len(loader)} batches per epoch, classes: {loader.classes}")
    model = make_model(len(loader.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()

    step = epoch = 0
    waited = audio_seconds = 0.0
    window: list[float] = []
    correct = seen = 0
    started = time.perf_counter()
    while step < args.steps:
        loader.set_epoch(epoch)
        batches = iter(loader)
        while step < args.steps:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            waited += time.perf_counter() - t0
            audio = batch.audio.unsqueeze(1)  # [B, 1, T]
            logits = model(audio)
            loss = loss_fn(logits, batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

            audio_seconds += float(batch.lengths.sum()) / 16000
            window.append(loss.item())
            correct += int((logits.argmax(1) == batch.labels).sum())
            seen += len(batch.labels)
            step += 1
            if step % 50 == 0 or step == args.steps:
                print(
                    f"step {step:4d}  loss {sum(window) / len(window):.3f}  "
                    f"accuracy {correct / seen:.2f}"
                )
                window.clear()
                correct = seen = 0
        epoch += 1
    elapsed = time.perf_counter() - started
    print(
        f"{step} steps in {elapsed:.1f} s: {step * args.batch_size / elapsed:.0f} clips/s, "
        f"{audio_seconds / elapsed:.0f} s of audio per second, "
        f"{1e3 * waited / step:.2f} ms per step waiting in next()"
    )


if __name__ == "__main__":
    main()
