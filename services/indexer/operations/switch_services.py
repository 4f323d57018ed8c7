"""What the REINDEX ``switch`` and ``cleanup`` steps need beyond every
operation's adapters: the orchestrator's CompleteReindex, the switcher that
applies a switch here, the cleanup jobs, and the journal (for the validation
step's full result)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from indexer.adapters.cleanup_jobs import CleanupJobs
from indexer.adapters.operation_journal import OperationJournal
from indexer.adapters.orchestrator_client import SwitchAnswer, SwitchRequest
from indexer.collection_switch import CollectionSwitcher


class ReindexControl(Protocol):
    """The orchestrator's switch (``indexer.adapters.orchestrator_client.ReindexControlClient``)."""

    async def complete_reindex(self, request: SwitchRequest) -> SwitchAnswer: ...


@dataclass(frozen=True)
class SwitchServices:
    control: ReindexControl
    switcher: CollectionSwitcher
    cleanup_jobs: CleanupJobs
    journal: OperationJournal
    # How long the switch keeps asking while the orchestrator is unreachable or
    # has not yet seen validation pass, before the operation fails.
    deadline_seconds: float = 60.0
