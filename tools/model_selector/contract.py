"""The public contract of the `model_selector` ensemble: its name and output tensors.

Kept free of heavy imports: the python models load it inside the serving image.
"""

ENSEMBLE = "model_selector"
SELECTOR_ALGORITHMS = ("knn", "kmeans", "svm")
ENSEMBLE_OUTPUTS = ("selected_model", "decision", "domain", "domain_confidence", "algorithm", "confidence")
STRING_OUTPUTS = ("selected_model", "decision", "domain", "algorithm")
