"""Reload models whose python stub died: `model-selector watchdog`."""

from __future__ import annotations

import argparse
import signal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watchdog", help="reload any model whose python stub died (for servers not started by `serve`)")
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between probes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.serve.lifecycle import StubWatchdog

    watchdog = StubWatchdog(args.url, args.interval).start()
    print(f"watching {args.url} every {args.interval} s; Ctrl-C stops.", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        watchdog.stop()
    return 0
