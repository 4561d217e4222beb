"""A local OpenAI-compatible mock LLM: `model-selector mock-llm`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mock-llm", help="a local OpenAI-compatible mock LLM for the demo and tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--api-key", default=None, help="require this bearer token")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from model_selector.serve.mock_llm import create_mock_app

    print(f"mock LLM: http://{args.host}:{args.port}/v1 answers as any model. Ctrl-C stops.", flush=True)
    uvicorn.run(create_mock_app(args.api_key), host=args.host, port=args.port, log_level="warning")
    return 0
