"""vLLM Semantic Router compatibility: importing its pretrained selectors."""
