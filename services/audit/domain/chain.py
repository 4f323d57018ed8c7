"""The audit hash chain: a canonical serialisation of an entry's content and the
link rule ``hash = sha256(previous hash + canonical content)``.

Pure: no I/O. The sink computes the link when it appends; VerifyChain walks the
stored rows and recomputes it. Any edit to a stored row's content (or to its
``previous_hash``) makes that row's recomputed hash differ from the stored one,
and any deleted or reordered row breaks the sequence or the link after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class EntryContent:
    """What an audit row says; everything the hash covers."""

    sequence: int
    event_id: str
    action: str
    outcome: str
    principal: str
    role: str
    owner_id: str
    collection_id: str
    operation_id: str
    service: str
    request_id: str
    trace_id: str
    occurred_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)


def _plain_numbers(value: Any) -> Any:
    """Integral floats as ints: jsonb gives 1e20 back as 100000000000000000000 and
    3.0 as 3.0, so only this form survives the round trip byte for byte."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _plain_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_numbers(item) for item in value]
    return value


def canonical(content: EntryContent) -> bytes:
    """One byte string per content: sorted keys, no spaces, UTC microseconds, so the
    same row hashes the same in every process and after a round trip through Postgres."""
    occurred = content.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    document = {
        "sequence": content.sequence,
        "event_id": content.event_id,
        "action": content.action,
        "outcome": content.outcome,
        "principal": content.principal,
        "role": content.role,
        "owner_id": content.owner_id,
        "collection_id": content.collection_id,
        "operation_id": content.operation_id,
        "service": content.service,
        "request_id": content.request_id,
        "trace_id": content.trace_id,
        "occurred_at": occurred,
        "details": _plain_numbers(content.details),
    }
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def link_hash(previous_hash: str, content: EntryContent) -> str:
    """The hash of an entry that follows ``previous_hash`` (lowercase hex SHA-256)."""
    return hashlib.sha256(previous_hash.encode() + canonical(content)).hexdigest()


@dataclass(frozen=True)
class StoredEntry:
    """A row as stored: its content and the two hashes written with it."""

    content: EntryContent
    previous_hash: str
    content_hash: str


@dataclass(frozen=True)
class ChainBreak:
    sequence: int
    event_id: str
    failure: str  # "sequence_gap", "prev_hash_mismatch" or "hash_mismatch"


@dataclass(frozen=True)
class ChainReport:
    checked: int
    last_sequence: int
    last_hash: str
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


class ChainVerifier:
    """Walks stored entries one at a time (so a long chain never sits in memory) and
    stops at the first broken link."""

    def __init__(self, *, after_sequence: int, after_hash: str) -> None:
        self.checked = 0
        self.last_sequence, self.last_hash = after_sequence, after_hash
        self.broken: ChainBreak | None = None

    def feed(self, entry: StoredEntry) -> bool:
        """Check the next entry; False once the chain is broken (stop feeding)."""
        self.checked += 1
        content = entry.content
        failure = None
        if content.sequence != self.last_sequence + 1:
            failure = "sequence_gap"
        elif entry.previous_hash != self.last_hash:
            failure = "prev_hash_mismatch"
        elif link_hash(entry.previous_hash, content) != entry.content_hash:
            failure = "hash_mismatch"
        if failure is not None:
            self.broken = ChainBreak(content.sequence, content.event_id, failure)
            return False
        self.last_sequence, self.last_hash = content.sequence, entry.content_hash
        return True

    def report(self) -> ChainReport:
        return ChainReport(self.checked, self.last_sequence, self.last_hash, self.broken)


def verify(entries: Iterable[StoredEntry], *, after_sequence: int, after_hash: str) -> ChainReport:
    """Walk ``entries`` (in sequence order, starting right after ``after_sequence`` whose
    hash is ``after_hash``) and stop at the first broken link."""
    verifier = ChainVerifier(after_sequence=after_sequence, after_hash=after_hash)
    for entry in entries:
        if not verifier.feed(entry):
            break
    return verifier.report()
