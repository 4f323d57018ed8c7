"""How a watched operation looks: a one-line bar redrawn in place on a terminal,
one plain line per change otherwise (logs, CI), and a summary at the end."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import TextIO

from cli.output import enum_name
from vectorops.common.v1 import operation_pb2
from vectorops.orchestrator.v1 import orchestrator_pb2

BAR_WIDTH = 20


def status_name(operation: orchestrator_pb2.Operation) -> str:
    return enum_name(operation_pb2.OperationStatus, operation.status, "OPERATION_STATUS_")


def type_name(operation: orchestrator_pb2.Operation) -> str:
    return enum_name(operation_pb2.OperationType, operation.type, "OPERATION_TYPE_")


def bar(percent: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(percent, 100.0)) / 100 * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def figures(operation: orchestrator_pb2.Operation) -> str:
    """Step, last checkpoint, documents and vectors, in one line (most telling first,
    since a narrow terminal cuts the end)."""
    progress = operation.progress
    step = operation.current_step or progress.step or "-"
    total = str(progress.documents_total) if progress.documents_total else "?"
    parts = [
        f"step {step}",
        f"checkpoint {operation.last_checkpoint or '-'}",
        f"docs {progress.documents_done}/{total}",
    ]
    if progress.documents_failed:
        parts.append(f"failed {progress.documents_failed}")
    if progress.documents_skipped:
        parts.append(f"skipped {progress.documents_skipped}")
    parts.append(f"vectors {progress.vectors_written}")
    return "  ".join(parts)


def bar_line(operation: orchestrator_pb2.Operation, width: int = BAR_WIDTH) -> str:
    percent = operation.progress.percent
    return f"{bar(percent, width)} {percent:5.1f}%  {status_name(operation)}  {figures(operation)}"


def plain_line(operation: orchestrator_pb2.Operation) -> str:
    percent = operation.progress.percent
    return f"{status_name(operation):<10} {percent:5.1f}%  {figures(operation)}"


def summary(operation: orchestrator_pb2.Operation) -> str:
    head = f"operation {operation.id} ({type_name(operation)}) {status_name(operation)}"
    if operation.status == operation_pb2.OPERATION_STATUS_COMPLETED:
        progress = operation.progress
        took = operation.resources.wall_seconds
        tail = f": {progress.documents_done} documents, {progress.vectors_written} vectors"
        if progress.documents_failed:
            tail += f", {progress.documents_failed} failed"
        return head + tail + (f" in {took:.1f} s" if took else "")
    error = operation.error
    if error.type or error.message:
        where = f" during {error.step}" if error.step else ""
        return f"{head}: {error.type}{where}: {error.message}"
    return head


@dataclass
class ProgressDisplay:
    """Draws snapshots to ``stream``; ``live`` redraws one line (a terminal)."""

    stream: TextIO
    live: bool
    _last: str = field(default="", init=False)

    def show(self, operation: orchestrator_pb2.Operation) -> None:
        if self.live:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            line = bar_line(operation)
            if len(line) > width:  # a narrow terminal: a shorter bar, then cut the end
                line = bar_line(operation, BAR_WIDTH // 2)[:width]
            # \r back to the start, \x1b[K clears what a longer line left behind.
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._last = line
            return
        line = plain_line(operation)
        if line != self._last:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last = line

    def finish(self, operation: orchestrator_pb2.Operation) -> None:
        if self.live and self._last:
            self.stream.write("\n")
        self.stream.write(summary(operation) + "\n")
        self.stream.flush()
