"""Verifies the audit hash chain in the background, so a tampered or corrupted
row raises an alert without anyone calling VerifyChain. Each check walks the
rows appended since the last one; every ``full_every`` checks it walks the
whole chain again, since an edit may hit a row verified long ago. While the
chain is broken every check walks it all, so a repaired row (restored from a
backup) clears the gauge and a still-broken one keeps it raised."""

from __future__ import annotations

import asyncio
import contextlib

from audit import metrics
from audit.adapters.audit_repository import AuditRepository
from audit.domain.chain import GENESIS_HASH, ChainVerifier
from kit.db.outage import POSTGRES_OUTAGE
from kit.logs import get_logger

log = get_logger(__name__)


class ChainMonitor:
    def __init__(
        self, repository: AuditRepository, interval_seconds: float = 30.0, full_every: int = 120
    ) -> None:
        self._repository = repository
        self._interval = interval_seconds
        self._full_every = full_every
        self._checks = 0
        self._sequence = 0
        self._hash = GENESIS_HASH
        self._broken = False

    async def check_once(self, *, full: bool = False) -> bool:
        """Verify the rows appended since the last check (``full``: every row);
        True while the chain holds."""
        full = full or self._broken
        after, after_hash = (0, GENESIS_HASH) if full else (self._sequence, self._hash)
        verifier = ChainVerifier(after_sequence=after, after_hash=after_hash)
        async for entry in self._repository.walk(after + 1, None):
            if not verifier.feed(entry):
                break
        report = verifier.report()
        self._broken = report.broken is not None
        if report.broken is not None:
            log.error(
                "audit.chain_broken",
                sequence=report.broken.sequence,
                failure=report.broken.failure,
            )
        elif report.checked and report.last_sequence >= self._sequence:
            self._sequence, self._hash = report.last_sequence, report.last_hash
        metrics.CHAIN_BROKEN.set(1 if self._broken else 0)
        metrics.CHAIN_VERIFIED_SEQUENCE.set(self._sequence)
        metrics.CHAIN_CHECKS.labels("monitor", "broken" if self._broken else "ok").inc()
        return not self._broken

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_once(full=self._checks % self._full_every == 0)
                self._checks += 1
            except POSTGRES_OUTAGE as error:
                log.warning("audit.chain_check_failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
