"""Optimise one EdgeShard in a process of its own: ``python -m
indexer.adapters.edge_optimizer <shard dir>``.

Qdrant's embedded engine holds the GIL for the whole of an optimisation (an HNSW
build takes seconds), so in the indexer's process it would stall every search
it serves. The indexer closes the shard, runs this at the lowest CPU priority, and
loads the optimised shard back (``EdgeVectorStore.optimize``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import qdrant_edge as qe

# Added to the child's niceness: searches keep the CPU while it builds.
NICENESS = 10


def optimize_shard(shard_dir: Path) -> None:
    """Load, optimise until nothing is planned, flush and close (in this process)."""
    shard = qe.EdgeShard.load(str(shard_dir))
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()


def optimize_in_child(shard_dir: Path, timeout_seconds: float | None = None) -> None:
    """Run ``optimize_shard`` in a child process; its error output becomes the
    exception's message when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", __name__, str(shard_dir)],
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(
            f"optimising {shard_dir} failed (exit {result.returncode}): "
            f"{detail[-1] if detail else 'no output'}"
        )


if __name__ == "__main__":
    # Lowered here, not in a preexec_fn: forking a threaded parent and running
    # Python before exec is unsafe (the child can crash or deadlock).
    os.nice(NICENESS)
    # Idle class where Linux has it: the build then runs only on CPU time nothing
    # else wants, and being a process of its own it holds no lock a search needs.
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    optimize_shard(Path(sys.argv[1]))
