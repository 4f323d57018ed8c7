"""Directory sources: confinement to the allowed roots, and the walk (globs,
symlinks, size limit, stable order) over real temporary trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.domain.sources import (
    SkippedFile,
    SkipReason,
    SourceFile,
    iter_source_files,
)
from kit.errors import InvalidArgument
from kit.source_paths import resolve_source


def _write(path: Path, data: bytes | str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    (allowed / "docs" / "sub").mkdir(parents=True)
    outside.mkdir()
    _write(outside / "secret.txt", "secret")
    return allowed, outside


def _refused(path: str, roots: list[Path]) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        resolve_source(path, roots)
    assert info.value.reason == "INVALID_SOURCE_PATH"
    assert info.value.field_violations and info.value.field_violations[0].field == "path"
    return info.value


def test_resolves_a_directory_inside_a_root(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    assert resolve_source(str(allowed / "docs"), [allowed]) == (allowed / "docs").resolve()
    assert resolve_source(str(allowed), [allowed]) == allowed.resolve()


def test_refuses_relative_dotdot_and_absolute_escapes(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    _refused("docs", [allowed])
    _refused("", [allowed])
    # '..' is refused even when the result would land back inside the root.
    _refused(f"{allowed}/docs/../docs", [allowed])
    _refused(f"{allowed}/../outside", [allowed])
    _refused(str(outside), [allowed])
    _refused("/etc", [allowed])
    # A sibling whose name merely starts with the root's is not inside it.
    (allowed.parent / "allowed2").mkdir()
    _refused(str(allowed.parent / "allowed2"), [allowed])


def test_refuses_a_symlink_escaping_the_roots(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    error = _refused(str(allowed / "escape"), [allowed])
    assert "outside" in error.message
    # A link that stays inside is fine, and resolves to its target.
    (allowed / "inner").symlink_to(allowed / "docs", target_is_directory=True)
    assert resolve_source(str(allowed / "inner"), [allowed]) == (allowed / "docs").resolve()


def test_refuses_missing_paths_and_files(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    _refused(str(allowed / "nope"), [allowed])
    _write(allowed / "file.txt")
    assert "not a directory" in _refused(str(allowed / "file.txt"), [allowed]).message
    # Containment is decided first: nothing is said about what exists outside.
    assert "outside" in _refused("/definitely/not/here", [allowed]).message


def test_any_of_several_roots(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    assert resolve_source(str(outside), [allowed, outside]) == outside.resolve()


def _tree(root: Path) -> None:
    for name in (
        "a.txt",
        "b.md",
        "page.html",
        "report.PDF",
        "notes.docx",
        "image.png",
        "docs/guide.md",
        "docs/sub/deep.txt",
        "docs/sub/data.csv",
        "drafts/wip.txt",
        "node_modules/pkg/readme.md",
        "a/z.txt",
    ):
        _write(root / name, name)


def _files(entries: list) -> list[str]:
    return [e.path for e in entries if isinstance(e, SourceFile)]


def test_walk_default_include_is_supported_types_in_stable_order(tmp_path: Path) -> None:
    _tree(tmp_path)
    entries = list(iter_source_files(tmp_path))
    assert _files(entries) == [
        "a/z.txt",
        "a.txt",
        "b.md",
        "docs/guide.md",
        "docs/sub/deep.txt",
        "drafts/wip.txt",
        "node_modules/pkg/readme.md",
        "notes.docx",
        "page.html",
        "report.PDF",
    ]
    assert entries == list(iter_source_files(tmp_path))
    first = entries[0]
    assert isinstance(first, SourceFile)
    assert first.absolute_path == (tmp_path / "a/z.txt").resolve()
    assert first.size == len("a/z.txt")


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    _tree(tmp_path)

    def walk(include: list[str], exclude: list[str] = []) -> list[str]:  # noqa: B006
        return _files(list(iter_source_files(tmp_path, include, exclude)))

    assert walk(["*.md"]) == ["b.md", "docs/guide.md", "node_modules/pkg/readme.md"]
    assert walk(["docs/**"]) == ["docs/guide.md", "docs/sub/data.csv", "docs/sub/deep.txt"]
    assert walk(["docs/*"]) == ["docs/guide.md"]
    assert walk(["**/*.txt"]) == ["a/z.txt", "a.txt", "docs/sub/deep.txt", "drafts/wip.txt"]
    assert walk(["docs/**/*.txt"]) == ["docs/sub/deep.txt"]
    # A bare name matches at any depth.
    assert walk(["?.txt", "[ab].md"]) == ["a/z.txt", "a.txt", "b.md"]
    assert walk(["[!a].md"]) == ["b.md"]
    assert walk(["*.txt"], ["drafts"]) == ["a/z.txt", "a.txt", "docs/sub/deep.txt"]
    assert walk(["*.txt"], ["drafts/**", "a/*"]) == ["a.txt", "docs/sub/deep.txt"]
    assert walk([], ["node_modules", "*.md", "*.PDF"]) == [
        "a/z.txt",
        "a.txt",
        "docs/sub/deep.txt",
        "drafts/wip.txt",
        "notes.docx",
        "page.html",
    ]


@pytest.mark.parametrize("pattern", ["", "/abs/*.txt", "../*.txt", "docs/../../x"])
def test_bad_patterns_are_refused(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        list(iter_source_files(tmp_path, [pattern]))
    assert info.value.reason == "INVALID_SOURCE_PATTERN"


def test_symlinks_out_of_the_root_are_skipped_and_reported(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    root = allowed / "docs"
    _write(root / "real.txt", "real")
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside, target_is_directory=True)
    (root / "alias.txt").symlink_to(root / "real.txt")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "dangling.txt").symlink_to(root / "missing.txt")
    entries = list(iter_source_files(root))
    assert _files(entries) == ["alias.txt", "real.txt"]
    alias = entries[0]
    assert isinstance(alias, SourceFile) and alias.absolute_path == (root / "real.txt").resolve()
    skipped = {e.path: e.reason for e in entries if isinstance(e, SkippedFile)}
    assert skipped == {
        "dangling.txt": SkipReason.BROKEN_SYMLINK,
        "leak.txt": SkipReason.SYMLINK_ESCAPES_ROOT,
        "leakdir": SkipReason.SYMLINK_ESCAPES_ROOT,
        "loop": SkipReason.SYMLINKED_DIRECTORY,
    }
    # Nothing outside the root is ever handed out to read.
    for entry in entries:
        if isinstance(entry, SourceFile):
            assert root.resolve() in entry.absolute_path.parents


def test_oversized_and_special_files_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "big.txt", b"x" * 101)
    _write(tmp_path / "small.txt", b"x" * 100)
    os.mkfifo(tmp_path / "pipe.txt")
    entries = list(iter_source_files(tmp_path, max_file_bytes=100))
    assert _files(entries) == ["small.txt"]
    skipped = {e.path: e.reason for e in entries if isinstance(e, SkippedFile)}
    assert skipped == {
        "big.txt": SkipReason.FILE_TOO_LARGE,
        "pipe.txt": SkipReason.NOT_A_REGULAR_FILE,
    }
