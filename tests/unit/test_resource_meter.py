"""The resource meter reads this process: wall and CPU time since it started, and
the highest resident memory it sampled."""

from __future__ import annotations

import time

from indexer.resource_meter import ResourceMeter


def test_meter_counts_wall_and_cpu_time_and_keeps_the_peak_memory() -> None:
    meter = ResourceMeter()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn a little CPU on purpose
        pass
    ballast = bytearray(64 * 1024 * 1024)  # resident once touched
    ballast[::4096] = b"x" * len(ballast[::4096])
    meter.sample()
    with_ballast = meter.use()
    del ballast
    after = meter.use()
    assert with_ballast.wall_seconds > 0 and with_ballast.cpu_seconds >= 0.04
    assert after.peak_memory_bytes >= with_ballast.peak_memory_bytes > 64 * 1024 * 1024
    assert after.wall_seconds >= with_ballast.wall_seconds
