"""The pace of a background job's batches (indexer.domain.pacing)."""

from __future__ import annotations

import pytest

from indexer.domain.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("per_second", [None, 0])
def test_an_unpaced_job_never_waits(per_second: float | None) -> None:
    pacer = Pacer(per_second, Clock())
    assert [pacer.delay_for(64) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_each_batch_waits_out_the_share_of_time_of_those_before_it() -> None:
    clock = Clock()
    pacer = Pacer(100, clock)  # 100 items a second: a batch of 10 takes 0.1 s
    assert pacer.delay_for(10) == 0.0  # the first goes at once
    assert pacer.delay_for(10) == pytest.approx(0.1)
    clock.now += 0.1  # the second went after its wait
    assert pacer.delay_for(20) == pytest.approx(0.1)  # its 10 items' share is not over yet
    clock.now += 0.1
    assert pacer.delay_for(5) == pytest.approx(0.2)  # the 20 before it take 0.2 s


def test_a_batch_slower_than_the_pace_goes_at_once_and_saves_no_burst() -> None:
    clock = Clock()
    pacer = Pacer(100, clock)
    pacer.delay_for(10)
    clock.now += 5.0  # the embedder took its time: far beyond the 0.1 s share
    assert pacer.delay_for(10) == 0.0
    # The idle 4.9 s are not owed back: the batch after still waits its share.
    assert pacer.delay_for(10) == pytest.approx(0.1)
