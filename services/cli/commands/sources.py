"""``vectorops sources add|remove``: APPEND and REMOVE_SOURCE operations."""

from __future__ import annotations

import argparse

from cli.api import Api
from cli.commands.collections import add_source_filters, directory_source
from cli.commands.common import add_request_id, add_watch, request_id, started
from cli.output import Output, message_dict
from vectorops.orchestrator.v1 import collection_service_pb2 as api_pb2


def register(nouns: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    noun = nouns.add_parser("sources", help="add a directory to a collection, or remove a source")
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser(
        "add",
        parents=[common],
        help="add a directory (APPEND); the same directory again re-scans it",
    )
    add.add_argument("collection_id")
    add.add_argument("directory", help="under the indexer's source roots")
    add.add_argument("--label", default="", help="a human-readable name for the source")
    add_source_filters(add)
    add_request_id(add)
    add_watch(add)
    add.set_defaults(handler=add_source)

    remove = verbs.add_parser(
        "remove", parents=[common], help="remove a source and its documents (REMOVE_SOURCE)"
    )
    remove.add_argument("collection_id")
    remove.add_argument("source_id")
    add_request_id(remove)
    add_watch(remove)
    remove.set_defaults(handler=remove_source)


def add_source(args: argparse.Namespace, api: Api, out: Output) -> int:
    response = api.call(
        api.collections.AddSource,
        api_pb2.AddSourceRequest(
            collection_id=args.collection_id,
            source=directory_source(args.directory, args, args.label),
            request_id=request_id(args),
        ),
    )
    if not out.as_json:
        out.print(f"source {response.source.id} ({response.source.directory.path})")
    return started(
        api, out, args, response.operation, extra={"source": message_dict(response.source)}
    )


def remove_source(args: argparse.Namespace, api: Api, out: Output) -> int:
    operation = api.call(
        api.collections.RemoveSource,
        api_pb2.RemoveSourceRequest(
            collection_id=args.collection_id,
            source_id=args.source_id,
            request_id=request_id(args),
        ),
    ).operation
    return started(api, out, args, operation)
