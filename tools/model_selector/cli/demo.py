"""Build, serve, route the example queries and one chat request: `model-selector demo`."""

from __future__ import annotations

import argparse
import json

from model_selector.cli.options import config_argument, config_path
from model_selector.cli.serve import local_server, serve_arguments

DEMO_QUERIES = [
    "Calculate the derivative of sin(x) * cos(x)",
    "How do I create a for loop in JavaScript?",
    "What must a plaintiff prove to win a negligence lawsuit?",
    "What are the early symptoms of type 2 diabetes and how is it treated?",
    "Explain how a rise in interest rates affects bond prices.",
    "What were the main causes of World War I?",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build if needed, serve, route example queries and one chat request, stop")
    config_argument(p)
    serve_arguments(p)
    p.set_defaults(func=run)


def _print_headers(query: str, headers: dict[str, str]) -> None:
    print(f"query: {query}")
    for key, value in headers.items():
        if key.startswith("x-vsr-"):
            print(f"  {key}: {value}")


def run(args: argparse.Namespace) -> int:
    import httpx

    from model_selector.build.pipeline import BuildOptions, build
    from model_selector.core.config import load_config
    from model_selector.serve.client import RouterClient, routing_headers
    from model_selector.serve.gateway import create_gateway_app, serve_in_thread
    from model_selector.serve.mock_llm import create_mock_app
    from model_selector.serve.server import free_ports

    build(BuildOptions(config=config_path(args), repository=args.repository))
    config = load_config(config_path(args))
    mock_port, gateway_port = free_ports(2)
    # Every model answered by the local mock LLM, so the demo needs no API keys.
    offline = config.model_copy(update={
        "models": [m.model_copy(update={"base_url": None}) for m in config.models],
        "gateway": config.gateway.model_copy(update={"upstream": config.gateway.upstream.model_copy(
            update={"base_url": f"http://127.0.0.1:{mock_port}/v1", "api_key_env": None})})})
    with local_server(args) as server, RouterClient(server.grpc_url) as client:
        for query, selection in zip(DEMO_QUERIES, client.select(DEMO_QUERIES)):
            _print_headers(query, routing_headers(selection))
        with serve_in_thread(create_mock_app(), "127.0.0.1", mock_port), \
                serve_in_thread(create_gateway_app(offline, server.grpc_url), "127.0.0.1", gateway_port) as url:
            request = {"model": "auto", "messages": [{"role": "user", "content": DEMO_QUERIES[0]}]}
            print(f"\nPOST {url}/v1/chat/completions {json.dumps(request)}")
            response = httpx.post(f"{url}/v1/chat/completions", json=request, timeout=60)
            print(f"  status: {response.status_code}")
            for key, value in response.headers.items():
                if key.startswith("x-vsr-"):
                    print(f"  {key}: {value}")
            print(f"  answer: {response.json()['choices'][0]['message']['content']}")
    return 0
