"""plan(): the solver grid and the labels of every interval, which say where the model is called."""
import pytest
import torch

from evodiff_core import VARIANTS, improved, sample_evodiff
from evodiff_core.schedule import plan

LISTS = {
    "one sigma": [5.0],
    "to zero": [5.0, 0.0],
    "N = 1": [8.0, 2.0, 0.0],
    "N = 2, no 0": [8.0, 2.0, 0.5],
    "N = 3": [14.6, 3.0, 0.5, 0.03, 0.0],
    "duplicates": [14.6, 5.0, 5.0, 1.0, 1.0, 0.3, 0.3, 0.03, 0.0],
    "trailing zeros": [14.6, 5.0, 1.0, 0.3, 0.03, 0.0, 0.0],
    "split": [14.6, 8.0, 5.0, 3.0, 2.0],
}


def model_calls(p) -> int:
    """Calls at an interval's start, plus one probe call per order-2 step."""
    return sum(iv.calls_model for iv in p.intervals) + sum(iv.kind == "order2" for iv in p.intervals)


@pytest.mark.parametrize("name", LISTS)
def test_the_labels_account_for_every_model_call(name):
    p = plan(LISTS[name])
    assert model_calls(p) == p.nfe
    for iv in p.intervals:
        # only D_0, D_1 and the final denoise are taken at the state itself
        assert iv.calls_model == (iv.kind == "to_zero" or (iv.kind != "skip" and iv.start <= 1))
        if iv.kind not in ("skip", "to_zero"):
            assert iv.end == iv.start + 1 and p.grid[iv.start] == LISTS[name][iv.k]


@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_sampler_calls_the_model_where_the_plan_says(name, variant):
    sigmas = torch.tensor(LISTS[name], dtype=torch.float64)
    calls = []
    model = lambda x, sigma, **kw: calls.append(sigma[0].item()) or x / (1 + sigma[0] ** 2)  # noqa: E731
    sample_evodiff(model, torch.ones((1, 2, 4, 4), dtype=torch.float64) * sigmas[0], sigmas, disable=True,
                   variant=variant)
    p = plan(LISTS[name])
    steps = {"improved": improved.Steps, "reference": None}[variant]
    if steps is not None:
        p = steps(p, 0.5, "ve").plan
    assert len(calls) == model_calls(p) == p.nfe


def test_a_probe_ending_moves_the_final_call_into_the_last_step():
    """(V10): the last solver step becomes an order-2 step whose probe takes the final call, so
    σ_N → 0 makes none; the number of calls is unchanged."""
    p = plan([14.6, 3.0, 0.5, 0.03, 0.0])
    steps = improved.Steps(p, 0.5, "ve")
    assert steps.probe_ending
    relabelled = steps.plan
    assert [iv.kind for iv in p.intervals] == ["warmup", "order2", "final", "to_zero"]
    assert [iv.kind for iv in relabelled.intervals] == ["warmup", "order2", "order2", "to_zero"]
    assert [iv.calls_model for iv in relabelled.intervals] == [True, True, False, False]
    assert model_calls(relabelled) == model_calls(p) == p.nfe
