"""Unpack Intel's oneDNN wheels (library + headers) into a plain prefix: DIR/lib, DIR/include.

Wheels cannot hold symlinks, so they carry libdnnl.so, .so.3 and .so.3.2 as three copies;
only the SONAME file is kept and the others become links to it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

SONAME = "libdnnl.so.3"


def unpack(wheel_dir: Path, prefix: Path) -> None:
    staging = Path(tempfile.mkdtemp(dir=prefix.parent, prefix=".onednn-"))
    for wheel in sorted(wheel_dir.glob("onednn*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                parts = Path(member).parts
                if len(parts) < 4 or parts[1] != "data" or parts[2] not in ("lib", "include"):
                    continue
                name = Path(*parts[2:])
                # Keep only the SONAME copy of the library.
                is_library = name.parent == Path("lib") and name.name.startswith("libdnnl.so")
                if is_library and name.name != SONAME:
                    continue
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    lib = staging / "lib"
    if not (lib / SONAME).is_file() or not (staging / "include" / "dnnl.h").is_file():
        raise SystemExit(f"error: {wheel_dir} holds no oneDNN library and headers")
    os.symlink(SONAME, lib / "libdnnl.so")
    if prefix.exists():
        shutil.rmtree(prefix)
    staging.rename(prefix)  # atomic: a half-unpacked prefix is never seen


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: unpack_onednn.py WHEEL_DIR PREFIX")
    prefix = Path(sys.argv[2])
    prefix.parent.mkdir(parents=True, exist_ok=True)
    unpack(Path(sys.argv[1]), prefix)


if __name__ == "__main__":
    main()
