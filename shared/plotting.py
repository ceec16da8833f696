"""Plotting conventions shared by every module: one seaborn theme, figures saved
atomically, and each figure registered with its caption (the caption states the
setup and the measured numbers, and is what the HTML report prints under it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from shared.io import write_figure  # noqa: E402

VERDICT_COLOURS = {
    "reproduced": "#2e7d32",
    "partially reproduced": "#f9a825",
    "not reproduced": "#c62828",
    "not testable at this scale": "#757575",
}


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams["figure.dpi"] = 110


def save(fig: Any, outdir: str | os.PathLike[str], name: str, title: str, caption: str) -> dict[str, str]:
    """Write ``<outdir>/figures/<name>.png``; return its registry record."""
    path = Path(outdir) / "figures" / f"{name}.png"
    write_figure(path, fig)
    return {"file": str(path.relative_to(outdir)), "title": title, "caption": caption}
