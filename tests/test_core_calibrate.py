"""evodiff_core.calibrate_schedule: the returned list's invariants over random ranges, its cost,
the guard, and the interrupt through ``progress``. Pure torch, analytic denoisers."""
import math
import random

import pytest
import torch

from evodiff_core import calibrate, calibrate_schedule, sample_evodiff
from evodiff_core.calibrate import CALIBRATED
from tools.analytic import CountingModel, anisotropic_mixture

MIXTURE = anisotropic_mixture(4, (2, 2, 2), seed=3)


def Counting(denoise):
    """The exact denoiser in float64, handed back in the sampler's dtype; its calls counted."""
    return CountingModel(lambda x, sigma: denoise(x.double(), sigma.double()).to(x.dtype))


def noise(batch=8, seed=0):
    return torch.randn((batch, 2, 2, 2), generator=torch.Generator().manual_seed(seed))


def denoiser(noise_schedule):
    return MIXTURE.denoise_flow if noise_schedule == "flow" else MIXTURE.denoise_ve


def random_range(rng, noise_schedule):
    if noise_schedule == "flow":
        return rng.uniform(0.9, 1.0), 10 ** rng.uniform(-3.5, -1.5)
    return 10 ** rng.uniform(0.5, 2.5), 10 ** rng.uniform(-3, -1)


@pytest.mark.parametrize("case", range(6))
def test_the_list_keeps_its_invariants_over_random_ranges(case):
    rng = random.Random(case)
    noise_schedule = "flow" if case % 2 else "ve"
    sigma_max, sigma_min = random_range(rng, noise_schedule)
    steps = rng.randint(3, 9)
    model = Counting(denoiser(noise_schedule))
    sigmas = calibrate_schedule(model, noise(), steps, sigma_max, sigma_min, noise_schedule, max_calls=160)
    values = sigmas.tolist()
    assert len(values) == steps + 1 and values[-1] == 0.0
    assert values[0] == pytest.approx(sigma_max, rel=1e-6)
    assert all(b < a for a, b in zip(values[:-1], values[1:]))          # strictly decreasing
    assert values[-2] >= sigma_min and max(values) <= torch.tensor(sigma_max, dtype=torch.float32).item()
    assert model.calls <= 160
    sampling = Counting(denoiser(noise_schedule))
    x = sample_evodiff(sampling, noise() * sigma_max, sigmas, noise_schedule=noise_schedule)
    assert sampling.calls == steps and torch.isfinite(x).all()


def test_it_beats_the_schedules_it_started_from_and_reports_its_cost():
    model = Counting(denoiser("ve"))
    result = calibrate(model, noise(16), 5, 14.61, 0.0292, "ve")
    assert result.model_calls == model.calls <= 500 and result.teacher_calls < result.model_calls
    fit = {name: errors[0] for name, errors in result.errors.items()}
    assert fit[CALIBRATED] < min(v for name, v in fit.items() if name != CALIBRATED)
    assert result.chosen in result.errors and "model calls" in result.summary()


def test_the_guard_returns_the_best_on_held_out_noise_and_a_stock_one_without_a_polish():
    # without a polish the calibrated schedule is its start, a candidate, and the guard keeps the stock
    # one; with one, it wins here on the held-out half too
    for budget, polished in ((97 + 3 * 4, False), (400, True)):   # teacher + 3 starts (+ a polish)
        result = calibrate(Counting(denoiser("ve")), noise(8), 4, 14.61, 0.0292, "ve", max_calls=budget,
                           candidates={"mine": [14.61, 2.0, 0.5, 0.08, 0.0]})
        held = {name: errors[1] for name, errors in result.errors.items()}
        stock = min((name for name in held if name != CALIBRATED), key=held.get)
        assert result.chosen == (CALIBRATED if held[CALIBRATED] < held[stock] else stock)
        assert (result.chosen == CALIBRATED) == polished, result.errors
        assert result.errors[CALIBRATED][0] <= result.errors["mine"][0]   # the polish starts at the best fit


def test_unusable_candidates_are_skipped_with_the_reason():
    result = calibrate(Counting(denoiser("ve")), noise(4), 4, 10.0, 0.05, "ve", max_calls=120, candidates={
        "short": [10.0, 1.0, 0.0], "rising": [10.0, 1.0, 2.0, 0.1, 0.0], "wide": [20.0, 5.0, 1.0, 0.1, 0.0]})
    assert set(result.skipped) >= {"short", "rising", "wide"}
    assert "outside" in result.skipped["wide"] and "decreasing" in result.skipped["rising"]


def test_progress_sees_every_call_and_can_stop_it():
    seen = []

    class Stop(Exception):
        pass

    def progress(done, total):
        seen.append((done, total))
        if done == 30:
            raise Stop

    model = Counting(denoiser("ve"))
    with pytest.raises(Stop):
        calibrate_schedule(model, noise(), 5, 14.61, 0.0292, progress=progress)
    assert model.calls == 30 and seen == [(k, 500) for k in range(1, 31)]


@pytest.mark.parametrize("arguments, words", [
    (dict(steps=1), "steps"), (dict(sigma_min=0.0), "sigma_min"), (dict(sigma_max=math.inf), "sigma_max"),
    (dict(noise=torch.zeros(3)), "noise"), (dict(max_calls=20), "max_calls"),
])
def test_bad_arguments_are_refused_saying_what_to_change(arguments, words):
    given = dict(noise=noise(2), steps=4, sigma_max=14.61, sigma_min=0.0292)
    given.update(arguments)
    with pytest.raises(ValueError, match=words):
        calibrate(Counting(denoiser("ve")), **given)


def test_a_candidate_equal_to_the_cores_own_list_is_run_once():
    """ComfyUI's 'karras' and 'exponential' are the core's Karras ρ = 7 and log-uniform lists: given
    them, the calibration spends no second run on its own copies."""
    from evodiff_core.calibrate import KARRAS_RHO7, LOG_UNIFORM, _karras, _log_uniform

    steps, sigma_max, sigma_min = 5, 14.6, 0.03
    given = {"karras": torch.tensor(_karras(sigma_max, sigma_min, steps - 1, 7.0) + [0.0], dtype=torch.float32),
             "exponential": torch.tensor(_log_uniform(sigma_max, sigma_min, steps - 1) + [0.0], dtype=torch.float32)}
    noise = torch.randn((2, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = calibrate(lambda x, sigma, **kw: 0.5 * x, noise, steps, sigma_max, sigma_min, candidates=given,
                       max_calls=200)
    assert result.skipped[KARRAS_RHO7] == "the same list as karras"
    assert result.skipped[LOG_UNIFORM] == "the same list as exponential"
    assert set(result.errors) <= {"karras", "exponential", "calibrated"}


def test_the_shift_is_calibrated_on_the_start_schedule_and_returned_with_the_schedule():
    """Step 2b: every offered shift runs the start schedule once; the best on the fit half is the
    one the polish uses and the result reports; without other shifts the given one is kept."""
    model = Counting(denoiser("ve"))
    shifts = (0.0, 0.25, 0.5, 1.0)
    result = calibrate(model, noise(8), 5, 14.61, 0.0292, "ve", shifts=shifts)
    assert sorted(result.shifts) == list(shifts)
    fit_by_shift = {mu: errors[0] for mu, errors in result.shifts.items()}
    tuned = min(fit_by_shift, key=fit_by_shift.get)
    assert result.shift == (tuned if result.chosen == CALIBRATED else 0.5)
    assert result.errors[CALIBRATED][0] <= fit_by_shift[tuned]          # the polish starts from it
    assert f"shift {result.shift:g}" in result.summary()
    alone = calibrate(Counting(denoiser("ve")), noise(8), 5, 14.61, 0.0292, "ve", shift=0.25)
    assert alone.shift == 0.25 and list(alone.shifts) == [0.25]
