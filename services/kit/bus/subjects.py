"""The subjects of the system and the message ids that make re-publishing safe.

protos/README.md holds the subject map; this module is its code, so producers
and consumers cannot disagree on a spelling. A message a worker may publish
again after a crash (a step's events, a command's outcome) takes a
deterministic ``Nats-Msg-Id`` from here, so JetStream drops the repeat within
its duplicate window and the consumer's idempotent handling covers the rest.
"""

from __future__ import annotations

# --- commands: orchestrator (outbox) → indexer, work queue ---------------------
COMMAND_PREFIX = "vo.cmd.indexer."
COMMANDS_FILTER = "vo.cmd.indexer.>"


def command_subject(operation_type: str) -> str:
    """``INDEX`` → ``vo.cmd.indexer.index``."""
    return COMMAND_PREFIX + operation_type.lower()


# --- operation events: indexer → orchestrator ---------------------------------
OPERATION_EVENTS_FILTER = "vo.evt.op.>"
STEP_STARTED = "vo.evt.op.step_started"
STEP_COMPLETED_PREFIX = "vo.evt.op.step_completed."
OPERATION_COMPLETED = "vo.evt.op.completed"
OPERATION_FAILED = "vo.evt.op.failed"
OPERATION_CANCELLED = "vo.evt.op.cancelled"
PROGRESS = "vo.evt.progress"


def step_completed_subject(step: str) -> str:
    return STEP_COMPLETED_PREFIX + step


# --- control and collection events: orchestrator (outbox) → indexers ----------
CANCEL = "vo.evt.ctl.cancel"
COLLECTION_EVENTS_FILTER = "vo.evt.collection.>"
COLLECTION_STATUS = "vo.evt.collection.status"
COLLECTION_SWITCHED = "vo.evt.collection.switched"

# --- embedding: indexer → embedders → indexer ----------------------------------
EMBED_JOBS = "vo.embed.jobs"
EMBED_RESULTS_PREFIX = "vo.embed.results."


def embed_results_subject(operation_id: str) -> str:
    return EMBED_RESULTS_PREFIX + operation_id


# --- usage and audit -------------------------------------------------------------
USAGE_DELTA = "vo.usage.delta"
USAGE_SNAPSHOT = "vo.usage.snapshot"
USAGE_FILTER = "vo.usage.>"
AUDIT_PREFIX = "vo.audit."


def audit_subject(action: str) -> str:
    """``reindex.switch`` → ``vo.audit.reindex.switch``."""
    return AUDIT_PREFIX + action


# --- deterministic message ids ---------------------------------------------------


def step_event_id(operation_id: str, step: str, what: str) -> str:
    """``what`` is ``started`` or ``completed``: one id per step and kind."""
    return f"{operation_id}.{step}.{what}"


def outcome_event_id(operation_id: str, outcome: str) -> str:
    """``outcome`` is ``completed``, ``failed``, ``cancelled`` or ``usage``."""
    return f"{operation_id}.{outcome}"
