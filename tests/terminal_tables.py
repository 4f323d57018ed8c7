"""Tables a test module fills while it runs and the session prints at its end
(``pytest_terminal_summary`` in conftest.py), so they show in ``make test`` output."""

from __future__ import annotations

from collections.abc import Sequence

# title → rows; the first row is the header.
TABLES: dict[str, list[tuple[str, ...]]] = {}


def add_row(title: str, header: Sequence[str], row: Sequence[str]) -> None:
    rows = TABLES.setdefault(title, [tuple(header)])
    rows.append(tuple(row))


def render(rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned columns, a rule under the header."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return [line.rstrip() for line in lines]
