"""Progress reports of an ingest: at most one per interval, always one at the end,
each a copy the run cannot change afterwards."""

from __future__ import annotations

from indexer.ingest_progress import IngestProgress, ProgressReporter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_changes_are_reported_at_most_once_per_interval_and_always_at_the_end() -> None:
    figures = IngestProgress(documents_total=10)
    reports: list[IngestProgress] = []

    async def collect(report: IngestProgress) -> None:
        reports.append(report)

    clock = Clock()
    reporter = ProgressReporter(figures, collect, 0.5, clock)
    for step in range(1, 6):
        figures.documents_done = step
        await reporter.changed()  # all within the same instant: only the first goes out
    clock.now += 0.5
    figures.documents_done = 6
    await reporter.changed()
    clock.now += 0.1
    figures.documents_done = 10
    await reporter.changed()
    await reporter.final()
    assert [r.documents_done for r in reports] == [1, 6, 10]


async def test_a_report_is_a_copy() -> None:
    figures = IngestProgress(documents_total=2, documents_done=1)
    reports: list[IngestProgress] = []

    async def collect(report: IngestProgress) -> None:
        reports.append(report)

    await ProgressReporter(figures, collect, 1.0).final()
    figures.documents_done = 2
    assert reports[0].documents_done == 1


async def test_without_a_callback_nothing_happens() -> None:
    reporter = ProgressReporter(IngestProgress(), None, 0.0)
    await reporter.changed()
    await reporter.final()
