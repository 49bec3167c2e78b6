"""`pip install .` ships the daemon binary and the Python client in one wheel (maturin,
``bindings = "bin"``). Builds the wheel once and checks what is inside it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ)
    # Reuse the build cache outside the clone, as the scripts do.
    env.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache/audiodecode/target"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(out)],
        check=True,
        env=env,
    )
    (built,) = out.glob("audiodecode-*.whl")
    return built


def test_wheel_holds_binary_and_client(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        scripts = [n for n in names if n.endswith(".data/scripts/audiodecode")]
        assert scripts, f"no audiodecode binary in {names}"
        for module in ("__init__.py", "loader.py", "api.py", "_protocol.py", "_ring.py"):
            assert f"audiodecode/{module}" in names
        # The binary links Intel's prebuilt oneDNN; the wheel pulls it in and the binary
        # finds it beside itself ($ORIGIN/../lib is where that wheel installs libdnnl.so.3).
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "Requires-Dist: onednn-cpu-gomp==2023.2.0" in z.read(metadata).decode()
        binary = tmp_path / "audiodecode"
        binary.write_bytes(z.read(scripts[0]))
        assert b"$ORIGIN/../lib" in binary.read_bytes()
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("audiodecode ")
