"""Trace ids: a W3C ``traceparent`` gives its trace id, anything unusable gives
a fresh one (a bad header never fails a call), and an envelope written while a
trace is bound carries it."""

import re

from structlog.contextvars import bound_contextvars

from kit.events import new_envelope
from kit.tracing import (
    current_trace_id,
    incoming_trace_id,
    trace_id_from_traceparent,
    traceparent,
    valid_trace_id,
)
from vectorops.events.v1 import usage_pb2

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEX32 = re.compile(r"[0-9a-f]{32}")


def test_valid_traceparent_gives_its_trace_id() -> None:
    assert trace_id_from_traceparent(f"00-{TRACE}-00f067aa0ba902b7-01") == TRACE
    # A later version may carry more fields after the flags.
    assert trace_id_from_traceparent(f"01-{TRACE}-00f067aa0ba902b7-00-more") == TRACE


def test_malformed_traceparent_is_ignored() -> None:
    for bad in (
        "",
        None,
        "garbage",
        f"00-{TRACE}-00f067aa0ba902b7",  # no flags
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",  # 31 digits
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",  # the spec wants lowercase
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
        f"ff-{TRACE}-00f067aa0ba902b7-01",  # version ff is invalid
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    ):
        assert trace_id_from_traceparent(bad) is None, bad


def test_incoming_trace_id_prefers_traceparent_then_header_then_fresh() -> None:
    other = "a" * 32
    both = [("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01"), ("x-trace-id", other)]
    assert incoming_trace_id(both) == TRACE
    assert incoming_trace_id([("traceparent", "nonsense"), ("x-trace-id", other)]) == other

    fresh = incoming_trace_id([("traceparent", f"00-{'0' * 32}-00f067aa0ba902b7-01")])
    assert HEX32.fullmatch(fresh) and fresh != "0" * 32
    assert incoming_trace_id([("x-trace-id", "not-hex")]) != incoming_trace_id([])
    assert HEX32.fullmatch(incoming_trace_id([("authorization", "Bearer t")]))
    assert valid_trace_id("0" * 32) is None


def test_outgoing_traceparent_round_trips() -> None:
    header = traceparent(TRACE)
    assert trace_id_from_traceparent(header) == TRACE
    assert header != traceparent(TRACE)  # a fresh parent (span) id per call


def test_envelope_takes_the_bound_trace_unless_given_one() -> None:
    payload = usage_pb2.UsageDelta(owner_id="alice")
    assert current_trace_id() == ""
    assert new_envelope(payload, producer="indexer").trace_id == ""
    with bound_contextvars(trace_id=TRACE):
        assert current_trace_id() == TRACE
        assert new_envelope(payload, producer="indexer").trace_id == TRACE
        explicit = new_envelope(payload, producer="indexer", trace_id="b" * 32)
        assert explicit.trace_id == "b" * 32
    assert current_trace_id() == ""
