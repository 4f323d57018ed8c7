"""How many files a directory source selects and how many bytes they hold, for
the quota admission of an INDEX or APPEND before it is accepted.

A bounded walk: at most ``max_entries`` directory entries are looked at, so a
huge tree cannot hold a request up; past that the survey says it is partial
and its figures are a lower bound. The globs mean what they mean to the
indexer's walk (``*``/``?`` within one segment, ``**`` across segments, a bare
name matches at any depth, an exclude also excludes a directory's contents;
no include: every file of a type vectorops extracts). Links to directories
are not followed, as the indexer does not follow them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from kit.media_types import media_type_for
from orchestrator.domain.admission import SourceSurvey

DEFAULT_MAX_ENTRIES = 100_000


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    body = "".join(out)
    if "/" not in pattern:
        body = "(?:.*/)?" + body
    return re.compile(body, re.DOTALL)


class _Selection:
    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include = [_glob_regex(p.removeprefix("./")) for p in include if p]
        self._exclude = [_glob_regex(p.removeprefix("./")) for p in exclude if p]

    def excludes(self, relative: str) -> bool:
        return any(p.fullmatch(relative) for p in self._exclude)

    def selects(self, relative: str) -> bool:
        if self.excludes(relative):
            return False
        if not self._include:
            return media_type_for(relative) is not None
        return any(p.fullmatch(relative) for p in self._include)


def survey_directory(
    root: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> SourceSurvey:
    """The files under ``root`` (already resolved and confined) the globs select."""
    selection = _Selection(include, exclude)
    files = size = seen = 0
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except OSError:
            continue  # the indexer reports an unreadable directory; nothing to count
        for entry in entries:
            seen += 1
            if seen > max_entries:
                return SourceSurvey(files, size, complete=False)
            relative = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not selection.excludes(relative):
                        pending.append((Path(entry.path), relative + "/"))
                elif entry.is_file() and selection.selects(relative):
                    files += 1
                    size += entry.stat().st_size
            except OSError:
                continue
    return SourceSurvey(files, size, complete=True)
