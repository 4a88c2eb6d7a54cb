"""bench.calibration: the calibrated column scripts/bench adds is one more judged sampler of the
matrix, run at the schedule and shift EVODiffCalibrate returns, without touching the other rows."""
import copy

import pytest

from bench import calibration, matrix
from bench.cells import Cell, Settings
from bench.problems import problem

pytestmark = pytest.mark.comfy


def test_the_calibrated_column_is_judged_against_the_same_points_only():
    cell = Cell("mixture", "eps", "karras")
    settings = Settings(nfes=(2, 5), n_samples=32, ode_steps=20)   # 2 is below the node's range
    records = matrix.run([cell], ["euler", "dpmpp_2m", "evodiff"], settings)
    before = copy.deepcopy(records)
    points = calibration.bench_points([cell], settings, records)
    assert records == before                                     # the run's own verdicts are untouched
    [point] = points
    assert point["sampler"] == calibration.CALIBRATED_COLUMN and point["nfe_target"] == point["nfe"] == 5
    assert point["finite"] and point["shift"] in (0.0, 0.25, 0.5, 1.0) and 0 < point["calibration_calls"] <= 500
    assert point["vs_rival"] in ("won", "tie", "lost") and isinstance(point["best_of_all"], bool)
    assert point["diverged"] == (point["fd"] > next(r["fd"] for r in records
                                                    if r["sampler"] == "euler" and r["nfe_target"] == 5))


def test_the_wide_digits_are_the_same_net_on_each_half():
    import torch

    wide, digits = problem("digits-wide"), problem("digits")
    x = torch.randn(3, 1, 8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((3,), 1.5, dtype=torch.float64)
    out = wide.denoiser("eps")(x, sigma)
    for half, part in zip(out.chunk(2, dim=-1), x.chunk(2, dim=-1)):
        torch.testing.assert_close(half, digits.denoiser("eps")(part.contiguous(), sigma))
    assert wide.features(out).shape == (6, digits.features(x[..., :8]).shape[1])
