"""``vectorops audit list|verify``: the append-only, hash-chained audit log."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from cli.api import Api
from cli.errors import ExitCode, UsageError
from cli.output import Output, enum_choices, enum_name, enum_value, fields, table, when
from vectorops.audit.v1 import audit_service_pb2 as api_pb2
from vectorops.common.v1 import audit_pb2

OUTCOME_PREFIX = "AUDIT_OUTCOME_"


def register(nouns: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    noun = nouns.add_parser("audit", help="read and verify the audit log (admins)")
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    listing = verbs.add_parser("list", parents=[common], help="list audit events")
    listing.add_argument("--collection", default="")
    listing.add_argument("--operation", default="")
    listing.add_argument("--owner", default="")
    listing.add_argument("--principal", default="")
    listing.add_argument("--action", default="", help="e.g. collection.create")
    listing.add_argument("--outcome", choices=enum_choices(audit_pb2.AuditOutcome, OUTCOME_PREFIX))
    listing.add_argument("--since", type=timestamp, help="ISO time, e.g. 2026-01-31T12:00Z")
    listing.add_argument("--until", type=timestamp, help="ISO time")
    listing.add_argument("--newest-first", action="store_true")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(handler=list_events)

    verify = verbs.add_parser(
        "verify", parents=[common], help="check the hash chain: exit 0 intact, 11 broken"
    )
    verify.add_argument("--start", type=int, default=0, help="first sequence (default 1)")
    verify.add_argument("--end", type=int, default=0, help="last sequence (default newest)")
    verify.set_defaults(handler=verify_chain)


def timestamp(text: str) -> timestamp_pb2.Timestamp:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def list_events(args: argparse.Namespace, api: Api, out: Output) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    request = api_pb2.ListAuditEventsRequest(
        page_size=min(args.limit, 500),
        collection_id=args.collection,
        operation_id=args.operation,
        owner_id=args.owner,
        principal_id=args.principal,
        action=args.action,
        outcome=enum_value(audit_pb2.AuditOutcome, args.outcome, OUTCOME_PREFIX)
        if args.outcome
        else 0,
        start_time=args.since,
        end_time=args.until,
        descending=args.newest_first,
    )
    found = []
    while len(found) < args.limit:
        page = api.call(api.audit.ListAuditEvents, request)
        found += page.events
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    found = found[: args.limit]
    if out.as_json:
        out.json(found)
        return ExitCode.OK
    out.print(
        table(
            ("SEQ", "TIME", "ACTION", "OUTCOME", "PRINCIPAL", "SERVICE", "COLLECTION"),
            [
                (
                    e.sequence,
                    when(e.event_time),
                    e.action,
                    enum_name(audit_pb2.AuditOutcome, e.outcome, OUTCOME_PREFIX),
                    e.principal_id,
                    e.service,
                    e.collection_id or "-",
                )
                for e in found
            ],
        )
    )
    return ExitCode.OK


def verify_chain(args: argparse.Namespace, api: Api, out: Output) -> int:
    result = api.call(
        api.audit.VerifyChain,
        api_pb2.VerifyChainRequest(start_sequence=args.start, end_sequence=args.end),
    )
    if out.as_json:
        out.json(result)
    else:
        out.print(
            fields(
                [
                    ("chain", "intact" if result.ok else "BROKEN"),
                    ("events checked", result.events_checked),
                    ("last sequence", result.last_sequence),
                    ("last hash", result.last_hash),
                    (
                        "first broken",
                        result.first_broken_sequence
                        if result.HasField("first_broken_sequence")
                        else "",
                    ),
                    ("failure", result.failure),
                ]
            )
        )
    return ExitCode.OK if result.ok else ExitCode.VERIFY_FAILED
