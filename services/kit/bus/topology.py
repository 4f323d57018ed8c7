"""The streams of the system and the durable consumers each service owns.

The subject map is documented in protos/README.md; this module is its code.
Streams are declared by every service at start-up (idempotent), so any
service may start first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Retention(StrEnum):
    LIMITS = "limits"
    WORK_QUEUE = "workqueue"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: Retention
    max_age_seconds: float = 0  # 0 = keep until the limits or the work queue remove it
    # Window within which a repeated Nats-Msg-Id is dropped by the server: it must
    # cover the longest time an outbox row can wait between publish and "sent".
    duplicate_window_seconds: float = 600


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer with explicit ack."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    max_deliver: int = 5
    ack_wait_seconds: float = 30
    # Delays before a failed message is tried again (nak), the last one repeating. Kept
    # client-side: a server-side backoff would also shorten the ack wait of slow handlers.
    retry_delays_seconds: tuple[float, ...] = field(default=(1, 5, 15, 30))
    max_ack_pending: int = 1000


DAY = 24 * 3600

COMMANDS = StreamSpec("VO_COMMANDS", ("vo.cmd.>",), Retention.WORK_QUEUE)
EVENTS = StreamSpec("VO_EVENTS", ("vo.evt.>",), Retention.LIMITS, max_age_seconds=7 * DAY)
EMBED = StreamSpec("VO_EMBED", ("vo.embed.jobs",), Retention.WORK_QUEUE)
EMBED_RESULTS = StreamSpec(
    "VO_EMBED_RESULTS", ("vo.embed.results.>",), Retention.LIMITS, max_age_seconds=3600
)
USAGE = StreamSpec("VO_USAGE", ("vo.usage.>",), Retention.LIMITS, max_age_seconds=30 * DAY)
AUDIT = StreamSpec("VO_AUDIT", ("vo.audit.>",), Retention.LIMITS, max_age_seconds=365 * DAY)
DEAD = StreamSpec("VO_DEAD", ("vo.dead.>",), Retention.LIMITS, max_age_seconds=30 * DAY)

ALL_STREAMS: tuple[StreamSpec, ...] = (COMMANDS, EVENTS, EMBED, EMBED_RESULTS, USAGE, AUDIT, DEAD)


def dead_letter_subject(stream: str, durable: str) -> str:
    return f"vo.dead.{stream}.{durable}"
