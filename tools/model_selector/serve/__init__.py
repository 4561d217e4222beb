"""Running the repository: the local tritonserver and its runtime copy, the backend build, reload and
the watchdog, the gRPC client, the OpenAI-compatible gateway and the mock LLM."""
