#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (fixtures are generated with ffmpeg,
# sox and espeak-ng in test setup), then the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/install-deps.sh

cargo build --release --quiet
cargo test --workspace --quiet
python3 -m pytest -q tests
