"""What the python-backend models of deploy/triton share: reading each request's
rows (``TEXT``, or the caller's ``INPUT_IDS`` where the model takes them), running
every request the dynamic batcher gathered as one pass, and answering each with
its ``EMBEDDING`` rows and ``TOKENS`` counts.

Imported only inside Triton's python-backend stub (``triton_python_backend_utils``
exists nowhere else). A failed pass is retried request by request, so one bad
request fails alone and the model never crashes.
"""

from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils

from embedder.adapters.model_inputs import INPUT_IDS, unpack_id_rows

# A row to embed: a text the model tokenizes, or token ids without special tokens.
Row = str | np.ndarray
# rows → (float32 vectors (n, dim), int32 token counts before truncation (n,))
EmbedFunction = Callable[[list[Row]], tuple[np.ndarray, np.ndarray]]


def _error(message: str, code_name: str = "INTERNAL") -> "pb_utils.InferenceResponse":
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _rows(request: "pb_utils.InferenceRequest") -> list[Row]:
    """The request's texts, or its id rows; both inputs are optional in a config that
    declares INPUT_IDS, so a request must carry exactly one."""
    text = pb_utils.get_input_tensor_by_name(request, "TEXT")
    ids = pb_utils.get_input_tensor_by_name(request, INPUT_IDS)
    if (text is None) == (ids is None):
        raise ValueError(f"send TEXT or {INPUT_IDS}, one of the two")
    if ids is not None:
        return list(unpack_id_rows(ids.as_numpy()))
    try:
        array = text.as_numpy()
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    except Exception as exc:
        raise ValueError(f"TEXT could not be read: {exc}") from exc


def _response(vectors: np.ndarray, tokens: np.ndarray) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("EMBEDDING", np.ascontiguousarray(vectors, dtype=np.float32)),
            pb_utils.Tensor("TOKENS", np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1, 1)),
        ]
    )


def execute(requests: list, embed: EmbedFunction) -> list:
    responses: list = [None] * len(requests)
    batch: list[tuple[int, list[Row]]] = []  # (position in requests, its rows)
    for position, request in enumerate(requests):
        try:
            batch.append((position, _rows(request)))
        except Exception as exc:
            responses[position] = _error(str(exc), "INVALID_ARG")
    try:
        vectors, tokens = embed([row for _, rows in batch for row in rows])
    except Exception as exc:
        if len(batch) == 1:
            responses[batch[0][0]] = _error(f"embedding failed: {exc!r}")
            batch = []
        vectors = tokens = None
    offset = 0
    for position, rows in batch:
        if vectors is not None and tokens is not None:
            end = offset + len(rows)
            responses[position] = _response(vectors[offset:end], tokens[offset:end])
            offset = end
            continue
        try:
            responses[position] = _response(*embed(rows))
        except Exception as exc:
            responses[position] = _error(f"embedding failed: {exc!r}")
    return responses
