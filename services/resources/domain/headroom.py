"""System headroom: a reservation that would grow what is stored is refused
while the machine has too little free disk or memory to do the work.

Pure: the free figures come in (read by ``adapters.system_headroom``), the
shortfalls go out. A reservation that asks for no vectors and no bytes (a
source removal only frees space) is never refused for headroom.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.errors import QuotaViolation, ResourceExhausted
from resources.domain.quotas import Demand


@dataclass(frozen=True)
class Headroom:
    """What the machine has free now; None where it could not be read."""

    free_disk_bytes: int | None
    free_memory_bytes: int | None


@dataclass(frozen=True)
class Floors:
    """The least free disk and memory an operation may start with; 0 turns a check off."""

    disk_bytes: int = 0
    memory_bytes: int = 0


@dataclass(frozen=True)
class Shortfall:
    resource: str  # "disk" or "memory"
    free: int
    floor: int

    def describe(self) -> str:
        return f"free {self.resource} {self.free} B is below the floor of {self.floor} B"


def _short(resource: str, free: int | None, floor: int) -> list[Shortfall]:
    if floor <= 0 or free is None or free >= floor:
        return []
    return [Shortfall(resource, free, floor)]


def shortfalls(headroom: Headroom, floors: Floors, demand: Demand) -> list[Shortfall]:
    """Every floor the machine is below, if the demand would grow the store."""
    if demand.vectors <= 0 and demand.bytes <= 0:
        return []
    return [
        *_short("disk", headroom.free_disk_bytes, floors.disk_bytes),
        *_short("memory", headroom.free_memory_bytes, floors.memory_bytes),
    ]


def insufficient_headroom(owner_id: str, found: list[Shortfall]) -> ResourceExhausted:
    first = found[0]
    return ResourceExhausted(
        "the system has too little headroom to start the operation: "
        + "; ".join(s.describe() for s in found),
        reason="INSUFFICIENT_HEADROOM",
        metadata={
            "owner_id": owner_id,
            "resource": first.resource,
            "free_bytes": str(first.free),
            "floor_bytes": str(first.floor),
        },
        quota_violations=[QuotaViolation(f"system:{s.resource}", s.describe()) for s in found],
    )
