"""Directory sources: a path confined to the configured allowed roots, walked
with include/exclude globs.

This is the one module of the domain that touches the filesystem: confinement
cannot be decided without resolving symlinks, and the walk must ``lstat`` to
refuse links that leave the root. It reads no file contents.

Glob patterns match the posix path relative to the source root: ``*`` and ``?``
stay within one path segment, ``**`` spans segments (``**/`` also matches no
directory at all), ``[...]`` is a character class. A pattern without ``/``
matches the file name at any depth (``*.pdf``). An exclude pattern also
excludes everything under a directory it matches (``drafts``, ``build/**``).
With no include patterns, every file of a supported type is included.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from indexer.domain.documents import media_type_for
from kit.errors import FieldViolation, InvalidArgument
from kit.source_paths import within

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024


class SkipReason(StrEnum):
    SYMLINK_ESCAPES_ROOT = "SYMLINK_ESCAPES_ROOT"
    # Links to directories are not descended: inside the root their target is
    # walked anyway, and following them risks cycles.
    SYMLINKED_DIRECTORY = "SYMLINKED_DIRECTORY"
    BROKEN_SYMLINK = "BROKEN_SYMLINK"
    NOT_A_REGULAR_FILE = "NOT_A_REGULAR_FILE"  # fifos, sockets, devices: reading could block
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    UNREADABLE = "UNREADABLE"


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the source root, posix
    absolute_path: Path  # symlinks resolved, inside the root: read this one
    size: int


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: SkipReason
    detail: str = ""


SourceEntry = SourceFile | SkippedFile


def _glob_regex(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("(?!/)[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class PathFilter:
    """Compiled include/exclude globs (see the module doc for their meaning)."""

    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    @classmethod
    def compile(cls, include: Sequence[str], exclude: Sequence[str]) -> PathFilter:
        return cls(
            include=tuple(_compile(p, "include") for p in include),
            exclude=tuple(_compile(p, "exclude") for p in exclude),
        )

    def excludes_dir(self, rel_dir: str) -> bool:
        return any(p.fullmatch(rel_dir) for p in self.exclude)

    def accepts(self, rel_path: str) -> bool:
        if any(p.fullmatch(rel_path) for p in self.exclude):
            return False
        if not self.include:
            return media_type_for(rel_path) is not None
        return any(p.fullmatch(rel_path) for p in self.include)


def _compile(pattern: str, field: str) -> re.Pattern[str]:
    pure = PurePosixPath(pattern) if pattern else None
    if pure is None or pure.is_absolute() or ".." in pure.parts or "\x00" in pattern:
        raise InvalidArgument(
            f"{field} pattern {pattern!r} must be a relative glob without '..'",
            reason="INVALID_SOURCE_PATTERN",
            field_violations=[FieldViolation(field=field, description="invalid glob")],
        )
    body = _glob_regex(pattern.removeprefix("./"))
    if "/" not in pattern:
        body = "(?:.*/)?" + body  # a bare name matches at any depth
    return re.compile(body, re.DOTALL)


def iter_source_files(
    root: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Iterator[SourceEntry]:
    """Walk ``root`` (already resolved by ``resolve_source``) depth first, names
    sorted by code point at every level, so two walks of the same tree agree.

    Yields a SourceFile per file to index and a SkippedFile for what a user may
    expect indexed but is not (links out of the root, oversized or special
    files); files that merely do not match the globs are left out silently."""
    root = root.resolve()
    path_filter = PathFilter.compile(include, exclude)
    yield from _walk(root, root, "", path_filter, max_file_bytes)


def _walk(
    root: Path, directory: Path, prefix: str, path_filter: PathFilter, max_bytes: int
) -> Iterator[SourceEntry]:
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        yield SkippedFile(prefix.rstrip("/") or ".", SkipReason.UNREADABLE, exc.strerror or "")
        return
    for entry in entries:
        rel = prefix + entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if not path_filter.excludes_dir(rel):
                    yield from _walk(root, Path(entry.path), rel + "/", path_filter, max_bytes)
                continue
            if entry.is_symlink() and entry.is_dir():  # is_dir() follows the link
                if not path_filter.excludes_dir(rel):
                    yield _linked_dir_entry(root, Path(entry.path), rel)
                continue
            if not path_filter.accepts(rel):
                continue
            yield _file_entry(root, Path(entry.path), rel, entry.is_symlink(), max_bytes)
        except OSError as exc:
            yield SkippedFile(rel, SkipReason.UNREADABLE, exc.strerror or "")


def _linked_dir_entry(root: Path, path: Path, rel: str) -> SkippedFile:
    if not within(path.resolve(strict=False), root):
        return SkippedFile(rel, SkipReason.SYMLINK_ESCAPES_ROOT, "links outside the source")
    return SkippedFile(rel, SkipReason.SYMLINKED_DIRECTORY)


def _file_entry(root: Path, path: Path, rel: str, is_link: bool, max_bytes: int) -> SourceEntry:
    target = path
    if is_link:
        target = path.resolve(strict=False)
        if not within(target, root):
            return SkippedFile(rel, SkipReason.SYMLINK_ESCAPES_ROOT, "links outside the source")
        if not target.exists():
            return SkippedFile(rel, SkipReason.BROKEN_SYMLINK)
    info = target.stat()
    if not stat.S_ISREG(info.st_mode):
        return SkippedFile(rel, SkipReason.NOT_A_REGULAR_FILE)
    if info.st_size > max_bytes:
        return SkippedFile(rel, SkipReason.FILE_TOO_LARGE, f"{info.st_size} > {max_bytes} bytes")
    return SourceFile(path=rel, absolute_path=target, size=info.st_size)
