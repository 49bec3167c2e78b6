"""Cross-language tests: the Python client against the real Rust binary."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "client-py"))


def built_binary() -> Path:
    target = Path(
        os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/audiodecode/target")
    )
    return Path(os.environ.get("AUDIODECODE_BIN", target / "release/audiodecode"))
