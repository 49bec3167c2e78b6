"""Paths as the daemon reads them: local paths made absolute (its working directory is not
ours), ``file:`` URLs as the local paths they name, object URLs (``s3://``, ``gs://``,
``az://``, ``http(s)://``) passed as written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import unquote

# The schemes the daemon's object store reads (daemon/src/store/location.rs).
URL_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "http", "https")


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a remote object rather than a local file."""
    text = os.fspath(path)
    scheme, sep, rest = text.partition("://")
    return bool(sep) and bool(rest) and scheme.lower() in URL_SCHEMES


def is_file_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a ``file:`` URL (``file:///data/a.wav``)."""
    return os.fspath(path)[:5].lower() == "file:"


def local_path(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """The local path a ``file:`` URL names, percent-decoded (``file:///d/a%20b.wav`` is
    ``/d/a b.wav``; ``file://localhost/...`` too), a fragment (a shard's member) kept;
    anything else unchanged. As the daemon reads them (``store::file_url_path``): a URL
    naming another host, or a relative path, raises ``ValueError``."""
    text = os.fspath(path)
    if not is_file_url(text):
        return path
    body, hash_, fragment = text[5:].partition("#")
    if "?" in body:
        raise ValueError(f"{text}: a file: URL takes no query string (write '?' as %3F)")
    if body.startswith("//"):
        host, slash, rest = body[2:].partition("/")
        if host and host.lower() != "localhost":
            raise ValueError(
                f"{text}: names a file on host {host!r}; only local files are read "
                "(file:///PATH or file://localhost/PATH)"
            )
        body = slash + rest
    if not body.startswith("/"):
        raise ValueError(f"{text}: a file: URL names an absolute path (file:///PATH)")
    return unquote(body, errors="surrogateescape") + hash_ + fragment


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` as the daemon should read it."""
    text = os.fspath(local_path(path))
    return text if is_url(text) else os.path.abspath(text)


def named(path: str) -> str:
    """``path`` without the query string of an ``http(s)://`` URL (a signed URL's
    ``?X-Amz-Signature=…``): what its name ends in, for telling shards and manifests
    apart by extension."""
    if is_url(path) and path.lower().startswith(("http://", "https://")):
        return path.split("#", 1)[0].split("?", 1)[0]
    return path


def is_hidden_name(name: str) -> bool:
    """A name no dataset holds (Note [Hidden files], daemon/src/feed/manifest.rs): macOS's
    ``._NAME`` companions, ``.Trash-1000``, ``__MACOSX`` and every other name starting
    with a dot."""
    return (name.startswith(".") and name not in (".", "..")) or name == "__MACOSX"


def walk_visible(root: str | os.PathLike[str]) -> Iterator[tuple[str, list[str]]]:
    """``os.walk(root)`` without hidden directories and files, as the daemon walks a
    dataset's directory: each directory with its visible file names."""
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not is_hidden_name(d)]
        yield directory, [n for n in names if not is_hidden_name(n)]
