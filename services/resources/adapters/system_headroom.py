"""Reads the machine's free disk (of the store's data directory) and free
memory (``MemAvailable`` in ``/proc/meminfo``) for the headroom rule."""

from __future__ import annotations

import shutil
from pathlib import Path

from kit.logs import get_logger
from resources.domain.headroom import Headroom

log = get_logger(__name__)

MEMINFO = Path("/proc/meminfo")


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing parent: the store may not have
    created its directory yet, and its filesystem is the parent's."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def free_disk_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError as error:
        log.warning("headroom.disk_unreadable", path=str(path), error=str(error))
        return None


def free_memory_bytes(meminfo: Path = MEMINFO) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                return int(value.split()[0]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError) as error:
        log.warning("headroom.memory_unreadable", error=str(error))
    return None


class SystemHeadroom:
    """``read()`` → the machine's headroom now; no data dir → disk not checked."""

    def __init__(self, data_dir: Path | None, meminfo: Path = MEMINFO) -> None:
        self._data_dir = data_dir
        self._meminfo = meminfo

    def read(self) -> Headroom:
        disk = free_disk_bytes(self._data_dir) if self._data_dir is not None else None
        return Headroom(free_disk_bytes=disk, free_memory_bytes=free_memory_bytes(self._meminfo))
