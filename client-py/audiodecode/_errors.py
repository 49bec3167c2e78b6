"""Exceptions raised by the client, and the mapping from the daemon's ``ErrorInfo``."""

from __future__ import annotations

from audiodecode._protocol import ErrorInfo, ErrorKind


class AudioDecodeError(Exception):
    """Base class. ``kind`` is the daemon's ``ErrorKind`` (None for client-side errors) and
    ``path`` the file concerned, when there is one."""

    def __init__(
        self,
        message: str,
        kind: ErrorKind | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.path = path


class DaemonError(AudioDecodeError):
    """The daemon could not be started or reached, went away, or broke the protocol."""


class VersionMismatchError(DaemonError):
    """The daemon speaks another protocol version (client and binary from different
    installs)."""


class AudioFileError(AudioDecodeError):
    """A file could not be decoded: missing, unreadable, unsupported, corrupt, truncated,
    empty, or the requested offset lies past its end."""


class AudioFileNotFoundError(AudioFileError, FileNotFoundError):
    """The file does not exist (also a ``FileNotFoundError``)."""


class BadRequestError(AudioDecodeError, ValueError):
    """The daemon rejected the request's parameters (also a ``ValueError``)."""


class StaleDaemonWarning(UserWarning):
    """The daemon answering at a socket runs a binary that has been replaced or removed
    since it started (``pip install -U``, a rebuild): it serves the old code until it is
    stopped (``audiodecode stop``); the next use then starts the installed binary."""


class DamagedAudioWarning(UserWarning):
    """A file was decoded around damaged or truncated data (what decoded is used, as
    FFmpeg, librosa and torchaudio do); ``path`` names the file and ``damage`` says what
    and where. ``strict=True`` turns such files into errors instead."""

    def __init__(self, path: str, damage: str) -> None:
        super().__init__(damage)
        self.path = path
        self.damage = damage


class TranscriptionError(AudioDecodeError):
    """A file could not be transcribed (undecodable audio, or the model failed on it); the
    message names the file, as does ``path``."""


_BY_KIND: dict[ErrorKind, type[AudioDecodeError]] = {
    ErrorKind.VERSION_MISMATCH: VersionMismatchError,
    ErrorKind.BAD_REQUEST: BadRequestError,
    ErrorKind.NOT_FOUND: AudioFileNotFoundError,
    ErrorKind.IO: AudioFileError,
    ErrorKind.UNSUPPORTED: AudioFileError,
    ErrorKind.CORRUPT: AudioFileError,
    ErrorKind.TRUNCATED: AudioFileError,
    ErrorKind.EMPTY: AudioFileError,
    ErrorKind.OFFSET_PAST_END: AudioFileError,
    ErrorKind.DECODER_PANIC: AudioFileError,
    ErrorKind.TIMED_OUT: AudioFileError,
    ErrorKind.INTERNAL: AudioDecodeError,
}


def error_from_info(info: ErrorInfo) -> AudioDecodeError:
    """The exception for a daemon-reported error; the daemon's message already names the
    file, so it is used as is."""
    return _BY_KIND[info.kind](info.message, kind=info.kind, path=info.path)
