"""Run benchmarks from a checkout: import the client from ``client-py/`` and use the binary
cargo built (``$CARGO_TARGET_DIR`` or ``~/.cache/audiodecode/target``), unless
``AUDIODECODE_BIN`` names one. Import this before ``audiodecode``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "client-py"))
_TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/audiodecode/target"))
if (_TARGET / "release/audiodecode").exists():
    os.environ.setdefault("AUDIODECODE_BIN", str(_TARGET / "release/audiodecode"))
