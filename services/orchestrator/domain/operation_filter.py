"""The filter of ``google.longrunning.Operations/ListOperations``:

    collection_id="…" AND type=REINDEX AND status=PROCESSING

any subset of the three, each at most once, joined by ``AND``; values bare or
double-quoted; enum values short (``REINDEX``) or in full
(``OPERATION_TYPE_REINDEX``). Anything else is INVALID_ARGUMENT, so a typo
never silently lists everything. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from .fields import invalid_field
from .operations import OperationStatus, OperationType

FIELD = "filter"
_TERM = re.compile(r'\s*(?P<key>[A-Za-z_]+)\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"]+))\s*')
_AND = re.compile(r"AND(?:\s+|$)")
E = TypeVar("E", OperationType, OperationStatus)


@dataclass(frozen=True)
class OperationFilter:
    collection_id: str = ""
    types: tuple[OperationType, ...] = ()
    statuses: tuple[OperationStatus, ...] = ()


def parse_filter(text: str) -> OperationFilter:
    terms: dict[str, str] = {}
    position = 0
    while position < len(text) and text[position:].strip():
        term = _TERM.match(text, position)
        if term is None:
            raise invalid_field(FIELD, f"cannot read {text[position:]!r}; expected key=value")
        key = term["key"]
        if key in terms:
            raise invalid_field(FIELD, f"{key} appears twice")
        terms[key] = term["quoted"] if term["quoted"] is not None else term["bare"]
        position = term.end()
        if position < len(text):
            joiner = _AND.match(text, position)
            if joiner is None:
                raise invalid_field(FIELD, f"expected AND at {text[position:]!r}")
            position = joiner.end()
            if not text[position:].strip():
                raise invalid_field(FIELD, "ends with AND")
    unknown = set(terms) - {"collection_id", "type", "status"}
    if unknown:
        raise invalid_field(
            FIELD, f"unknown key {sorted(unknown)[0]!r}; use collection_id, type, status"
        )
    kind = terms.get("type")
    status = terms.get("status")
    return OperationFilter(
        collection_id=terms.get("collection_id", ""),
        types=(_member(OperationType, kind, "OPERATION_TYPE_", "type"),) if kind else (),
        statuses=(_member(OperationStatus, status, "OPERATION_STATUS_", "status"),)
        if status
        else (),
    )


def _member(enum: type[E], value: str, prefix: str, key: str) -> E:
    try:
        return enum(value.removeprefix(prefix))
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise invalid_field(FIELD, f"{key} must be one of {allowed}, not {value!r}") from None
