"""Serve the repository with a local tritonserver: `model-selector serve`."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

log = logging.getLogger("model_selector")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the repository with a local tritonserver (CPU)")
    serve_arguments(p)
    p.set_defaults(func=run)


def serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--no-watchdog", action="store_true",
                        help="do not reload models whose python stub died (see `model-selector watchdog`)")


def local_server(args: argparse.Namespace):
    from model_selector.serve.server import LocalTritonServer

    return LocalTritonServer(args.repository, args.host, args.grpc_port, args.http_port, args.metrics_port,
                             watchdog=not getattr(args, "no_watchdog", False))


def run(args: argparse.Namespace) -> int:
    server = local_server(args)

    def stop(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.start()
        print(f"model-selector serving {args.repository}: gRPC {args.host}:{args.grpc_port}, "
              f"HTTP {args.host}:{args.http_port}, metrics http://{args.host}:{args.metrics_port}/metrics "
              f"(log: {server.log_file}). Ctrl-C stops.", flush=True)
        server.process.wait()
        log.error("tritonserver exited with code %s; see %s", server.process.returncode, server.log_file)
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
        return 0
    finally:
        server.stop()
