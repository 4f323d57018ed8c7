"""``vectorops reindex``: a blue-green REINDEX to a changed configuration.

The API takes the whole target config, so the command reads the live one,
changes what the flags name, and sends it with the generation it read: a
switch made by someone else in between fails STALE_GENERATION instead of
being overwritten.
"""

from __future__ import annotations

import argparse

from cli.api import Api
from cli.commands.collections import add_config_flags, apply_config_flags
from cli.commands.common import add_request_id, add_watch, config_text, request_id, started
from cli.errors import UsageError
from cli.output import Output
from vectorops.common.v1 import config_pb2, operation_pb2
from vectorops.orchestrator.v1 import collection_service_pb2 as api_pb2


def register(nouns: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    reindex = nouns.add_parser(
        "reindex",
        parents=[common],
        help="re-embed a live collection with a new model or chunking (blue-green)",
    )
    reindex.add_argument("collection_id")
    add_config_flags(reindex, model_default=None)
    reindex.add_argument(
        "--min-topk-overlap", type=float, help="validation threshold override (0 to 1)"
    )
    reindex.add_argument(
        "--point-count-tolerance", type=float, help="validation threshold override, e.g. 0.01"
    )
    reindex.add_argument("--max-score-drift", type=float, help="validation threshold override")
    add_request_id(reindex)
    add_watch(reindex)
    reindex.set_defaults(handler=reindex_collection)


def reindex_collection(args: argparse.Namespace, api: Api, out: Output) -> int:
    collection = api.call(
        api.collections.GetCollection,
        api_pb2.GetCollectionRequest(collection_id=args.collection_id),
    ).collection
    target = config_pb2.CollectionConfig()
    target.CopyFrom(collection.config)
    apply_config_flags(target, args)
    if target == collection.config:
        raise UsageError(
            "nothing to change: give --model, --chunk-size, --chunk-overlap, --quantization "
            "or an instruction flag"
        )
    thresholds = operation_pb2.ValidationThresholds(
        min_topk_overlap=args.min_topk_overlap or 0,
        point_count_tolerance=args.point_count_tolerance or 0,
        max_score_drift=args.max_score_drift or 0,
    )
    operation = api.call(
        api.collections.ReindexCollection,
        api_pb2.ReindexCollectionRequest(
            collection_id=collection.id,
            config=target,
            expected_generation=collection.generation,
            request_id=request_id(args),
            thresholds=thresholds,
        ),
    ).operation
    if not out.as_json:
        out.print(f"from: {config_text(collection.config)}")
        out.print(f"to:   {config_text(target)}")
    return started(api, out, args, operation)
