"""One way to write a report: its JSON, the markdown people read beside it, and its figures.

`write_report(path/report.json, ...)` writes `report.json`, `report.md` and every figure into the
same directory; figures come from `figure()`, which draws off-screen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120


def figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure and its axes, drawn without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def write_report(path: Path, report: dict, markdown: str, figures: dict[str, Figure] | None = None) -> None:
    """`path` (JSON), `path` with .md (markdown) and each figure by name in the same directory."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    for name, fig in (figures or {}).items():
        fig.tight_layout()
        fig.savefig(path.parent / name, dpi=DPI)
        plt.close(fig)
