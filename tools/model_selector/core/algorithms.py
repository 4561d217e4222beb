"""The registry of selector algorithms: every place that names, trains, tunes, imports or reports an
algorithm iterates over it or refers to one of its entries.

Kept free of heavy imports: the python models load it inside the serving image.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SelectorAlgorithm:
    name: str  # a decision's `algorithm.type`, `model_selection.<name>`, the `<name>_scores` output
    tuned_setting: str  # the setting `tune` sweeps, a field of `model_selection.<name>`
    grid_field: str  # the field of tune's Grid that lists its values (`tune --grid <name>=...`)
    setting_type: type  # int or float
    reference_artifact: str  # the reference's pretrained file, for `model-selector import`

    @property
    def scores_output(self) -> str:
        return f"{self.name}_scores"


KNN = SelectorAlgorithm("knn", "k", "knn_k", int, "knn_model.json")
KMEANS = SelectorAlgorithm("kmeans", "n_clusters", "kmeans_clusters", int, "kmeans_model.json")
SVM = SelectorAlgorithm("svm", "gamma", "svm_gamma", float, "svm_model.json")
MLP = SelectorAlgorithm("mlp", "alpha", "mlp_alpha", float, "mlp_model.json")
ALGORITHMS: dict[str, SelectorAlgorithm] = {a.name: a for a in (KNN, KMEANS, SVM, MLP)}
SELECTOR_ALGORITHMS: tuple[str, ...] = tuple(ALGORITHMS)
