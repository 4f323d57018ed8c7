"""What the CLI prints: tables, field blocks, the watch display on a terminal
and in a log, the end-of-operation summary, search hits, and failures decoded
from a real ``google.rpc.Status`` trailer."""

from __future__ import annotations

import io
import json

import grpc
import pytest
from google.protobuf import timestamp_pb2

from cli.commands.search import hits_table
from cli.errors import ExitCode, failure_from_rpc_error
from cli.output import Output, clip, fields, size, table, when
from cli.progress import ProgressDisplay, bar, plain_line, summary
from cli.watch import EXIT_BY_STATUS, StreamEnded, follow
from kit.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    QuotaViolation,
    ResourceExhausted,
)
from kit.grpc.status import STATUS_DETAILS_KEY, grpc_code, to_status
from vectorops.common.v1 import operation_pb2
from vectorops.indexer.v1 import indexer_pb2
from vectorops.orchestrator.v1 import operation_service_pb2, orchestrator_pb2

S = operation_pb2


def op(status=S.OPERATION_STATUS_PROCESSING, percent=0.0, step="ingest", **progress):
    return orchestrator_pb2.Operation(
        id="op-1",
        type=S.OPERATION_TYPE_INDEX,
        status=status,
        current_step=step,
        last_checkpoint=progress.pop("checkpoint", ""),
        progress=S.Progress(percent=percent, step=step, **progress),
    )


def test_table_aligns_columns_and_leaves_the_last_unpadded() -> None:
    text = table(("ID", "NAME", "STATUS"), [("1", "alpha", "READY"), ("22", "b", "")])
    assert text.splitlines() == [
        "ID  NAME   STATUS",
        "1   alpha  READY",
        "22  b",
    ]


def test_fields_align_names_and_drop_empty_values() -> None:
    assert fields([("id", "x"), ("description", ""), ("documents", 0)]).splitlines() == [
        "id:        x",
        "documents: 0",
    ]


def test_small_formatters() -> None:
    assert clip("a  b\nc", 10) == "a b c"
    assert clip("abcdefghijkl", 6) == "abcde…"
    assert (size(512), size(2048), size(3 * 1024**3)) == ("512 B", "2.0 KiB", "3.0 GiB")
    assert when(timestamp_pb2.Timestamp()) == ""
    assert when(timestamp_pb2.Timestamp(seconds=1_769_860_800)) == "2026-01-31 12:00:00Z"


def test_progress_bar_fills_with_percent_and_clamps() -> None:
    assert bar(0, 10) == "[----------]"
    assert bar(50, 10) == "[#####-----]"
    assert bar(100, 10) == bar(140, 10) == "[##########]"


def test_a_log_gets_one_line_per_change_with_step_and_checkpoint() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=False)
    first = op(percent=10, documents_total=4, documents_done=1, checkpoint="create_collection")
    display.show(first)
    display.show(first)  # nothing changed: no new line
    display.show(op(percent=50, documents_total=4, documents_done=2, documents_failed=1))
    final = op(S.OPERATION_STATUS_COMPLETED, 100, "finalize", documents_total=4)
    final.progress.documents_done, final.progress.vectors_written = 4, 9
    final.resources.wall_seconds = 2.5
    display.show(final)
    display.finish(final)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "PROCESSING  10.0%  step ingest  checkpoint create_collection  docs 1/4  vectors 0",
        "PROCESSING  50.0%  step ingest  checkpoint -  docs 2/4  failed 1  vectors 0",
        "COMPLETED  100.0%  step finalize  checkpoint -  docs 4/4  vectors 9",
        "operation op-1 (INDEX) COMPLETED: 4 documents, 9 vectors in 2.5 s",
    ]
    assert "\r" not in stream.getvalue()


def test_a_terminal_gets_one_line_redrawn_in_place(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=True)
    display.show(op(percent=25, checkpoint="create_collection"))
    display.show(op(percent=75))
    done = op(S.OPERATION_STATUS_COMPLETED, 100, "finalize")
    display.show(done)
    display.finish(done)
    text = stream.getvalue()
    frames = text.split("\n")[0].split("\r")[1:]
    assert len(frames) == 3 and all(frame.endswith("\x1b[K") for frame in frames)
    assert frames[0].startswith(
        "[#####---------------]  25.0%  PROCESSING  step ingest  checkpoint create_collection"
    )
    assert frames[2].startswith("[####################] 100.0%  COMPLETED")
    assert text.endswith("\noperation op-1 (INDEX) COMPLETED: 0 documents, 0 vectors\n")


def test_a_narrow_terminal_gets_a_shorter_bar_and_the_end_cut(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    stream = io.StringIO()
    ProgressDisplay(stream, live=True).show(op(percent=25, checkpoint="create_collection"))
    frame = stream.getvalue().removeprefix("\r").removesuffix("\x1b[K")
    assert frame.startswith("[##--------]  25.0%  PROCESSING  step ingest") and len(frame) == 79
    assert "checkpoint create_collection" in frame


def test_summary_of_a_failed_operation_names_the_error() -> None:
    failed = op(S.OPERATION_STATUS_FAILED)
    failed.error.type, failed.error.step, failed.error.message = "STUCK", "ingest", "no progress"
    assert summary(failed) == "operation op-1 (INDEX) FAILED: STUCK during ingest: no progress"
    assert plain_line(failed).startswith("FAILED")


def test_hits_table_shows_rank_score_path_and_a_snippet() -> None:
    hits = [
        indexer_pb2.SearchHit(path="a/tides.pdf", score=0.8123, chunk_index=1, page=2, text="x"),
        indexer_pb2.SearchHit(path="notes.md", score=0.5, collection_id="c2", text="y " * 80),
    ]
    lines = hits_table(hits, with_collection=True).splitlines()
    assert lines[0].split() == ["#", "SCORE", "PATH", "CHUNK", "PAGE", "COLLECTION", "TEXT"]
    assert lines[1].split()[:5] == ["1", "0.812", "a/tides.pdf", "1", "2"]
    assert lines[2].split()[:6] == ["2", "0.500", "notes.md", "0", "-", "c2"]
    assert lines[2].endswith("…") and len(lines[2]) < 140


def test_json_output_uses_proto_field_names() -> None:
    out = Output(as_json=True, out=io.StringIO())
    out.json([op(percent=5, documents_total=3)])
    parsed = json.loads(out.out.getvalue())
    assert parsed[0]["progress"]["documents_total"] == "3"  # int64 as string, proto3 JSON
    assert parsed[0]["status"] == "OPERATION_STATUS_PROCESSING"


# -- failures ----------------------------------------------------------------------------------


class RaisedRpcError(grpc.RpcError):
    """What a client sees: a code, a message and the trailer a server sent."""

    def __init__(self, error) -> None:
        self._code = grpc_code(error)
        self._message = error.message
        self._trailer = ((STATUS_DETAILS_KEY, to_status(error).SerializeToString()),)

    def code(self):
        return self._code

    def details(self):
        return self._message

    def trailing_metadata(self):
        return self._trailer


def test_a_failure_is_decoded_from_the_status_trailer() -> None:
    error = NotFound(
        "collection c-9 not found", reason="COLLECTION_NOT_FOUND", metadata={"collection_id": "c-9"}
    )
    failure = failure_from_rpc_error(RaisedRpcError(error))
    assert failure.exit_code == ExitCode.NOT_FOUND
    assert failure.as_text().splitlines() == [
        "error: NOT_FOUND: collection c-9 not found",
        "  reason: COLLECTION_NOT_FOUND (vectorops.dev)",
        "  collection_id: c-9",
    ]
    assert failure.as_dict()["reason"] == "COLLECTION_NOT_FOUND"
    assert failure.as_dict()["exit_code"] == 3


@pytest.mark.parametrize(
    ("error", "violation", "exit_code"),
    [
        (
            InvalidArgument(
                "bad", reason="INVALID_ARGUMENT", field_violations=[FieldViolation("name", "empty")]
            ),
            "name: empty",
            ExitCode.INVALID_ARGUMENT,
        ),
        (
            ResourceExhausted(
                "over", reason="QUOTA_EXCEEDED", quota_violations=[QuotaViolation("owner:a", "x")]
            ),
            "owner:a: x",
            ExitCode.QUOTA,
        ),
        (
            FailedPrecondition(
                "busy",
                reason="OPERATION_IN_PROGRESS",
                precondition_violations=[PreconditionViolation("OPERATION", "op-2", "running")],
            ),
            "OPERATION op-2: running",
            ExitCode.CONFLICT,
        ),
    ],
)
def test_failure_details_are_listed(error, violation: str, exit_code: ExitCode) -> None:
    failure = failure_from_rpc_error(RaisedRpcError(error))
    assert failure.violations == [violation] and failure.exit_code == exit_code
    assert f"  - {violation}" in failure.as_text()


def test_unauthenticated_says_where_the_token_comes_from() -> None:
    from kit.errors import Unauthenticated

    text = failure_from_rpc_error(
        RaisedRpcError(Unauthenticated("missing bearer token", reason="UNAUTHENTICATED"))
    ).as_text()
    assert "VECTOROPS_TOKEN" in text and "dev-tokens.json" in text


# -- following a watch -------------------------------------------------------------------------


class Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


class ScriptedStreams:
    """An ``Api`` whose WatchOperation streams play the given scripts, one per call."""

    def __init__(self, *scripts) -> None:
        self.scripts = list(scripts)
        self.requests: list[operation_service_pb2.WatchOperationRequest] = []
        self.operations = self

    def WatchOperation(self, request):  # noqa: N802 - the stub's name
        return request

    def stream(self, method, request, timeout):
        self.requests.append(request)
        for item in self.scripts.pop(0):
            if isinstance(item, Exception):
                raise item
            yield operation_service_pb2.WatchOperationResponse(operation=item)


def test_follow_returns_the_terminal_snapshot_and_reconnects_a_broken_stream() -> None:
    seen = []
    api = ScriptedStreams(
        [op(percent=10), Unavailable()],
        [op(percent=40), op(S.OPERATION_STATUS_FAILED, 40)],
    )
    sleeps = []
    final = follow(api, "op-1", seen.append, sleep=sleeps.append)
    assert final.status == S.OPERATION_STATUS_FAILED
    assert EXIT_BY_STATUS[final.status] == ExitCode.OPERATION_FAILED == 9
    assert [s.progress.percent for s in seen] == [10, 40, 40]
    assert len(api.requests) == 2 and len(sleeps) == 1
    assert api.requests[0].operation_id == "op-1"


def test_follow_does_not_retry_a_stream_that_never_worked() -> None:
    api = ScriptedStreams([Unavailable()])
    with pytest.raises(Unavailable):
        follow(api, "op-1", lambda _: None, sleep=lambda _: None)


def test_follow_gives_up_on_a_stream_that_keeps_ending_early() -> None:
    api = ScriptedStreams(*[[op(percent=5)] for _ in range(10)])
    with pytest.raises(StreamEnded):
        follow(api, "op-1", lambda _: None, sleep=lambda _: None)
    assert EXIT_BY_STATUS[S.OPERATION_STATUS_CANCELLED] == ExitCode.OPERATION_CANCELLED == 10


def test_quota_table_shows_limits_and_what_is_used() -> None:
    from cli.commands.quota import quota_table
    from vectorops.resources.v1 import resources_pb2

    quota = resources_pb2.Quota(owner_id="bob", max_vectors=5000, max_stored_bytes=2048)
    usage = resources_pb2.Usage(owner_id="bob", vectors=12, stored_bytes=1024, collections=2)
    lines = quota_table(quota, usage).splitlines()
    assert lines[0].startswith("owner bob (set")
    assert lines[1].split() == ["LIMIT", "MAX", "USED"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["collections"] == ["unlimited", "2"]
    assert rows["vectors"] == ["5000", "12"]
    assert rows["stored_bytes"] == ["2.0", "KiB", "1.0", "KiB"]
    assert rows["documents_per_operation"] == ["unlimited", "-"]
    assert quota_table(quota, None).splitlines()[1].split() == ["LIMIT", "MAX"]
