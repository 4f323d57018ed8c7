"""Triton python backend model: the tokenizer step of the ``all_minilm_l6_v2`` ensemble.

Turns each request into ``IDS`` for ``all_minilm_l6_v2_onnx``: the word pieces of
its ``TEXT`` rows without special tokens (the graph adds them and truncates), or
its ``INPUT_IDS`` as given, after the checks the CPU model makes (padding only at
the end, ids inside the vocabulary), so a bad request is refused with a reason
here rather than failing the GPU batch it would join. Either way the rows leave
right-padded with ``ID_PADDING`` (``embedder.adapters.model_inputs``).

``tokenizer.json`` beside this file is written by ``python -m embedder.onnx_export``
from the same weights as the graph; only the ``tokenizers`` package is needed.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from embedder.adapters.model_inputs import INPUT_IDS, pack_id_rows, unpack_id_rows


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version = Path(args["model_repository"]) / str(args["model_version"])
        path = version / (params.get("tokenizer_file") or "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(path))
        # tokenizer.json ships with truncation and padding on (MiniLM's: 128): the
        # graph truncates after counting TOKENS, so both go.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.vocabulary = self.tokenizer.get_vocab_size()
        pb_utils.Logger.log_info(f"all_minilm_l6_v2 tokenizer from {path}")

    def _ids(self, request: "pb_utils.InferenceRequest") -> np.ndarray:
        text = pb_utils.get_input_tensor_by_name(request, "TEXT")
        ids = pb_utils.get_input_tensor_by_name(request, INPUT_IDS)
        if (text is None) == (ids is None):
            raise ValueError(f"send TEXT or {INPUT_IDS}, one of the two")
        if ids is not None:
            rows = unpack_id_rows(ids.as_numpy())
            for row in rows:
                if row.max() >= self.vocabulary:
                    raise ValueError(f"{INPUT_IDS} outside the vocabulary [0, {self.vocabulary})")
            return ids.as_numpy().astype(np.int64, copy=False)
        texts = [
            v.decode("utf-8") if isinstance(v, bytes) else str(v)
            for v in text.as_numpy().reshape(-1)
        ]
        encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return pack_id_rows([e.ids for e in encoded])

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                tensor = pb_utils.Tensor("IDS", self._ids(request))
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            except Exception as exc:
                # Older stubs have no error codes: INTERNAL then.
                code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
                error = pb_utils.TritonError(str(exc), *(() if code is None else (code,)))
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses
