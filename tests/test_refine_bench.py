"""tools/bench_refine.py's ``detaildiag`` section on a real synthetic render (a seed the bench does not use)."""

from __future__ import annotations

import sys
from pathlib import Path

TOOLS = str(Path(__file__).resolve().parents[1] / "tools")


def test_detail_diagnosis_on_a_key_light_render() -> None:
    """One key45 render, fine stage on the true coarse face: the stage-1 light points the right way, the albedo
    map takes almost none of the detail's shading, the image carries the detail, the bench's depth-map truth
    agrees with the renderer's interpolated normals only partly (the ceiling the docs report), and the refined
    detail follows the truth."""
    sys.path.insert(0, TOOLS)
    try:
        import bench_refine
    finally:
        sys.path.remove(TOOLS)
    rows = bench_refine.bench_detail_diag(1, 3, ["key45"])
    assert len(rows) == 1
    r = rows[0]
    assert r["light_cos"] > 0.95
    assert abs(r["albedo_slope_corr"][0]) < 0.1
    assert r["image_corr"] > 0.7
    assert 0.6 < r["truth_dm_vs_interp"] < 0.95
    assert r["detail_vs_interp"] > 0.4
    assert r["detail_vs_dm"] > 0.4
