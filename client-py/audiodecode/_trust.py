"""Who is at the other end of the socket.

Requests name our files and replies are trusted (shared memory is mapped, transcripts
written), so the server must run as this user, and the per-user socket directory must be
this user's alone: whoever can write there can put their own socket in place.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

from audiodecode._errors import DaemonError

# struct ucred: pid_t pid; uid_t uid; gid_t gid (uid_t is unsigned).
_UCRED = "iII"


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process that listens at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack(_UCRED, raw)[1]


def check_peer(sock: socket.socket, path: str) -> None:
    """Raise ``DaemonError`` unless the server at ``path`` runs as this user."""
    uid, ours = peer_uid(sock), os.geteuid()
    if uid != ours:
        raise DaemonError(
            f"refusing the server at {path}: it runs as uid {uid}, not as this user (uid {ours})"
        )


def private_dir(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if missing; refuse an existing one that is not a
    plain directory owned by this user, or that group or others may write to. The mode of
    a directory found in place is left as it is."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(directory, 0o700)  # ours: the umask may have taken bits the owner needs
    info = os.lstat(directory)
    ours = os.geteuid()
    if not stat.S_ISDIR(info.st_mode):
        raise DaemonError(f"socket directory {directory} is not a directory (a symlink?)")
    if info.st_uid != ours:
        raise DaemonError(
            f"socket directory {directory} is owned by uid {info.st_uid}, not by this "
            f"user (uid {ours}); remove it or set AUDIODECODE_SOCKET"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise DaemonError(
            f"socket directory {directory} is writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); make it private (chmod 700) or "
            "set AUDIODECODE_SOCKET"
        )
