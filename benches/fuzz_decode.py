"""Mutation fuzzing of the decoder over real and generated files: counts of mutants that
decoded, that failed with a clean error naming the file, and that aborted, panicked, hung
or hit the address-space cap (the target is 0).

It runs the `mutation_fuzzer_finds_no_abort_panic_or_hang` test of daemon/tests/hardening.rs
(release build): each mutant goes through `audiodecode decode` in its own process under
`prlimit --as` and a 20 s deadline. The generated fixtures are always seeds; ``--corpus DIR``
adds every file under DIR (public projects' test audio, fetched outside the repository).

    python3 benches/fuzz_decode.py --corpus ~/.cache/audiodecode/real-audio --mutants 5
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="directory of real audio files to mutate")
    parser.add_argument("--mutants", type=int, default=5, help="mutants per seed file")
    a = parser.parse_args(argv)
    env = dict(os.environ, AUDIODECODE_FUZZ_MUTANTS=str(a.mutants))
    env.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache/audiodecode/target"))
    if a.corpus:
        env["AUDIODECODE_FUZZ_CORPUS"] = str(a.corpus.expanduser())
    cmd = [
        "cargo", "test", "--release", "-q", "-p", "audiodecode", "--test", "hardening",
        "mutation_fuzzer", "--", "--nocapture",
    ]  # fmt: skip
    started = time.monotonic()
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    summary = re.search(
        r"fuzz: (\d+) mutants: (\d+) decoded, (\d+) clean errors, (\d+)", run.stderr
    )
    if not summary:
        sys.stderr.write(run.stdout + run.stderr)
        return 2
    total, decoded, errors, bad = map(int, summary.groups())
    print(f"seeds: generated fixtures{f' + {a.corpus}' if a.corpus else ''}")
    print(f"mutants {total}: decoded {decoded}, clean errors {errors}, ", end="")
    print(f"aborts/panics/hangs/cap hits {bad} ({seconds:.0f} s)")
    if bad:
        sys.stderr.write(run.stderr[-4000:])
    return 0 if bad == 0 and run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
