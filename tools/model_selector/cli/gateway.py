"""The OpenAI-compatible gateway: `model-selector gateway`."""

from __future__ import annotations

import argparse

from model_selector.cli.options import config_argument, config_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="OpenAI-compatible HTTP gateway: route chat requests to the chosen LLM")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--url", default="localhost:8001",
                   help="Triton gRPC address(es) of the model_selector ensemble: host:port, several separated by "
                        "commas, or dns:///name:port for every record of a name (a headless Service); a routing "
                        "call that fails because a replica went away is retried on another")
    config_argument(p, "router configuration: the model catalog and each model's endpoint")
    p.add_argument("--fallback-to-default-model", action="store_true",
                   help="when Triton cannot route, send requests to default_model instead of answering 503")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from model_selector.core.config import load_config
    from model_selector.serve.client import parse_targets
    from model_selector.serve.gateway import create_gateway_app

    parse_targets(args.url)
    config = load_config(config_path(args))
    if args.fallback_to_default_model:
        config = config.model_copy(update={"gateway": config.gateway.model_copy(
            update={"fallback_to_default_model": True})})
    app = create_gateway_app(config, args.url, str(config_path(args)))
    print(f"model-selector gateway: http://{args.host}:{args.port}/v1 (routing through Triton at {args.url}; "
          f"metrics http://{args.host}:{args.port}/metrics). Ctrl-C stops.", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
