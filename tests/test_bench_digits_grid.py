"""The digit grid (bench.digits_grid): the real learned model through real KSAMPLER runs."""
import pytest
import torch

from bench import digits_grid, learned
from bench.metrics import rms_error

pytestmark = [pytest.mark.comfy,
              pytest.mark.skipif(not learned.CONDITIONAL_FILE.is_file(), reason="conditional digits weights missing")]


@pytest.fixture(scope="module")
def grid():
    return digits_grid.samples(samplers=("evodiff", "euler"), nfes=(8,), ode_steps=60)


def test_every_row_starts_from_the_same_noise_and_is_deterministic(grid):
    assert set(grid) == {"converged", ("evodiff", 8), ("euler", 8)}
    assert all(x.shape == (10, 1, 8, 8) and torch.isfinite(x).all() for x in grid.values())
    again = digits_grid.samples(samplers=("euler",), nfes=(8,), ode_steps=60)
    assert torch.equal(again["converged"], grid["converged"]) and torch.equal(again[("euler", 8)], grid[("euler", 8)])
    # same noise: 8 steps land near the converged digits (the ink is +-1), a second-order sampler nearer
    assert rms_error(grid[("evodiff", 8)], grid["converged"]) < rms_error(grid[("euler", 8)], grid["converged"]) < 0.3


def test_the_picture_is_github_width_with_one_row_per_sampler(grid, tmp_path):
    from PIL import Image

    path = tmp_path / "digits.png"
    digits_grid.draw(grid, path, samplers=("evodiff", "euler"), nfes=(8,))
    with Image.open(path) as image:
        assert image.size == (1200, round(150 * (0.62 * 3 + 0.7)))
