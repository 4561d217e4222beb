"""The `model-selector` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from model_selector.cli import (
    benchmark,
    benchmark_embedding,
    build,
    build_backend,
    config,
    demo,
    download_benchmark,
    evaluate,
    gateway,
    import_selectors,
    mock_llm,
    reload,
    route,
    serve,
    tune,
    watchdog,
)

# In `model-selector --help` order.
SUBCOMMANDS = (build, build_backend, serve, reload, watchdog, import_selectors, config, download_benchmark,
               route, evaluate, tune, benchmark, benchmark_embedding, gateway, mock_llm, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-selector", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # Errors that carry a message for the user: one line, exit status 2, no traceback. Imported here so
    # that `--help` and light subcommands do not pay for gRPC and onnxruntime.
    from model_selector.compat.reference_selectors import ArtifactError
    from model_selector.core.config import ConfigError
    from model_selector.core.layout import BrokenRepository
    from model_selector.data.loaders import DataError
    from model_selector.serve.backend import BackendError
    from model_selector.serve.client import RouterUnavailable
    from model_selector.serve.lifecycle import ReloadError
    from model_selector.serve.server import ServeError

    try:
        return args.func(args)
    except (ConfigError, DataError, ServeError, ReloadError, ArtifactError, RouterUnavailable, BackendError,
            BrokenRepository, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
