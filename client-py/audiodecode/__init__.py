"""AudioDecode Python client.

The client talks to the ``audiodecode`` daemon over a Unix socket and maps its shared-memory
batch ring; this first module only locates the daemon binary, the way DESIGN.md specifies.
"""

from audiodecode._binary import BinaryNotFoundError, find_binary

__all__ = ["BinaryNotFoundError", "find_binary"]
__version__ = "0.1.0"
