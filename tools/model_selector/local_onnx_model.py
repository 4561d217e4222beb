"""Local-mode host for an ONNX model: a Triton python model that runs `model.onnx` with onnxruntime.

`model-selector serve` uses it in its runtime copy of the repository because the
tritonserver binary of the nvidia-pytriton wheel has no onnxruntime backend. Names,
dtypes, shapes and batching stay those of the model's production `config.pbtxt`.
"""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        # The onnxruntime backend's own parameter; the small graphs set 1 thread.
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        threads = int(parameters.get("intra_op_thread_count", os.environ.get("MODEL_SELECTOR_ORT_THREADS", "0")))
        if threads:
            options.intra_op_num_threads = threads
        # Several sessions share the CPU cores here: idle thread pools must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.model_path = version_dir / "model.onnx"
        self.session = ort.InferenceSession(str(self.model_path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.outputs = [
            (tensor["name"], pb_utils.triton_string_to_numpy(tensor["data_type"])) for tensor in config["output"]
        ]

    def execute(self, requests):
        responses = [None] * len(requests)
        # Requests whose inputs have equal shapes run as one onnxruntime batch.
        groups = {}
        for index, request in enumerate(requests):
            arrays = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names]
            groups.setdefault(tuple(a.shape[1:] for a in arrays), []).append((index, arrays))
        for members in groups.values():
            try:
                feed = {name: np.concatenate([arrays[i] for _, arrays in members])
                        for i, name in enumerate(self.input_names)}
                results = self.session.run([name for name, _ in self.outputs], feed)
                start = 0
                for index, arrays in members:
                    rows = len(arrays[0])
                    responses[index] = pb_utils.InferenceResponse([
                        pb_utils.Tensor(name, result[start:start + rows].astype(dtype))
                        for (name, dtype), result in zip(self.outputs, results)
                    ])
                    start += rows
            except Exception as err:
                for index, _ in members:
                    responses[index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{self.model_path}: {err}"))
        return responses
