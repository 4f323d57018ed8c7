"""What the python-backend models of deploy/triton share: reading the ``TEXT`` input,
running every request the dynamic batcher gathered as one pass, and answering each
with its ``EMBEDDING`` rows and ``TOKENS`` counts.

Imported only inside Triton's python-backend stub (``triton_python_backend_utils``
exists nowhere else). A failed pass is retried request by request, so one bad
request fails alone and the model never crashes.
"""

from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils

# texts → (float32 vectors (n, dim), int32 token counts before truncation (n,))
EmbedFunction = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


def _error(message: str, code_name: str = "INTERNAL") -> "pb_utils.InferenceResponse":
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _texts(request: "pb_utils.InferenceRequest") -> list[str]:
    array = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


def _response(vectors: np.ndarray, tokens: np.ndarray) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("EMBEDDING", np.ascontiguousarray(vectors, dtype=np.float32)),
            pb_utils.Tensor("TOKENS", np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1, 1)),
        ]
    )


def execute(requests: list, embed: EmbedFunction) -> list:
    responses: list = [None] * len(requests)
    batch: list[tuple[int, list[str]]] = []  # (position in requests, its texts)
    for position, request in enumerate(requests):
        try:
            batch.append((position, _texts(request)))
        except Exception as exc:
            responses[position] = _error(f"TEXT could not be read: {exc}", "INVALID_ARG")
    try:
        vectors, tokens = embed([text for _, texts in batch for text in texts])
    except Exception as exc:
        if len(batch) == 1:
            responses[batch[0][0]] = _error(f"embedding failed: {exc!r}")
            batch = []
        vectors = tokens = None
    offset = 0
    for position, texts in batch:
        if vectors is not None and tokens is not None:
            end = offset + len(texts)
            responses[position] = _response(vectors[offset:end], tokens[offset:end])
            offset = end
            continue
        try:
            responses[position] = _response(*embed(texts))
        except Exception as exc:
            responses[position] = _error(f"embedding failed: {exc!r}")
    return responses
