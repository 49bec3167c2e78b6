"""Locating the ``audiodecode`` daemon binary."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

BINARY_NAME = "audiodecode"


class BinaryNotFoundError(FileNotFoundError):
    """No usable ``audiodecode`` binary was found; the message lists where we looked."""


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary() -> Path:
    """Return the daemon binary: ``$AUDIODECODE_BIN``, then the interpreter's scripts
    directory (where ``pip install`` puts it), then ``PATH``."""
    looked: list[str] = []
    explicit = os.environ.get("AUDIODECODE_BIN")
    if explicit:
        path = Path(explicit)
        if _is_executable(path):
            return path
        # An explicit setting that is wrong is an error, not a reason to pick another binary.
        raise BinaryNotFoundError(f"AUDIODECODE_BIN={explicit} is not an executable file")
    looked.append("$AUDIODECODE_BIN (unset)")

    scripts = Path(sysconfig.get_path("scripts"))
    candidate = scripts / BINARY_NAME
    looked.append(str(candidate))
    if _is_executable(candidate):
        return candidate
    # A virtualenv's bin may differ from sysconfig's when Python was started by full path.
    beside = Path(sys.executable).parent / BINARY_NAME
    looked.append(str(beside))
    if _is_executable(beside):
        return beside

    on_path = shutil.which(BINARY_NAME)
    looked.append("PATH")
    if on_path:
        return Path(on_path)
    raise BinaryNotFoundError("audiodecode binary not found; looked in: " + ", ".join(looked))
