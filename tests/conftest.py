"""Shared fixtures: the default repository built with --holdout (so that what the tests measure was
never trained on) and a real local tritonserver serving it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_selector.build.pipeline import BuildOptions, build
from tests.paths import PROJECT_ROOT

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars of load generators, not wanted in test logs

# Under the ignored build/ directory: the tests never write into the checkout's model_repository/.
REPOSITORY = PROJECT_ROOT / "build" / "test_repository"
CONFIG = PROJECT_ROOT / "configs" / "router.yaml"
TEST_BUILD = BuildOptions(config=CONFIG, repository=REPOSITORY, holdout=True)


@pytest.fixture(scope="session")
def built_repository() -> Path:
    """The default MiniLM repository with the held-out splits kept out; built here when missing or stale."""
    build(TEST_BUILD)
    return REPOSITORY


@pytest.fixture(scope="session")
def server(built_repository):
    from model_selector.serve.server import LocalTritonServer

    with LocalTritonServer.on_free_ports(built_repository) as running:
        yield running


# Fixtures that mean a built repository or a live server: a test that requests one, directly or through
# another fixture, is in the integration tier, as is every slow test. Tests that export a backbone,
# build a wheel or wait on the network are marked `integration` where they are defined.
INTEGRATION_FIXTURES = {"built_repository", "server"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.integration)


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
