"""Where a directory source may be: confined to the configured allowed roots.

Shared by the orchestrator (which refuses a bad path synchronously, before it
accepts an operation, when it shares the indexer's filesystem) and the indexer
(which checks again when it scans, since the tree may have changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from kit.errors import FieldViolation, InvalidArgument


def _invalid_path(field: str, path: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"source path {path!r} {why}",
        reason="INVALID_SOURCE_PATH",
        field_violations=[FieldViolation(field=field, description=why)],
    )


def within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_source(path: str, allowed_roots: Sequence[Path], field: str = "path") -> Path:
    """The resolved directory ``path`` names, if it lies inside an allowed root.

    Refused (INVALID_ARGUMENT, reason INVALID_SOURCE_PATH): a relative path, any
    ``..`` component, a path outside every root once symlinks are resolved, a
    missing path, a non-directory. Containment is checked before existence so
    the answer says nothing about what exists outside the roots."""
    if not path or "\x00" in path:
        raise _invalid_path(field, path, "is empty or holds a NUL byte")
    pure = PurePosixPath(path)
    if not pure.is_absolute():
        raise _invalid_path(field, path, "is not absolute")
    if ".." in pure.parts:
        raise _invalid_path(field, path, "has a '..' component")
    resolved = Path(path).resolve(strict=False)
    roots = [Path(root).resolve(strict=False) for root in allowed_roots]
    if not any(within(resolved, root) for root in roots):
        raise _invalid_path(field, path, "is outside the allowed source roots")
    if not resolved.exists():
        raise _invalid_path(field, path, "does not exist")
    if not resolved.is_dir():
        raise _invalid_path(field, path, "is not a directory")
    return resolved
