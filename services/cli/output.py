"""What the CLI prints: aligned tables and ``field: value`` blocks for people,
JSON (the proto3 JSON mapping, field names as in the protos) for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

_ELLIPSIS = "…"


def message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def to_json(value: Message | Sequence[Message] | dict[str, Any]) -> str:
    if isinstance(value, Message):
        value = message_dict(value)
    elif isinstance(value, list | tuple):
        value = [message_dict(item) if isinstance(item, Message) else item for item in value]
    return json.dumps(value, indent=2, sort_keys=False)


def enum_name(enum_type: Any, value: int, prefix: str) -> str:
    """``OPERATION_STATUS_COMPLETED`` → ``COMPLETED``; an unknown number stays a number."""
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def enum_value(enum_type: Any, name: str, prefix: str) -> int:
    """``completed`` → ``OPERATION_STATUS_COMPLETED``'s number (for filters and flags)."""
    wanted = name.strip().upper().replace("-", "_")
    if not wanted.startswith(prefix):
        wanted = prefix + wanted
    return enum_type.Value(wanted)


def enum_choices(enum_type: Any, prefix: str) -> list[str]:
    return [
        name.removeprefix(prefix).lower()
        for name in enum_type.keys()
        if not name.endswith("_UNSPECIFIED")
    ]


def when(stamp: Timestamp | None) -> str:
    """UTC, to the second; empty when unset."""
    if stamp is None or (stamp.seconds == 0 and stamp.nanos == 0):
        return ""
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")


def size(value: int) -> str:
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def clip(text: str, width: int) -> str:
    """One line of at most ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + _ELLIPSIS


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns aligned on the widest cell; the last column is not padded."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(values: Sequence[str]) -> str:
        padded = [value.ljust(widths[i]) for i, value in enumerate(values[:-1])]
        return "  ".join([*padded, values[-1]]).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def fields(pairs: Iterable[tuple[str, object]]) -> str:
    """``name: value`` lines, names aligned; empty values left out."""
    kept = [(name, str(value)) for name, value in pairs if value not in ("", None)]
    if not kept:
        return ""
    width = max(len(name) for name, _ in kept) + 1
    return "\n".join(f"{(name + ':').ljust(width)} {value}" for name, value in kept)


@dataclass
class Output:
    """Where results go: stdout for results, stderr for notes and errors."""

    as_json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def json(self, value: Message | Sequence[Message] | dict[str, Any]) -> None:
        self.print(to_json(value))

    def json_line(self, value: Message | dict[str, Any]) -> None:
        """One compact JSON document per line (for streams)."""
        data = message_dict(value) if isinstance(value, Message) else value
        self.print(json.dumps(data, separators=(",", ":")))
