"""``vectorops search``: semantic search, hits as a table (or JSON)."""

from __future__ import annotations

import argparse

from cli.api import Api
from cli.errors import ExitCode
from cli.output import Output, clip, table
from vectorops.indexer.v1 import indexer_pb2
from vectorops.indexer.v1 import search_service_pb2 as api_pb2

SNIPPET_WIDTH = 70


def register(nouns: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    search = nouns.add_parser(
        "search", parents=[common], help="search a collection (or several) by meaning"
    )
    search.add_argument("collection_id")
    search.add_argument("query")
    search.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="COLLECTION_ID",
        help="search these collections too and merge the hits (repeatable)",
    )
    search.add_argument("--top-k", type=int, default=10, help="number of hits (default 10)")
    search.add_argument("--source", action="append", default=[], help="only these sources")
    search.add_argument("--min-score", type=float, help="drop hits scoring below this")
    search.add_argument("--no-text", action="store_true", help="leave the chunk text out")
    search.set_defaults(handler=search_collections)


def search_collections(args: argparse.Namespace, api: Api, out: Output) -> int:
    common = {
        "query": args.query,
        "top_k": args.top_k,
        "with_text": not args.no_text,
        "filter": indexer_pb2.SearchFilter(source_ids=args.source) if args.source else None,
    }
    if args.min_score is not None:
        common["score_threshold"] = args.min_score
    if args.also:
        response = api.call(
            api.search.SearchMulti,
            api_pb2.SearchMultiRequest(collection_ids=[args.collection_id, *args.also], **common),
        )
    else:
        response = api.call(
            api.search.Search, api_pb2.SearchRequest(collection_id=args.collection_id, **common)
        )
    if out.as_json:
        out.json(response)
        return ExitCode.OK
    out.print(hits_table(response.hits, with_collection=bool(args.also)))
    took_ms = response.took.ToTimedelta().total_seconds() * 1000
    footer = f"{len(response.hits)} hits in {took_ms:.0f} ms"
    if not args.also:
        footer += f" ({response.embedding_model}, generation {response.generation})"
    out.print(footer)
    for skipped in getattr(response, "skipped", ()):
        out.note(f"skipped {skipped.collection_id}: {skipped.reason}: {skipped.message}")
    return ExitCode.OK


def hits_table(hits, with_collection: bool = False) -> str:
    headers = ["#", "SCORE", "PATH", "CHUNK", "PAGE"]
    if with_collection:
        headers.append("COLLECTION")
    headers.append("TEXT")
    rows = []
    for rank, hit in enumerate(hits, start=1):
        row = [
            rank,
            f"{hit.score:.3f}",
            hit.path,
            hit.chunk_index,
            hit.page if hit.HasField("page") else "-",
        ]
        if with_collection:
            row.append(hit.collection_id)
        row.append(clip(hit.text, SNIPPET_WIDTH))
        rows.append(row)
    return table(headers, rows)
