# The OpenAI-compatible gateway: stateless, CPU only, one process per pod.
#
#   docker build -f docker/gateway.Dockerfile -t model-selector-gateway .
#   docker run --rm -p 8080:8080 -v $PWD/configs/router.yaml:/etc/model-selector/router.yaml:ro \
#       model-selector-gateway --url dns:///triton-headless:8001
#
# The router configuration (catalog, endpoints) is mounted at /etc/model-selector/router.yaml;
# the upstream API keys arrive as environment variables named by each model's api_key_env.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/gateway-requirements.txt /opt/model-selector/requirements.txt
RUN pip install --no-cache-dir -r /opt/model-selector/requirements.txt

# The package only, without its build-time dependencies (onnxruntime, scikit-learn, ...).
COPY pyproject.toml README.md /opt/model-selector/
COPY tools /opt/model-selector/tools
RUN pip install --no-cache-dir --no-deps /opt/model-selector && rm -rf /opt/model-selector/tools

USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["model-selector", "gateway", "--host", "0.0.0.0", "--port", "8080", \
            "--config", "/etc/model-selector/router.yaml"]
CMD ["--url", "dns:///model-selector-triton-headless:8001"]
