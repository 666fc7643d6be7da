"""``skyphot demo``: the tutorial's workflow over the API, on the embedded server it starts.

The simulated calexp has a known PSF (FWHM 0.75″ at the centre), so the printed numbers are
checked against truth, not only for being there.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.cli import main
from app.commands.embedded import free_port

FIGURES = (
    "01_calexp.png", "02_background.png", "03_calexp_with_background.png", "04_psf.png",
    "05_sources_4sigma.png", "05_sources_10sigma.png", "06_parent_and_children.png",
    "07_heavy_footprint.png", "08_mask_planes.png", "09_forced_vs_detection.png",
    "10_forced_positions.png", "11_forced_flux_histograms.png", "12_snr_histogram.png",
)


def run_demo(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["demo", *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    output = tmp_path_factory.mktemp("demo")
    code, out, err = run_demo("--output", str(output), "--size", "1024", "--seed", "3")
    assert code == 0, err
    return json.loads((output / "summary.json").read_text()), out, output


def test_demo_writes_every_figure_as_a_png(demo):
    summary, out, output = demo
    assert summary["figures"] == list(FIGURES)
    for name in FIGURES:
        with Image.open(output / name) as image:
            assert image.format == "PNG"
            assert min(image.size) >= 40, name
    assert f"{len(FIGURES)} figures in {output}/" in out


def test_demo_reports_the_tutorial_numbers_against_truth(demo):
    summary, out, _ = demo
    at4, at10 = summary["detections"]["4"], summary["detections"]["10"]
    assert at4["n_peaks"] > 1.5 * at10["n_peaks"] > 0
    assert at4["n_sources"] == at4["n_peaks"] + at4["n_parents"] >= at4["n_children"]
    assert abs(summary["psf"]["fwhm_arcsec"] / 0.75 - 1) < 0.03
    assert f"PSF FWHM = {summary['psf']['fwhm_arcsec']:.2f} arcsec" in out
    assert 32 in summary["footprint"]["mask_values"]
    assert set(summary["footprint"]["mask_values"]) <= {32, 48}
    assert len(summary["deblended_parent"]["children"]) >= 2
    forced = summary["forced"]
    assert forced["n_faint"] == 32 and forced["n_random"] == 32
    # the same position on the same calexp: forced PSF flux is the detection's PSF flux
    assert abs(forced["median_forced_over_detection"] - 1) < 0.05
    # 32 blank-sky positions: F/σ centred on zero with unit scatter (3σ bounds for N = 32)
    assert abs(forced["random_snr_mean"]) < 0.55
    assert 0.6 < forced["random_snr_std"] < 1.45


def test_demo_says_when_the_server_cannot_be_reached(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_demo("--url", url, "--output", str(tmp_path), "--size", "256")
    assert code == 1
    assert f"cannot reach the server at {url}" in err
