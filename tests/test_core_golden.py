"""The reference variant reproduces the official implementation's golden vectors (docs/algorithm.md §10)."""
import pytest
import torch

import golden
from evodiff_core import sample_evodiff
from evodiff_core.reference import final_step_reference

CASES = [c["name"] for c in golden.cases()]
SPLIT_CASES = [c["name"] for c in golden.cases() if not c["ends_with_zero"]]
TOL = dict(atol=1e-9, rtol=1e-9)


def run(name, dtype=torch.float64):
    c = golden.case(name)
    model = golden.RecordingModel(golden.denoiser(c))
    seen = []
    out = sample_evodiff(model, golden.tensor(name, "x_init").to(dtype), golden.tensor(name, "sigmas").to(dtype),
                         callback=seen.append, disable=True, variant="reference")
    return c, model, seen, out


@pytest.mark.parametrize("name", CASES)
def test_golden_float64(name):
    c, model, seen, out = run(name)
    traj = golden.tensor(name, "traj")
    # Every model call: count, input and sigma.
    assert len(model.calls_x) == c["expected_nfe"]
    for k, (x, sigma) in enumerate(zip(model.calls_x, model.calls_sigma)):
        torch.testing.assert_close(x, golden.tensor(name, "calls_x")[k], **TOL)
        torch.testing.assert_close(sigma, golden.tensor(name, "calls_sigma")[k].expand_as(sigma), **TOL)
    # The trajectory through the callback: one call per interval, x at sigmas[i].
    assert [d["i"] for d in seen] == list(range(len(c["sigmas"]) - 1))
    for d in seen:
        torch.testing.assert_close(d["x"], traj[d["i"]], **TOL)
        assert d["sigma"].item() == c["sigmas"][d["i"]]
    if c["ends_with_zero"]:
        torch.testing.assert_close(out, golden.tensor(name, "x_out"), **TOL)


@pytest.mark.parametrize("name", SPLIT_CASES)
def test_golden_split_keeps_reference_formula_but_hands_off_consistently(name):
    """Lists without a trailing 0 end with the hand-off step instead of (F5) on purpose; the
    state before it is the reference's, and (F5) applied to it gives the golden output."""
    c, model, seen, out = run(name)
    traj = golden.tensor(name, "traj")
    sigmas = c["sigmas"]
    x_prev = seen[-1]["x"].flatten(2)
    m0, m1 = (golden.tensor(name, "calls_denoised")[k].flatten(2) for k in (-1, -2))
    reference_out = final_step_reference(x_prev, m0, m1, sigmas[-2], sigmas[-1]).view_as(out)
    torch.testing.assert_close(reference_out, golden.tensor(name, "x_out"), **TOL)
    # The reference's rescale shrinks the state (docs/algorithm.md §8); the hand-off keeps its scale.
    assert out.std() > 2 * golden.tensor(name, "x_out").std()
    assert abs(out.std() / traj[-2].std() - 1) < 0.1


@pytest.mark.parametrize("name", CASES)
def test_golden_float32_within_2e5(name):
    """Float32 arithmetic (model evaluated accurately, returned in float32) stays within 2e-5
    of the float64 reference, relative to the output's largest value."""
    c, _, seen, out = run(name, torch.float32)
    assert out.dtype == torch.float32
    expected = golden.tensor(name, "x_out") if c["ends_with_zero"] else run(name)[3]
    rel = (out.double() - expected).abs().max() / expected.abs().max()
    assert rel < 2e-5
