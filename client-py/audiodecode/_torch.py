"""torch is optional: the client hands out tensors when it is importable, numpy otherwise."""

from __future__ import annotations

import importlib
from types import ModuleType


def optional_torch() -> ModuleType | None:
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None
