"""Staging collection names carry a parsable UTC timestamp."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from indexer.domain.staging import parse_staging, staging_name


def test_round_trip_in_utc() -> None:
    made = datetime(2026, 12, 4, 17, 5, 9, tzinfo=timezone(timedelta(hours=2)))
    name = staging_name("vo_abc_g3", made)
    assert name == "vo_abc_g3_staging_20261204T150509Z"
    assert parse_staging(name) == ("vo_abc_g3", made.astimezone(UTC))


def test_a_base_that_itself_looks_like_staging_keeps_its_whole_base() -> None:
    made = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    nested = staging_name("vo_x_staging_20250101T000000Z", made)
    assert parse_staging(nested) == ("vo_x_staging_20250101T000000Z", made)


@pytest.mark.parametrize(
    "name",
    [
        "vo_abc_g3",
        "vo_abc_staging_",
        "vo_abc_staging_20261304T150509Z",
        "_staging_20261204T150509Z",
    ],
)
def test_other_names_are_not_staging(name: str) -> None:
    assert parse_staging(name) is None


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        staging_name("vo_abc", datetime(2026, 1, 1))
