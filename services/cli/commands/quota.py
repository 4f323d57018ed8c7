"""``vectorops quota get|set``: an owner's limits, and what they use of them."""

from __future__ import annotations

import argparse

from google.protobuf import field_mask_pb2

from cli.api import Api
from cli.commands.common import add_request_id, request_id
from cli.errors import ExitCode, UsageError
from cli.output import Output, message_dict, size, table, when
from vectorops.resources.v1 import resource_service_pb2 as api_pb2
from vectorops.resources.v1 import resources_pb2

# limit field → the usage figure it bounds (none for a per-operation limit)
LIMITS = {
    "max_collections": "collections",
    "max_vectors": "vectors",
    "max_stored_bytes": "stored_bytes",
    "max_documents_per_operation": "",
    "max_concurrent_operations": "active_operations",
}
UNLIMITED = ("unlimited", "none")
# The default of the limit flags: argparse gives None for "--vectors unlimited" too.
_ABSENT = object()


def register(nouns: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    noun = nouns.add_parser("quota", help="show or set an owner's quota")
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    get = verbs.add_parser("get", parents=[common], help="limits and current usage")
    get.add_argument("owner", nargs="?", default="", help="default: yourself")
    get.set_defaults(handler=get_quota)

    set_ = verbs.add_parser(
        "set", parents=[common], help="set limits (admins); 'unlimited' lifts one"
    )
    set_.add_argument("owner")
    for name in LIMITS:
        set_.add_argument(
            "--" + name.removeprefix("max_").replace("_", "-"),
            dest=name,
            type=limit,
            metavar="N|unlimited",
            default=_ABSENT,
        )
    add_request_id(set_)
    set_.set_defaults(handler=set_quota)


def limit(text: str) -> int | None:
    if text.strip().lower() in UNLIMITED:
        return None
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a whole number or 'unlimited': {text!r}") from error
    if value < 0:
        raise argparse.ArgumentTypeError("a limit cannot be negative")
    return value


def get_quota(args: argparse.Namespace, api: Api, out: Output) -> int:
    response = api.call(api.resources.GetUsage, api_pb2.GetUsageRequest(owner_id=args.owner))
    if out.as_json:
        out.json({"quota": message_dict(response.quota), "usage": message_dict(response.usage)})
        return ExitCode.OK
    out.print(quota_table(response.quota, response.usage))
    return ExitCode.OK


def set_quota(args: argparse.Namespace, api: Api, out: Output) -> int:
    given = [name for name in LIMITS if getattr(args, name) is not _ABSENT]
    if not given:
        raise UsageError("nothing to set: give at least one limit, e.g. --vectors 100000")
    quota = resources_pb2.Quota(owner_id=args.owner)
    for name in given:
        value = getattr(args, name)
        if value is not None:  # in the mask but unset: unlimited
            setattr(quota, name, value)
    response = api.call(
        api.resources.SetQuota,
        api_pb2.SetQuotaRequest(
            quota=quota,
            update_mask=field_mask_pb2.FieldMask(paths=given),
            request_id=request_id(args),
        ),
    )
    if out.as_json:
        out.json(response.quota)
    else:
        out.print(quota_table(response.quota, None))
    return ExitCode.OK


def quota_table(quota: resources_pb2.Quota, usage: resources_pb2.Usage | None) -> str:
    """Each limit, and with ``usage`` what the owner uses of it now."""
    rows = []
    for name, figure in LIMITS.items():
        bound = str(getattr(quota, name)) if quota.HasField(name) else "unlimited"
        if name == "max_stored_bytes" and quota.HasField(name):
            bound = size(quota.max_stored_bytes)
        row = [name.removeprefix("max_"), bound]
        if usage is not None:
            used = getattr(usage, figure) if figure else None
            row.append("-" if used is None else size(used) if figure == "stored_bytes" else used)
        rows.append(row)
    headers = ("LIMIT", "MAX", "USED") if usage is not None else ("LIMIT", "MAX")
    origin = "default quota" if quota.is_default else f"set {when(quota.update_time)}"
    return f"owner {quota.owner_id} ({origin})\n{table(headers, rows)}"
