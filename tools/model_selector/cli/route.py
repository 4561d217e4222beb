"""Route one query and print the routing headers: `model-selector route`."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("route", help="route one query; prints the x-vsr-* headers")
    p.add_argument("query")
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    p.add_argument("--json", action="store_true", help="print the headers as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.serve.client import route

    headers = route(args.query, args.url)
    if args.json:
        print(json.dumps(headers, indent=1))
    else:
        for key, value in headers.items():
            print(f"{key}: {value}")
    return 0
