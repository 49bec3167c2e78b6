"""AudioDecode Python client.

The client talks to the ``audiodecode`` daemon over a Unix socket (starting a per-user
daemon on demand, or using a private one from ``Daemon``) and maps its shared-memory batch
ring, so training batches arrive as tensors without a copy.
"""

from audiodecode._batch import Batch
from audiodecode._binary import BinaryNotFoundError, find_binary
from audiodecode._daemon import Daemon
from audiodecode._errors import (
    AudioDecodeError,
    AudioFileError,
    AudioFileNotFoundError,
    BadRequestError,
    DaemonError,
    DamagedAudioWarning,
    StaleDaemonWarning,
    TranscriptionError,
    VersionMismatchError,
)
from audiodecode._protocol import ErrorKind
from audiodecode.api import load
from audiodecode.augment import Gain, Noise, Reverb, Shift, Speed
from audiodecode.http import serve_http
from audiodecode.loader import AudioDataLoader
from audiodecode.splits import create_train_val_loaders
from audiodecode.transcribe import (
    Segment,
    Transcription,
    WhisperInference,
    Word,
    transcribe_batch,
    transcribe_file,
)
from audiodecode.vad import speech_segments

__all__ = [
    "AudioDataLoader",
    "AudioDecodeError",
    "AudioFileError",
    "AudioFileNotFoundError",
    "BadRequestError",
    "Batch",
    "BinaryNotFoundError",
    "Daemon",
    "DaemonError",
    "DamagedAudioWarning",
    "ErrorKind",
    "Gain",
    "Noise",
    "Reverb",
    "Segment",
    "Shift",
    "Speed",
    "StaleDaemonWarning",
    "Transcription",
    "TranscriptionError",
    "VersionMismatchError",
    "WhisperInference",
    "Word",
    "create_train_val_loaders",
    "find_binary",
    "load",
    "serve_http",
    "speech_segments",
    "transcribe_batch",
    "transcribe_file",
]
__version__ = "0.1.0"
