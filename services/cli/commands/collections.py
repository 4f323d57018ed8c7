"""``vectorops collections create|list|get|update|delete``."""

from __future__ import annotations

import argparse
import os

from google.protobuf import field_mask_pb2

from cli.api import Api
from cli.commands.common import (
    add_request_id,
    add_watch,
    config_text,
    request_id,
    started,
)
from cli.errors import ExitCode, UsageError
from cli.output import (
    Output,
    enum_choices,
    enum_name,
    enum_value,
    fields,
    message_dict,
    size,
    table,
    when,
)
from vectorops.common.v1 import config_pb2, operation_pb2, source_pb2
from vectorops.orchestrator.v1 import collection_service_pb2 as api_pb2
from vectorops.orchestrator.v1 import orchestrator_pb2

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
STATUS_PREFIX = "COLLECTION_STATUS_"
QUANTIZATION_PREFIX = "QUANTIZATION_"


def register(nouns: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    noun = nouns.add_parser("collections", help="create, list, show, rename and delete collections")
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser("create", parents=[common], help="create a collection and index it")
    create.add_argument("name", help="1-128 characters of [A-Za-z0-9_.-]")
    create.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory to index (repeatable); it must lie under the indexer's source roots",
    )
    add_source_filters(create)
    create.add_argument("--description", default="")
    create.add_argument("--owner", default="", help="owner to create it for (admins only)")
    add_config_flags(create, model_default=DEFAULT_MODEL)
    add_request_id(create)
    add_watch(create)
    create.set_defaults(handler=create_collection)

    listing = verbs.add_parser("list", parents=[common], help="list collections")
    listing.add_argument("--owner", default="", help="another owner's (admins only)")
    listing.add_argument(
        "--status",
        action="append",
        default=[],
        choices=enum_choices(operation_pb2.CollectionStatus, STATUS_PREFIX),
        help="only these statuses (repeatable)",
    )
    listing.add_argument("--prefix", default="", help="only names starting with this")
    listing.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    listing.set_defaults(handler=list_collections)

    get = verbs.add_parser("get", parents=[common], help="show one collection and its sources")
    get.add_argument("collection_id")
    get.set_defaults(handler=get_collection)

    update = verbs.add_parser("update", parents=[common], help="rename or re-describe")
    update.add_argument("collection_id")
    update.add_argument("--name")
    update.add_argument("--description")
    add_request_id(update)
    update.set_defaults(handler=update_collection)

    delete = verbs.add_parser("delete", parents=[common], help="delete a collection (DELETE)")
    delete.add_argument("collection_id")
    delete.add_argument("--force", action="store_true", help="cancel a running operation first")
    add_request_id(delete)
    add_watch(delete)
    delete.set_defaults(handler=delete_collection)


# -- flags shared with `sources add` and `reindex` -------------------------------------------------


def add_source_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include", action="append", default=[], metavar="GLOB", help="only matching files"
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip matching files"
    )


def directory_source(path: str, args: argparse.Namespace, label: str = "") -> source_pb2.Source:
    # The indexer needs an absolute path; with `make run` it shares this filesystem.
    return source_pb2.Source(
        display_name=label,
        directory=source_pb2.DirectorySource(
            path=os.path.abspath(os.path.expanduser(path)),
            include_globs=args.include,
            exclude_globs=args.exclude,
        ),
    )


def add_config_flags(parser: argparse.ArgumentParser, model_default: str | None) -> None:
    parser.add_argument(
        "--model",
        default=model_default,
        help="embedding model" + (f" (default {model_default})" if model_default else ""),
    )
    parser.add_argument("--chunk-size", type=int, help="tokens per chunk (default: the server's)")
    parser.add_argument("--chunk-overlap", type=int, help="tokens shared by neighbouring chunks")
    parser.add_argument(
        "--quantization", choices=enum_choices(config_pb2.Quantization, QUANTIZATION_PREFIX)
    )
    instruction = parser.add_mutually_exclusive_group()
    instruction.add_argument("--instruction", help="query instruction override")
    instruction.add_argument(
        "--no-instruction",
        action="store_true",
        help="embed without any instruction (not the model's default)",
    )
    if model_default is None:
        instruction.add_argument(
            "--default-instruction",
            action="store_true",
            help="drop an override: back to the model's default instructions",
        )


def apply_config_flags(config: config_pb2.CollectionConfig, args: argparse.Namespace) -> None:
    if args.model:
        if args.model != config.embedding_model:
            config.dimension = 0  # the server looks up the new model's
        config.embedding_model = args.model
    if args.chunk_size is not None:
        config.chunk_size = args.chunk_size
    if args.chunk_overlap is not None:
        config.chunk_overlap = args.chunk_overlap
    if args.quantization:
        config.quantization = enum_value(
            config_pb2.Quantization, args.quantization, QUANTIZATION_PREFIX
        )
    if args.instruction is not None:
        config.instruction = args.instruction
    elif args.no_instruction:
        config.instruction = ""
    elif getattr(args, "default_instruction", False):
        config.ClearField("instruction")


# -- handlers --------------------------------------------------------------------------------------


def create_collection(args: argparse.Namespace, api: Api, out: Output) -> int:
    config = config_pb2.CollectionConfig()
    apply_config_flags(config, args)
    response = api.call(
        api.collections.CreateCollection,
        api_pb2.CreateCollectionRequest(
            collection=orchestrator_pb2.Collection(
                name=args.name, description=args.description, config=config
            ),
            sources=[directory_source(path, args) for path in args.source],
            owner_id=args.owner,
            request_id=request_id(args),
        ),
    )
    collection = response.collection
    if not out.as_json:
        out.print(f"collection {collection.id} ({collection.name}) created")
    return started(
        api, out, args, response.operation, extra={"collection": message_dict(collection)}
    )


def list_collections(args: argparse.Namespace, api: Api, out: Output) -> int:
    statuses = [
        enum_value(operation_pb2.CollectionStatus, status, STATUS_PREFIX) for status in args.status
    ]
    found: list[orchestrator_pb2.Collection] = []
    token = ""
    while True:
        page = api.call(
            api.collections.ListCollections,
            api_pb2.ListCollectionsRequest(
                page_size=min(args.limit, 500) if args.limit > 0 else 500,
                page_token=token,
                owner_id=args.owner,
                statuses=statuses,
                name_prefix=args.prefix,
            ),
        )
        found += page.collections
        token = page.next_page_token
        if not token or (args.limit > 0 and len(found) >= args.limit):
            break
    if args.limit > 0:
        found = found[: args.limit]
    if out.as_json:
        out.json(found)
        return ExitCode.OK
    out.print(
        table(
            ("ID", "NAME", "STATUS", "DOCS", "VECTORS", "SIZE", "MODEL", "CREATED"),
            [
                (
                    c.id,
                    c.name,
                    collection_status(c),
                    c.document_count,
                    c.vector_count,
                    size(c.stored_bytes),
                    c.config.embedding_model,
                    when(c.create_time),
                )
                for c in found
            ],
        )
    )
    return ExitCode.OK


def get_collection(args: argparse.Namespace, api: Api, out: Output) -> int:
    collection = api.call(
        api.collections.GetCollection,
        api_pb2.GetCollectionRequest(collection_id=args.collection_id),
    ).collection
    if out.as_json:
        out.json(collection)
        return ExitCode.OK
    out.print(collection_fields(collection))
    if collection.sources:
        out.print()
        out.print(sources_table(collection))
    return ExitCode.OK


def update_collection(args: argparse.Namespace, api: Api, out: Output) -> int:
    changes = orchestrator_pb2.Collection(id=args.collection_id)
    paths = []
    if args.name is not None:
        changes.name, paths = args.name, [*paths, "name"]
    if args.description is not None:
        changes.description, paths = args.description, [*paths, "description"]
    if not paths:
        raise UsageError("nothing to update: give --name and/or --description")
    collection = api.call(
        api.collections.UpdateCollection,
        api_pb2.UpdateCollectionRequest(
            collection=changes,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            request_id=request_id(args),
        ),
    ).collection
    if out.as_json:
        out.json(collection)
    else:
        out.print(collection_fields(collection))
    return ExitCode.OK


def delete_collection(args: argparse.Namespace, api: Api, out: Output) -> int:
    operation = api.call(
        api.collections.DeleteCollection,
        api_pb2.DeleteCollectionRequest(
            collection_id=args.collection_id, request_id=request_id(args), force=args.force
        ),
    ).operation
    return started(api, out, args, operation)


# -- rendering -------------------------------------------------------------------------------------


def collection_status(collection: orchestrator_pb2.Collection) -> str:
    return enum_name(operation_pb2.CollectionStatus, collection.status, STATUS_PREFIX)


def collection_fields(collection: orchestrator_pb2.Collection) -> str:
    return fields(
        [
            ("id", collection.id),
            ("name", collection.name),
            ("description", collection.description),
            ("owner", collection.owner_id),
            ("status", collection_status(collection)),
            ("status message", collection.status_message),
            ("searchable", "yes" if collection.searchable else "no"),
            ("config", config_text(collection.config)),
            ("documents", collection.document_count),
            ("vectors", collection.vector_count),
            ("stored", size(collection.stored_bytes)),
            ("generation", collection.generation),
            ("alias", collection.alias_name),
            ("physical", collection.physical_collection),
            ("staging", collection.staging_collection),
            ("active operation", collection.active_operation_id),
            ("created", when(collection.create_time)),
            ("updated", when(collection.update_time)),
        ]
    )


def sources_table(collection: orchestrator_pb2.Collection) -> str:
    rows = []
    for source in collection.sources:
        if source.HasField("directory"):
            where = source.directory.path
            globs = source.directory.include_globs
            if globs:
                where += f" (include {', '.join(globs)})"
        else:
            where = f"upload ({source.upload.uploaded_document_count} uploaded)"
        rows.append((source.id, source.display_name or "-", source.document_count, where))
    return table(("SOURCE", "LABEL", "DOCS", "WHERE"), rows)
