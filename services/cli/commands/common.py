"""What several nouns share: request ids, printing an operation, and the
``--watch`` that follows a started operation to its end."""

from __future__ import annotations

import argparse
import uuid

from cli.api import Api
from cli.errors import ExitCode
from cli.output import Output, enum_name, fields, message_dict, when
from cli.progress import ProgressDisplay, status_name, type_name
from cli.watch import EXIT_BY_STATUS, follow
from vectorops.common.v1 import config_pb2
from vectorops.orchestrator.v1 import orchestrator_pb2


def add_request_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--request-id",
        help="idempotency key; repeat a command with the same one to retry it safely "
        "(default: a new UUID)",
    )


def request_id(args: argparse.Namespace) -> str:
    return args.request_id or str(uuid.uuid4())


def add_watch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch", action="store_true", help="follow the started operation to its end"
    )
    add_max_wait(parser)


def add_max_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-wait",
        type=float,
        metavar="SECONDS",
        help="give up watching after this long (default: wait to the end)",
    )


def config_text(config: config_pb2.CollectionConfig) -> str:
    quantization = enum_name(config_pb2.Quantization, config.quantization, "QUANTIZATION_")
    text = (
        f"{config.embedding_model} dim={config.dimension} {quantization.lower()} "
        f"chunk={config.chunk_size}/{config.chunk_overlap}"
    )
    if config.HasField("instruction"):
        text += f" instruction={config.instruction!r}"
    return text


def operation_fields(operation: orchestrator_pb2.Operation) -> str:
    progress = operation.progress
    pairs = [
        ("id", operation.id),
        ("type", type_name(operation)),
        ("status", status_name(operation)),
        ("collection", operation.collection_id),
        ("source", operation.source_id),
        ("step", operation.current_step or progress.step),
        ("checkpoint", operation.last_checkpoint),
        ("progress", f"{progress.percent:.1f}%"),
        (
            "documents",
            f"{progress.documents_done} done / {progress.documents_total} total, "
            f"{progress.documents_failed} failed, {progress.documents_skipped} skipped, "
            f"{progress.documents_duplicate} duplicate",
        ),
        ("vectors", progress.vectors_written),
        ("created", when(operation.create_time)),
        ("started", when(operation.start_time)),
        ("ended", when(operation.end_time)),
        ("created by", operation.created_by),
        ("staging", operation.staging_collection),
    ]
    if operation.HasField("config"):
        pairs.append(("config", config_text(operation.config)))
    if operation.HasField("previous_config"):
        pairs.append(("previous config", config_text(operation.previous_config)))
    if operation.HasField("validation"):
        validation = operation.validation
        checks = ", ".join(
            f"{c.name} {'ok' if c.passed else 'FAILED'} ({c.measured:g} vs {c.threshold:g})"
            for c in validation.checks
        )
        pairs.append(("validation", f"{'passed' if validation.passed else 'FAILED'}: {checks}"))
    if operation.error.type or operation.error.message:
        error = operation.error
        pairs.append(("error", f"{error.type} during {error.step or '-'}: {error.message}"))
    return fields(pairs)


def started(
    api: Api,
    out: Output,
    args: argparse.Namespace,
    operation: orchestrator_pb2.Operation,
    extra: dict | None = None,
) -> int:
    """Report an operation a command started; with ``--watch``, follow it."""
    if out.as_json and not args.watch:
        out.json({**(extra or {}), "operation": message_dict(operation)})
        return ExitCode.OK
    if not out.as_json:
        out.print(f"operation {operation.id} ({type_name(operation)}) {status_name(operation)}")
        if not args.watch:
            out.print(f"follow it: vectorops operations watch {operation.id}")
            return ExitCode.OK
    return watch_operation(api, out, operation.id, args.max_wait)


def watch_operation(api: Api, out: Output, operation_id: str, max_wait: float | None) -> int:
    """Follow to the end; the exit code says how it ended. ``--json``: one
    snapshot per line."""
    if out.as_json:
        final = follow(api, operation_id, out.json_line, max_wait)
    else:
        display = ProgressDisplay(out.out, live=_is_terminal(out))
        final = follow(api, operation_id, display.show, max_wait)
        display.finish(final)
    return EXIT_BY_STATUS[final.status]


def _is_terminal(out: Output) -> bool:
    isatty = getattr(out.out, "isatty", None)
    return bool(isatty and isatty())
