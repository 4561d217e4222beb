"""model-selector: an LLM model-selection router served as a Triton Inference Server model repository."""

__version__ = "0.1.0"
