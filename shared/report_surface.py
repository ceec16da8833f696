"""Rotatable 3D loss surfaces in the report (Li et al. 2018, Fig. 1/5: what readers expect).

A module whose step writes ``tables/surfaces.csv`` (columns ``alpha``, ``beta``, ``loss`` and
``net``: one 2D section per net) gets one ``<canvas>`` per net in its report section: a
wireframe of min(loss, z-clip) over the (α, β) grid, coloured by height, rotated by dragging.
No library and no network access: the grid goes into the page as JSON and a few lines of
plain JavaScript project and draw it, so the report stays one self-contained file. All nets
share one z-clip (the smallest of the nets' 95th percentiles and 10) and one z-scale, so
their heights compare as the static figures do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

ZCLIP_MAX = 10.0  # Li et al. clip their 3D plots at 10 (plot_surface.py's default vmax)

_SCRIPT = """
<script>
(function () {
  function draw(cv, s, yaw, pitch) {
    var g = cv.getContext('2d'), w = cv.width, h = cv.height, n = s.a.length, m = s.b.length;
    g.clearRect(0, 0, w, h);
    var cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
    function proj(i, j) {
      var x = 2 * i / (n - 1) - 1, y = 2 * j / (m - 1) - 1, z = 2 * s.z[j][i] / s.zmax - 1;
      var xr = cy * x - sy * y, yr = sy * x + cy * y;
      return [w / 2 + 0.3 * w * xr, h / 2 - 0.26 * h * (cp * z - sp * yr)];
    }
    g.lineWidth = 1;
    for (var j = 0; j < m; j++) for (var i = 0; i < n; i++) {
      var p = proj(i, j), t = s.z[j][i] / s.zmax;
      g.strokeStyle = 'hsl(' + Math.round(240 - 240 * t) + ',70%,45%)';
      if (i + 1 < n) { var q = proj(i + 1, j); g.beginPath(); g.moveTo(p[0], p[1]); g.lineTo(q[0], q[1]); g.stroke(); }
      if (j + 1 < m) { var r = proj(i, j + 1); g.beginPath(); g.moveTo(p[0], p[1]); g.lineTo(r[0], r[1]); g.stroke(); }
    }
  }
  document.querySelectorAll('canvas.surface3d').forEach(function (cv) {
    var s = JSON.parse(cv.dataset.surface), yaw = 0.7, pitch = 0.5, down = null;
    draw(cv, s, yaw, pitch);
    cv.addEventListener('mousedown', function (e) { down = [e.clientX, e.clientY, yaw, pitch]; });
    window.addEventListener('mouseup', function () { down = null; });
    cv.addEventListener('mousemove', function (e) {
      if (!down) return;
      yaw = down[2] + (e.clientX - down[0]) / 100;
      pitch = Math.max(-1.5, Math.min(1.5, down[3] + (e.clientY - down[1]) / 100));
      draw(cv, s, yaw, pitch);
    });
  });
})();
</script>
"""


def surface_grids(table_path: Path) -> tuple[dict[str, dict[str, list]], float]:
    """{net: {"a": α values, "b": β values, "z": clipped loss rows (β-major)}} and the z-clip."""
    table = pd.read_csv(table_path)
    finite = table["loss"].to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    zclip = float(min(ZCLIP_MAX, *(np.percentile(g["loss"], 95) for _, g in table.groupby("net")))) \
        if finite.size else ZCLIP_MAX
    grids = {}
    for net, g in table.groupby("net", sort=False):
        alphas, betas = sorted(g["alpha"].unique()), sorted(g["beta"].unique())
        z = g.pivot_table(index="beta", columns="alpha", values="loss").reindex(index=betas, columns=alphas)
        z = np.clip(np.nan_to_num(z.to_numpy(dtype=float), nan=zclip, posinf=zclip), 0.0, zclip)
        grids[str(net)] = {"a": [float(v) for v in alphas], "b": [float(v) for v in betas],
                           "z": np.round(z, 5).tolist(), "zmax": zclip}
    return grids, zclip


def interactive_surfaces(outdir: Path) -> list[str]:
    """The report's HTML for ``outdir/tables/surfaces.csv`` (nothing when a module has none)."""
    path = outdir / "tables" / "surfaces.csv"
    if not path.exists():
        return []
    grids, zclip = surface_grids(path)
    if not grids:
        return []
    canvases = "".join(
        f"<figure style='display:inline-block'><canvas class='surface3d' width='360' height='300' "
        f"data-surface='{json.dumps(grid)}'></canvas><figcaption>{net}</figcaption></figure>"
        for net, grid in grids.items()
    )
    return [
        "<h3>Loss surfaces, rotatable (drag)</h3>"
        f"<p class='small'>min(loss, {zclip:.3g}) over the (α, β) grid of tables/surfaces.csv, one per net, "
        "one height scale for all; blue low, red high.</p>" + canvases + _SCRIPT
    ]
