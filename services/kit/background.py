"""Bulk CPU work (chunking, building and writing points) in threads of lower
CPU priority, so that the searches a process serves meanwhile get the CPU first.

Linux keeps a niceness per thread, so only these threads are lowered, not the
event loop that answers searches. Lowered by a nice value rather than to
SCHED_IDLE: such a thread may hold the GIL when the loop wants it, and a thread
that only ran on an idle CPU could then stall the loop for as long as the machine
stays busy; at niceness 10 it still gets a share and hands the GIL back soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

NICENESS = 10
_THREADS = 4  # the pipeline's prepare, build and upsert hops of a few operations at once


def _lower_priority() -> None:
    with contextlib.suppress(OSError):  # not permitted, or not Linux: run at normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


_executor = ThreadPoolExecutor(
    max_workers=_THREADS, thread_name_prefix="bulk", initializer=_lower_priority
)


async def in_background(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a lowered bulk thread; the ``asyncio.to_thread`` of bulk work."""
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(fn, *args))
