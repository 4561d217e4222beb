"""Shared fixtures: the default repository built with --holdout (so that what the tests measure was
never trained on) and a real local tritonserver serving it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_selector.build import BuildOptions, build
from model_selector.data import PROJECT_ROOT

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars of load generators, not wanted in test logs

# Under the ignored build/ directory: the tests never write into the checkout's model_repository/.
REPOSITORY = PROJECT_ROOT / "build" / "test_repository"
CONFIG = PROJECT_ROOT / "configs" / "router.yaml"


@pytest.fixture(scope="session")
def built_repository() -> Path:
    """The default MiniLM repository with the held-out splits kept out; built here when missing or stale."""
    build(BuildOptions(config=CONFIG, repository=REPOSITORY, holdout=True))
    return REPOSITORY


@pytest.fixture(scope="session")
def server(built_repository):
    from model_selector.serve import LocalTritonServer

    with LocalTritonServer.on_free_ports(built_repository) as running:
        yield running


_MEASUREMENTS: list[str] = []


@pytest.fixture
def measurements() -> list[str]:
    """Figures a test measured (requests, failures, latencies, memory); printed after the run."""
    return _MEASUREMENTS


def pytest_terminal_summary(terminalreporter) -> None:
    if _MEASUREMENTS:
        terminalreporter.section("measured by the tests")
        for line in _MEASUREMENTS:
            terminalreporter.write_line(line)
