"""Where the checkout's own files are (the chart, the examples, the Dockerfiles): the tests run from a checkout."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
