"""How ``audiodecode label`` names its inputs in a JSONL manifest, and how ``--resume``
matches the manifest's lines back to inputs; a line-for-line port of
``daemon/src/cli/label_paths.rs`` (``PathRule``) and of ``DoneLines`` in
``daemon/src/cli/label.rs``, so either tool writes the same ``audio_filepath`` and resumes
the other's manifests.

A relative input (relative to the working directory) is written relative to the
manifest's own directory, as manifests are read back; URLs and absolute paths are written
as given. Paths are handled as Rust's ``Path`` handles them (``.`` dropped, a directory
made physical only where it exists, ``..`` otherwise taken off lexically), not with
``os.path.normpath``, whose answers differ through symbolic links.
"""

from __future__ import annotations

import os

from audiodecode._paths import is_file_url, is_url

# A path as Rust's ``Path::components`` splits it on Unix: "/" first when it is absolute,
# "." first only when a relative path starts with it, then the names (and "..").
Components = list[str]


def _components(path: str) -> Components:
    names = [name for name in path.split("/") if name and name != "."]
    if path.startswith("/"):
        return ["/", *names]
    if path == "." or path.startswith("./"):
        return [".", *names]
    return names


def _text(components: Components) -> str:
    if components[:1] == ["/"]:
        return "/" + "/".join(components[1:])
    return "/".join(components)


def _parent(path: str) -> str | None:
    """``Path::parent``: ``None`` for a root or an empty path."""
    components = _components(path)
    if not components or components == ["/"]:
        return None
    return _text(components[:-1])


def _normalize(components: Components) -> Components:
    """``.`` dropped and ``..`` taking off the component before it, without looking at the
    file system (``PathBuf::pop``: a root or an empty path cannot be taken off)."""
    out: Components = []
    for name in components:
        if name == ".":
            continue
        if name == "..":
            if out and out[-1] != "/":
                out.pop()
            else:
                out.append("..")
        else:
            out.append(name)
    return out


def _relative_to(directory: Components, target: Components) -> str:
    """``target`` relative to ``directory``; both absolute and normalized."""
    common = 0
    for a, b in zip(directory, target, strict=False):
        if a != b:
            break
        common += 1
    return _text([".."] * (len(directory) - common) + target[common:])


def _as_given(path: str) -> bool:
    """URLs are kept as given: an object's, or a ``file:`` URL (absolute, not a relative
    path whose first directory is ``file:``)."""
    return is_url(path) or is_file_url(path)


class PathRule:
    """Input paths as one manifest sees them. Build it once the manifest's directory
    exists (its physical path is needed); it caches each directory's physical path."""

    def __init__(self, manifest: str | os.PathLike[str]) -> None:
        try:
            cwd: str | None = os.getcwd()
        except OSError:
            cwd = None
        self._cwd = cwd
        self._physical_dirs: dict[str, str | None] = {}
        directory = _parent(os.fspath(manifest))
        out_dir = self._physical(directory) if directory else None
        # `None` keeps relative inputs as given: they are relative to the manifest's
        # directory already (it is the working directory), or cannot be placed (no cwd).
        if cwd is None or (out_dir is not None and out_dir == self._physical(cwd)):
            out_dir = None
        self._out_dir = out_dir

    def written(self, given: str) -> str:
        """``given`` (a URL, or a path relative to the working directory) as the manifest
        writes it."""
        if self._out_dir is None or _as_given(given) or os.path.isabs(given):
            return given
        target = self._key(self._cwd, given)
        return _relative_to(_components(self._out_dir), target)

    def input_key(self, given: str) -> str:
        """The identity of an input: its absolute path with the directories resolved
        physically, or the URL."""
        return given if _as_given(given) else _text(self._key(self._cwd, given))

    def line_key(self, written: str) -> str:
        """The identity of a line's ``audio_filepath`` (relative to the manifest's
        directory), comparable with ``input_key``."""
        if _as_given(written):
            return written
        return _text(self._key(self._out_dir or self._cwd, written))

    def _key(self, base: str | None, path: str) -> Components:
        """``path`` joined to ``base``, its directory made physical where it exists (one
        file reached by two spellings has one key), ``..`` taken off lexically where it
        does not; the file name itself is kept (a link to an audio file stays that input)."""
        joined = _components(os.path.join(base, path) if base is not None else path)
        name = joined[-1] if joined else None
        if name is None or name in ("/", ".", ".."):
            return _normalize(joined)
        physical = self._physical(_text(joined[:-1]))
        if physical is None:
            return _normalize(joined)
        return [*_components(physical), name]

    def _physical(self, directory: str) -> str | None:
        """``fs::canonicalize``: ``None`` when it does not exist."""
        if directory not in self._physical_dirs:
            try:
                physical = os.path.realpath(directory, strict=True) if directory else None
            except OSError:
                physical = None
            self._physical_dirs[directory] = physical
        return self._physical_dirs[directory]


class DoneLines:
    """The ``audio_filepath``s a ``--resume`` found in the manifest; ``input in done`` says
    whether an input (as the run names it) has a line already."""

    def __init__(self, written: set[str], rule: PathRule) -> None:
        self._written = written
        self._rule = rule
        self._keys = {rule.line_key(w) for w in written}

    def __contains__(self, given: object) -> bool:
        # A line names an input when it resolves, against the manifest's directory, to the
        # same file. Earlier versions wrote inputs as given (relative to their working
        # directory) and matched them as text: such a line still matches its text when it
        # names no file against the manifest's directory.
        if not isinstance(given, str):
            return False
        if self._rule.input_key(given) in self._keys:
            return True
        return given in self._written and not os.path.exists(self._rule.line_key(given))
