"""Serve a new router.yaml or rebuilt selectors without downtime: `model-selector reload`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reload", help="serve a new router.yaml or rebuilt selectors on a running server, no downtime")
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    p.add_argument("--config", type=Path, default=None, help="the router.yaml to serve (validated first)")
    p.add_argument("--selectors", action="store_true",
                   help="serve the repository's rebuilt router_heads graph and selector metadata")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                   help="a gRPC header sent with every call, for a server that restricts model control: "
                        "tritonserver --grpc-restricted-protocol=model-repository:KEY=VALUE expects "
                        "triton-grpc-protocol-KEY=VALUE; repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.serve.lifecycle import reload_config, reload_selectors

    if args.config is None and not args.selectors:
        raise ValueError("nothing to reload: pass --config NEW_ROUTER_YAML and/or --selectors")
    headers = {}
    for header in args.header:
        name, sep, value = header.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"bad --header {header!r}: expected NAME=VALUE, e.g. model-control-key=$KEY")
        headers[name.strip().lower()] = value
    reloaded = []
    if args.selectors:
        reloaded += reload_selectors(args.url, args.repository, headers or None)
    if args.config is not None:
        reloaded.append(reload_config(args.url, args.config, args.repository, headers or None))
    for item in reloaded:
        print(f"{item.model}: now serving version {item.version}")
    return 0
