"""Triton python model: domain probabilities + per-model selector scores and expected answer
lengths -> the routing decision.

Reads the router configuration (parameter `router_config`) and the selectors' metadata
(parameter `selectors`: catalog order of the score columns, expected output tokens).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_selector.core.algorithms import ALGORITHMS
from model_selector.core.contract import ENSEMBLE_OUTPUTS, EXPECTED_TOKENS, STRING_OUTPUTS
from model_selector.core.decision_engine import DecisionStep
from model_selector.core.parameters import ModelParameters


class TritonPythonModel:
    def initialize(self, args):
        params = ModelParameters.from_args(args)
        self.engine = DecisionStep.load(params.file("router_config"), params.file("selectors")).engine
        self.routes = pb_utils.MetricFamily(
            name="model_selector_routes_total",
            description="Routed queries by selected model, decision and algorithm",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._counters = {}

    def _count(self, route):
        key = (route.selected_model, route.decision, route.algorithm)
        if key not in self._counters:
            self._counters[key] = self.routes.Metric(
                labels={"model": key[0], "decision": key[1] or "none", "algorithm": key[2]})
        self._counters[key].increment(1)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                probs = pb_utils.get_input_tensor_by_name(request, "domain_probs").as_numpy()
                scores = {a.name: pb_utils.get_input_tensor_by_name(request, a.scores_output).as_numpy()
                          for a in ALGORITHMS.values()}
                tokens = pb_utils.get_input_tensor_by_name(request, EXPECTED_TOKENS).as_numpy()
                routes = [self.engine.route(probs[i], {a: s[i] for a, s in scores.items()},
                                            expected_output_tokens=tokens[i])
                          for i in range(len(probs))]
                for route in routes:
                    self._count(route)
                outputs = []
                for name in ENSEMBLE_OUTPUTS:
                    values = [getattr(route, name) for route in routes]
                    if name in STRING_OUTPUTS:
                        array = np.array([v.encode("utf-8") for v in values], dtype=np.object_)
                    else:
                        array = np.array(values, dtype=np.float32)
                    outputs.append(pb_utils.Tensor(name, array.reshape(-1, 1)))
                responses.append(pb_utils.InferenceResponse(outputs))
            except Exception as err:  # one bad request must not fail the others
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"decision: {err}", pb_utils.TritonError.INTERNAL)))
        return responses
