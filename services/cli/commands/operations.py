"""``vectorops operations list|get|watch|cancel``."""

from __future__ import annotations

import argparse

from cli.api import Api
from cli.commands.common import (
    add_max_wait,
    add_request_id,
    operation_fields,
    request_id,
    watch_operation,
)
from cli.errors import ExitCode
from cli.output import Output, enum_choices, enum_value, table, when
from cli.progress import status_name, type_name
from vectorops.common.v1 import operation_pb2
from vectorops.orchestrator.v1 import operation_service_pb2 as api_pb2

TYPE_PREFIX = "OPERATION_TYPE_"
STATUS_PREFIX = "OPERATION_STATUS_"


def register(nouns: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    noun = nouns.add_parser("operations", help="list, show, watch and cancel operations")
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    listing = verbs.add_parser("list", parents=[common], help="list operations, newest first")
    listing.add_argument("--collection", default="", help="only this collection's")
    listing.add_argument(
        "--type",
        action="append",
        default=[],
        choices=enum_choices(operation_pb2.OperationType, TYPE_PREFIX),
        help="only these types (repeatable)",
    )
    listing.add_argument(
        "--status",
        action="append",
        default=[],
        choices=enum_choices(operation_pb2.OperationStatus, STATUS_PREFIX),
        help="only these statuses (repeatable)",
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(handler=list_operations)

    get = verbs.add_parser("get", parents=[common], help="show one operation")
    get.add_argument("operation_id")
    get.set_defaults(handler=get_operation)

    watch = verbs.add_parser(
        "watch",
        parents=[common],
        help="follow an operation to its end: exit 0 COMPLETED, 9 FAILED, 10 CANCELLED",
    )
    watch.add_argument("operation_id")
    add_max_wait(watch)
    watch.set_defaults(handler=watch_one)

    cancel = verbs.add_parser("cancel", parents=[common], help="ask an operation to stop")
    cancel.add_argument("operation_id")
    cancel.add_argument("--reason", default="", help="why, for the audit log")
    add_request_id(cancel)
    cancel.set_defaults(handler=cancel_operation)


def list_operations(args: argparse.Namespace, api: Api, out: Output) -> int:
    request = api_pb2.ListOperationsRequest(
        page_size=min(max(args.limit, 1), 500),
        collection_id=args.collection,
        types=[enum_value(operation_pb2.OperationType, t, TYPE_PREFIX) for t in args.type],
        statuses=[enum_value(operation_pb2.OperationStatus, s, STATUS_PREFIX) for s in args.status],
    )
    found = []
    while len(found) < args.limit:
        page = api.call(api.operations.ListOperations, request)
        found += page.operations
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    found = found[: args.limit]
    if out.as_json:
        out.json(found)
        return ExitCode.OK
    out.print(
        table(
            ("ID", "TYPE", "STATUS", "STEP", "PERCENT", "COLLECTION", "CREATED"),
            [
                (
                    o.id,
                    type_name(o),
                    status_name(o),
                    o.current_step or "-",
                    f"{o.progress.percent:.0f}%",
                    o.collection_id,
                    when(o.create_time),
                )
                for o in found
            ],
        )
    )
    return ExitCode.OK


def get_operation(args: argparse.Namespace, api: Api, out: Output) -> int:
    operation = api.call(
        api.operations.GetOperation, api_pb2.GetOperationRequest(operation_id=args.operation_id)
    ).operation
    if out.as_json:
        out.json(operation)
    else:
        out.print(operation_fields(operation))
    return ExitCode.OK


def watch_one(args: argparse.Namespace, api: Api, out: Output) -> int:
    return watch_operation(api, out, args.operation_id, args.max_wait)


def cancel_operation(args: argparse.Namespace, api: Api, out: Output) -> int:
    operation = api.call(
        api.operations.CancelOperation,
        api_pb2.CancelOperationRequest(
            operation_id=args.operation_id, reason=args.reason, request_id=request_id(args)
        ),
    ).operation
    if out.as_json:
        out.json(operation)
    else:
        out.print(f"cancel requested: operation {operation.id} is {status_name(operation)}")
    return ExitCode.OK
