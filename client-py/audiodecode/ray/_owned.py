"""A private daemon bound to the life of the process that started it.

``audiodecode.Daemon`` detaches its daemon into a new session so that a Ctrl-C aimed at a
training job does not reach it, and stops it when its ``with`` block ends. A Ray actor's
process can end without running any Python (SIGKILL, ``ray.kill``, its node's raylet
going away), so here the kernel is also asked to send the daemon SIGTERM when its parent
dies (``PR_SET_PDEATHSIG``, as Ray does for its own children): an actor that Ray restarts
does not leave its old daemon and model behind. The signal comes when the *thread* that
started the daemon ends; Ray runs a (non-threaded) actor's methods on one thread that
lives as long as the actor.

The daemon inherits the actor's environment and priority: Ray's CUDA_VISIBLE_DEVICES (so
it uses the GPUs Ray assigned) and Ray's worker niceness (15 unless
``RAY_worker_niceness`` says otherwise).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Self

from audiodecode import _daemon
from audiodecode._binary import find_binary

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for Linux. Resolved before the fork: the child of a threaded
    process should run as little Python as possible."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before the call above
            os._exit(1)

    return set_signal


class ActorDaemon(_daemon.Daemon):
    """``Daemon(workers=threads)`` whose process dies with ours; the model's threads follow
    ``workers`` (``threads=0`` means the daemon's workers)."""

    def __init__(self, threads: int) -> None:
        super().__init__(workers=threads)
        self.threads = threads

    def __enter__(self) -> Self:
        self._tmpdir = tempfile.mkdtemp(prefix="audiodecode-ray-")
        self.socket_path = Path(self._tmpdir) / "daemon.sock"
        self.log_path = Path(self._tmpdir) / _daemon.LOG_NAME
        args = ["serve", "--foreground", "--socket", str(self.socket_path)]
        args += ["--workers", str(self.threads)]
        # Ray sets OMP_NUM_THREADS to the actor's CPUs (1 when fractional); say it for the
        # daemon explicitly, since oneDNN's OpenMP pool sizes itself from it.
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(find_binary()), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=env,
                preexec_fn=_die_with_parent(),  # noqa: PLW1509 (see the module docstring)
            )
        try:
            with _daemon._wait_until_up(self.socket_path, self.process, self.log_path):
                pass
        except BaseException:
            self._stop()
            raise
        return self
