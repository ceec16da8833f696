"""The report's rotatable loss surfaces: the grid that goes into the page is the table's, clipped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from shared.report_surface import ZCLIP_MAX, interactive_surfaces, surface_grids


def _write(tmp_path: Path) -> Path:
    a = np.linspace(-1, 1, 5)
    rows = []
    for net, scale in (("flat", 1.0), ("steep", 40.0)):
        for beta in a:
            for alpha in a:
                rows.append({"alpha": alpha, "beta": beta, "loss": scale * (alpha**2 + 2 * beta**2), "net": net})
    (tmp_path / "tables").mkdir()
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(tmp_path / "tables" / "surfaces.csv", index=False)
    return tmp_path


def test_grid_is_the_table_beta_major_and_clipped_once_for_all_nets(tmp_path: Path) -> None:
    grids, zclip = surface_grids(_write(tmp_path) / "tables" / "surfaces.csv")
    a = np.linspace(-1, 1, 5)
    exact = a[None, :] ** 2 + 2 * a[:, None] ** 2  # rows: beta, columns: alpha
    assert zclip == min(ZCLIP_MAX, np.percentile(exact, 95))  # the flat net's 95th percentile
    np.testing.assert_allclose(grids["flat"]["z"], np.minimum(exact, zclip), atol=1e-5)
    np.testing.assert_allclose(grids["steep"]["z"], np.minimum(40 * exact, zclip), atol=1e-5)
    assert grids["flat"]["a"] == list(a) and grids["steep"]["zmax"] == zclip


def test_report_html_has_one_canvas_per_net_and_nothing_without_a_table(tmp_path: Path) -> None:
    html = "".join(interactive_surfaces(_write(tmp_path / "m") if (tmp_path / "m").mkdir() is None else tmp_path))
    canvases = re.findall(r"data-surface='([^']*)'", html)
    assert len(canvases) == 2 and "<script>" in html
    assert json.loads(canvases[0])["z"][2][2] == 0.0  # the centre of the grid
    (tmp_path / "empty").mkdir()
    assert interactive_surfaces(tmp_path / "empty") == []
