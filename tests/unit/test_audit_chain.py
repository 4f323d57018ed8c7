"""The audit hash chain: canonical content, links, and the first broken link."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from audit.domain.chain import GENESIS_HASH, EntryContent, StoredEntry, canonical, link_hash, verify

WHEN = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)


def _content(sequence: int, **changes) -> EntryContent:
    base = EntryContent(
        sequence=sequence,
        event_id=f"00000000-0000-0000-0000-{sequence:012d}",
        action="collection.create",
        outcome="AUDIT_OUTCOME_SUCCESS",
        principal="alice",
        role="ROLE_USER",
        owner_id="alice",
        collection_id="c1",
        operation_id="o1",
        service="orchestrator",
        request_id="r1",
        trace_id="t1",
        occurred_at=WHEN,
        details={"b": [1, {"x": "y"}], "a": "z"},
    )
    return replace(base, **changes)


def _chain(count: int) -> list[StoredEntry]:
    entries, previous = [], GENESIS_HASH
    for sequence in range(1, count + 1):
        content = _content(sequence)
        digest = link_hash(previous, content)
        entries.append(StoredEntry(content, previous, digest))
        previous = digest
    return entries


def test_canonical_ignores_key_order_and_time_zone() -> None:
    shifted = WHEN.astimezone(timezone(timedelta(hours=5)))
    reordered = _content(1, details={"a": "z", "b": [1, {"x": "y"}]}, occurred_at=shifted)
    assert canonical(_content(1)) == canonical(reordered)


def test_canonical_numbers_survive_a_jsonb_round_trip() -> None:
    # jsonb hands back 1e20 as an integer and 3.0 may come back as 3: same bytes.
    as_sent = _content(1, details={"big": 1e20, "n": 3.0, "f": 0.25})
    as_read = _content(1, details={"big": 10**20, "n": 3, "f": 0.25})
    assert canonical(as_sent) == canonical(as_read)


def test_hash_depends_on_previous_hash_and_content() -> None:
    first = link_hash(GENESIS_HASH, _content(1))
    assert len(first) == 64 and first != link_hash("1" * 64, _content(1))
    assert first != link_hash(GENESIS_HASH, _content(1, principal="mallory"))


def test_an_intact_chain_verifies() -> None:
    entries = _chain(5)
    report = verify(entries, after_sequence=0, after_hash=GENESIS_HASH)
    assert report.ok and report.checked == 5
    assert report.last_sequence == 5 and report.last_hash == entries[-1].content_hash


def test_edited_content_is_a_hash_mismatch_at_that_row() -> None:
    entries = _chain(5)
    entries[2] = replace(entries[2], content=replace(entries[2].content, action="x.y"))
    report = verify(entries, after_sequence=0, after_hash=GENESIS_HASH)
    assert report.broken is not None
    assert (report.broken.sequence, report.broken.failure) == (3, "hash_mismatch")
    assert report.last_sequence == 2


def test_rehashed_row_breaks_the_next_link() -> None:
    entries = _chain(5)
    forged = replace(entries[2].content, action="x.y")
    entries[2] = StoredEntry(
        forged, entries[2].previous_hash, link_hash(entries[2].previous_hash, forged)
    )
    report = verify(entries, after_sequence=0, after_hash=GENESIS_HASH)
    assert report.broken is not None
    assert (report.broken.sequence, report.broken.failure) == (4, "prev_hash_mismatch")


def test_deleted_row_is_a_sequence_gap() -> None:
    entries = _chain(5)
    del entries[1]
    report = verify(entries, after_sequence=0, after_hash=GENESIS_HASH)
    assert report.broken is not None
    assert (report.broken.sequence, report.broken.failure) == (3, "sequence_gap")


def test_verifying_a_range_starts_from_the_previous_hash() -> None:
    entries = _chain(5)
    report = verify(entries[2:], after_sequence=2, after_hash=entries[1].content_hash)
    assert report.ok and report.checked == 3
