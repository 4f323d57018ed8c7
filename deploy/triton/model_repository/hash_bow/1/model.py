"""Triton python backend model: feature-hashed bag of words.

The algorithm is ``embedder.domain.hashing.hash_embed``: the ``services/`` folder
of vectorops must be on the stub's PYTHONPATH (the embedder's TritonHost sets
it; a container image must copy ``services/embedder`` in and set it too). The
dimension is the ``dimension`` parameter and must equal the output's dims.
Requests gathered by the dynamic batcher are embedded together and split back;
a failure becomes a per-request error, never a crash.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from embedder.domain.hashing import hash_embed


def _error(message: str, code_name: str = "INTERNAL") -> "pb_utils.InferenceResponse":
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _texts(request) -> list:
    array = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.dimension = int(params.get("dimension") or 384)
        declared = int(pb_utils.get_output_config_by_name(config, "EMBEDDING")["dims"][-1])
        if declared != self.dimension:
            raise ValueError(
                f"parameter dimension={self.dimension} but EMBEDDING dims are [{declared}]"
            )
        pb_utils.Logger.log_info(f"hash_bow loaded, dimension {self.dimension}")

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        batch: list = []  # (position in requests, its texts)
        for i, request in enumerate(requests):
            try:
                batch.append((i, _texts(request)))
            except Exception as exc:
                responses[i] = _error(f"TEXT could not be read: {exc}", "INVALID_ARG")
        try:
            vectors = hash_embed([t for _, texts in batch for t in texts], self.dimension)
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
                    rows = hash_embed(texts, self.dimension)
                except Exception as exc:
                    responses[i] = _error(f"embedding failed: {exc!r}")
                    continue
            responses[i] = pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("EMBEDDING", np.ascontiguousarray(rows))]
            )
        return responses
