"""The orchestrator's long-running loops: the worker's operation events, the dead
letters, and the stuck-operation reaper. Each stops when ``ctx.stop`` is set;
the consumers first finish (and ack) the message in hand, so a shutdown loses
nothing, and their durable consumers resume where they were on the next start."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from kit.runtime import ServiceContext
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.config import OrchestratorSettings
from orchestrator.dead_letters import DeadLetterConsumer, dead_letters_consumer
from orchestrator.event_consumer import OperationEventConsumer, events_consumer
from orchestrator.reaper import Reaper
from orchestrator.state_gauges import StateGauges


def background(ctx: ServiceContext) -> list[Coroutine[Any, Any, None]]:
    settings = ctx.settings
    if not isinstance(settings, OrchestratorSettings):
        raise TypeError("the orchestrator's background needs OrchestratorSettings")
    # The lifespan's repository releases the reservation of each operation these
    # loops end; loops run without it (a test of them alone) get a bare one.
    repository = getattr(ctx.app, "repository", None) or OrchestratorRepository(
        ctx.pool, ctx.schema
    )
    own_consumers = (settings.orchestrator_events_consumer, settings.orchestrator_dead_consumer)
    events = OperationEventConsumer(repository)
    dead = DeadLetterConsumer(repository, own_consumers)
    reaper = Reaper(
        repository,
        timedelta(seconds=settings.orchestrator_stuck_after_seconds),
        settings.orchestrator_reaper_interval_seconds,
    )
    return [
        # One at a time: an operation's events apply in the order they were published.
        ctx.bus.consume(
            events_consumer(settings.orchestrator_events_consumer),
            events.handle,
            concurrency=1,
            stop=ctx.stop,
        ),
        ctx.bus.consume(
            dead_letters_consumer(settings.orchestrator_dead_consumer),
            dead.handle,
            concurrency=1,
            stop=ctx.stop,
        ),
        reaper.run(ctx.stop),
        StateGauges(ctx.pool, ctx.schema).run(ctx.stop),
    ]
