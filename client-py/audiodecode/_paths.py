"""Paths as the daemon reads them: local paths made absolute (its working directory is not
ours), object URLs (``s3://``, ``gs://``, ``az://``, ``http(s)://``) passed as written."""

from __future__ import annotations

import os

# The schemes the daemon's object store reads (daemon/src/store/location.rs).
URL_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "http", "https")


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a remote object rather than a local file."""
    text = os.fspath(path)
    scheme, sep, rest = text.partition("://")
    return bool(sep) and bool(rest) and scheme.lower() in URL_SCHEMES


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` as the daemon should read it."""
    text = os.fspath(path)
    return text if is_url(text) else os.path.abspath(text)


def named(path: str) -> str:
    """``path`` without the query string of an ``http(s)://`` URL (a signed URL's
    ``?X-Amz-Signature=…``): what its name ends in, for telling shards and manifests
    apart by extension."""
    if is_url(path) and path.lower().startswith(("http://", "https://")):
        return path.split("#", 1)[0].split("?", 1)[0]
    return path
