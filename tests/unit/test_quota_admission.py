"""Quota admission's own rules: which operations are admitted, what an INDEX or
APPEND asks for from the files its sources select (counted by the bounded
survey), what a REINDEX asks for its staging copy, and the system headroom
rule of the resources service."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.errors import ResourceExhausted
from orchestrator.adapters.source_survey import survey_directory
from orchestrator.domain.admission import (
    Ask,
    Documents,
    SourceSurvey,
    documents_of,
    needs_admission,
    reindex_ask,
    released_when_it_ends,
)
from orchestrator.domain.operations import OperationStatus, OperationType
from resources.adapters.system_headroom import SystemHeadroom
from resources.domain.headroom import (
    Floors,
    Headroom,
    Shortfall,
    insufficient_headroom,
    shortfalls,
)
from resources.domain.quotas import Demand

GIB = 1024**3

# --- which operations, and what they ask for -----------------------------------------------


@pytest.mark.parametrize(
    ("type", "admitted"),
    [
        (OperationType.INDEX, True),
        (OperationType.APPEND, True),
        (OperationType.REMOVE_SOURCE, True),
        (OperationType.REINDEX, True),
        (OperationType.DELETE, False),  # only frees room: never refused for quota
    ],
)
def test_every_operation_but_delete_is_admitted(type: OperationType, admitted: bool) -> None:
    assert needs_admission(type) is admitted


def test_the_documents_of_several_sources_add_up_and_a_partial_survey_says_so() -> None:
    assert documents_of([]) == Documents(0, 0, complete=True)
    assert documents_of([SourceSurvey(3, 300), SourceSurvey(2, 50)]) == Documents(5, 350)
    partial = documents_of([SourceSurvey(3, 300), SourceSurvey(7, 1, complete=False)])
    assert partial == Documents(10, 301, complete=False)


def test_a_reindex_asks_for_the_live_chunks_scaled_by_the_chunk_strides() -> None:
    live = {"chunk_size": 512, "chunk_overlap": 64}  # stride 448
    halved = {"chunk_size": 256, "chunk_overlap": 32}  # stride 224: twice the chunks
    assert reindex_ask(10, 1000, 5000, live, halved) == Ask(documents=10, vectors=2000, bytes=5000)
    assert reindex_ask(10, 1000, 5000, live, live) == Ask(10, 1000, 5000)


def test_a_reindex_asks_for_at_least_one_vector_per_document() -> None:
    live = {"chunk_size": 64, "chunk_overlap": 0}
    bigger = {"chunk_size": 4096, "chunk_overlap": 0}
    assert reindex_ask(50, 60, 100, live, bigger).vectors == 50
    assert reindex_ask(7, 0, 100, live, live).vectors == 7  # nothing indexed yet


# --- the survey of a directory source -------------------------------------------------------


def _tree(root: Path, files: dict[str, int]) -> None:
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)


def test_the_survey_counts_the_files_the_globs_select_and_their_bytes(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {"a.txt": 10, "b.md": 20, "c.bin": 1000, "deep/d.txt": 30, "drafts/e.txt": 40},
    )
    # No include: every file of a type vectorops extracts.
    assert survey_directory(tmp_path) == SourceSurvey(4, 100)
    assert survey_directory(tmp_path, include=["*.txt"]) == SourceSurvey(3, 80)
    assert survey_directory(tmp_path, include=["*.txt"], exclude=["drafts"]) == SourceSurvey(2, 40)
    assert survey_directory(tmp_path, include=["deep/**"]) == SourceSurvey(1, 30)


def test_the_survey_stops_at_its_bound_and_says_it_is_partial(tmp_path: Path) -> None:
    _tree(tmp_path, {f"f{i}.txt": 1 for i in range(20)})
    partial = survey_directory(tmp_path, max_entries=5)
    assert not partial.complete and partial.files <= 5


def test_the_survey_does_not_follow_links_to_directories(tmp_path: Path) -> None:
    _tree(tmp_path / "inside", {"a.txt": 5})
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert survey_directory(tmp_path) == SourceSurvey(1, 5)


# --- system headroom ------------------------------------------------------------------------

FLOORS = Floors(disk_bytes=1 * GIB, memory_bytes=256 * 1024**2)
GROWING = Demand(vectors=100, bytes=10_000)


def test_enough_headroom_refuses_nothing() -> None:
    assert shortfalls(Headroom(5 * GIB, 2 * GIB), FLOORS, GROWING) == []


def test_too_little_disk_or_memory_is_a_shortfall_with_its_figures() -> None:
    found = shortfalls(Headroom(GIB // 2, 100), FLOORS, GROWING)
    assert found == [
        Shortfall("disk", GIB // 2, GIB),
        Shortfall("memory", 100, 256 * 1024**2),
    ]


def test_a_demand_that_does_not_grow_the_store_is_never_refused_for_headroom() -> None:
    count_only = Demand(vectors=0, bytes=0, collections=0)
    assert shortfalls(Headroom(0, 0), FLOORS, count_only) == []


def test_a_zero_floor_or_an_unreadable_figure_checks_nothing() -> None:
    assert shortfalls(Headroom(0, 0), Floors(0, 0), GROWING) == []
    assert shortfalls(Headroom(None, None), FLOORS, GROWING) == []


def test_insufficient_headroom_names_the_resource_free_and_floor() -> None:
    error = insufficient_headroom("alice", [Shortfall("disk", 10, 20)])
    assert isinstance(error, ResourceExhausted)
    assert error.reason == "INSUFFICIENT_HEADROOM"
    assert error.metadata == {
        "owner_id": "alice",
        "resource": "disk",
        "free_bytes": "10",
        "floor_bytes": "20",
    }
    (violation,) = error.quota_violations
    assert violation.subject == "system:disk" and "10" in violation.description


def test_the_system_reading_takes_mem_available_and_the_data_dirs_filesystem(
    tmp_path: Path,
) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000 kB\nMemFree:  10 kB\nMemAvailable:  2048 kB\n")
    # The store's directory need not exist yet: its nearest parent's filesystem counts.
    reading = SystemHeadroom(tmp_path / "not" / "yet", meminfo).read()
    assert reading.free_memory_bytes == 2048 * 1024
    assert reading.free_disk_bytes is not None and reading.free_disk_bytes > 0
    assert SystemHeadroom(None, tmp_path / "missing").read() == Headroom(None, None)


def test_a_completed_reindex_keeps_its_room_until_cleanup() -> None:
    assert not released_when_it_ends(OperationType.REINDEX, OperationStatus.COMPLETED)
    assert released_when_it_ends(OperationType.REINDEX, OperationStatus.FAILED)
    assert released_when_it_ends(OperationType.REINDEX, OperationStatus.CANCELLED)
    assert released_when_it_ends(OperationType.APPEND, OperationStatus.COMPLETED)
    assert not released_when_it_ends(OperationType.DELETE, OperationStatus.COMPLETED)
