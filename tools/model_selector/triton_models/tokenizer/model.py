"""Triton python model: query strings -> input_ids, attention_mask.

Each request's rows are padded to one length rounded up to a bucket (parameter `bucket`),
so that requests of similar length reach `text_embedding` with equal shapes and batch.
Padding every request of an execution to one common length batches more, but on CPU the
padding costs more than batching saves (measured: docs/performance.md).
"""

import triton_python_backend_utils as pb_utils

from model_selector.core.parameters import ModelParameters
from model_selector.core.tokenization import TextTokenizer


def decode(value) -> str:
    if isinstance(value, bytes):
        # Invalid UTF-8 is replaced, not refused: the query is still routed.
        return value.decode("utf-8", errors="replace")
    return str(value)


class TritonPythonModel:
    def initialize(self, args):
        params = ModelParameters.from_args(args)
        self.tokenizer = TextTokenizer(params.file("tokenizer_file"), pad_id=params.integer("pad_id"),
                                       bucket=params.integer("bucket"))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                queries = pb_utils.get_input_tensor_by_name(request, "query").as_numpy()
                input_ids, attention_mask = self.tokenizer.encode([decode(q) for q in queries.reshape(-1)])
                responses.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("input_ids", input_ids),
                    pb_utils.Tensor("attention_mask", attention_mask),
                ]))
            except Exception as err:  # one bad request must not fail the others
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"tokenizer: {err}", pb_utils.TritonError.INVALID_ARG)))
        return responses
