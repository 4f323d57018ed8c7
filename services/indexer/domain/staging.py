"""Names of staging collections: ``<physical base>_staging_<UTC timestamp>``.

The timestamp is parsable on purpose: cleanup must never delete a staging
collection younger than an hour, and after a crash the only record of when a
staging collection was made may be its name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FORMAT = "%Y%m%dT%H%M%SZ"
_STAGING = re.compile(r"^(?P<base>.+)_staging_(?P<stamp>\d{8}T\d{6}Z)$")


def staging_name(physical_base: str, now: datetime) -> str:
    """The staging collection of ``physical_base`` made at ``now`` (an aware datetime)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return f"{physical_base}_staging_{now.astimezone(UTC).strftime(_FORMAT)}"


def parse_staging(name: str) -> tuple[str, datetime] | None:
    """(physical base, creation time in UTC) of a staging name; None for any other name."""
    match = _STAGING.match(name)
    if match is None:
        return None
    try:
        created = datetime.strptime(match["stamp"], _FORMAT).replace(tzinfo=UTC)
    except ValueError:  # e.g. month 13: looks like a stamp, is not one
        return None
    return match["base"], created
