"""The public contract of the `model_selector` ensemble: its name and output tensors.

Kept free of heavy imports: the python models load it inside the serving image.
"""

ENSEMBLE = "model_selector"
ENSEMBLE_OUTPUTS = ("selected_model", "decision", "domain", "domain_confidence", "algorithm", "confidence")
STRING_OUTPUTS = ("selected_model", "decision", "domain", "algorithm")
# router_heads -> decision: each catalog model's expected answer length for the query (KNN
# neighbours' average), which prices the query for the cost trade-off.
EXPECTED_TOKENS = "expected_output_tokens"
