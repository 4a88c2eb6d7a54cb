"""A few-step sigma schedule learned on the model itself (docs/calibration.md).

    from evodiff_core import calibrate_schedule
    sigmas = calibrate_schedule(model, noise, steps=6, sigma_max=14.61, sigma_min=0.0292)

The method; steps 2 and 3 run the sampler that will use the schedule (``sample_evodiff``
with the given variant and shift, whatever its step rule is):

1. Teacher: an accurate solve of the probability-flow ODE from σ_max·noise (RK4 in log sigma,
   ``teacher_steps`` steps to σ_min, then the final denoise); its endpoint is what a few-step
   run should reach.
2. Start: the best of the candidate schedules (the caller's stock ones, plus a log-uniform and a
   Karras ρ = 7 list made here) by the distance of their few-step result to the teacher's.
2b. Shift: where the caller offers several shifts μ (the exponent of the trust ν = (1 − δ)^μ,
   docs/variants.md (V6)), the start schedule is run at each, and the best on the fit half is the
   shift the polish and the result use. How much a model's path needs the trust gate (guidance
   makes it rough, an unguided model keeps it smooth) is a property of the model and its cfg,
   which the teacher measures.
3. Polish: a compass search on the interior knots u_k = log σ_k (σ_1 … σ_{N−1}, the last nonzero
   sigma included): each knot moves by ±δ_k inside its neighbours; a move is kept when the
   few-step results get closer to the teacher's (the mean per-sample distance); δ_k grows after
   a success and halves after a failure. Every trial is one real sampler run, so the objective is
   exactly the sampler's error.

The noise batch is split: the first half (rounded up) is what the search minimises, the second
half is held out. The guard: the polished schedule is returned only when it also beats every
candidate (at the given shift) on the held-out half; otherwise the best candidate there is
returned, with the given shift. The whole batch
goes through the model in every call (a guided denoiser may tie rows to labels), and every model
call counts against ``max_calls``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .sampler import DEFAULT_SHIFT, VARIANTS, sample_evodiff

log = logging.getLogger(__name__)

CALIBRATED = "calibrated"
LOG_UNIFORM = "log-uniform"
KARRAS_RHO7 = "karras-rho7"
MIN_STEPS, MAX_STEPS = 2, 64
TEACHER_STEPS = 24           # RK4 steps (97 calls): far below a 5–16-step run's error (docs/calibration.md)
DEFAULT_MAX_CALLS = 500      # teacher + candidates + polish, for up to 8 steps; more steps get 60 per step
MIN_LOG_GAP = 1e-3           # knots keep at least this log-sigma distance: never a duplicate sigma
START_STEP = 0.35            # first move of a knot, as a fraction of the log-sigma gap to its neighbours
SMALLEST_STEP = 0.01         # a knot whose move shrank below this (in log sigma) is settled
# the shifts the EVODiffCalibrate node tries (step 2b): off, the paper's 0.5, halfway, and twice it
SHIFTS = (0.0, 0.25, 0.5, 1.0)
FLOAT32_TOLERANCE = 1e-5     # stock lists are float32: sigmas this close (relatively) are the same


@dataclass
class Calibration:
    """What ``calibrate`` found. ``errors``: {schedule name: (fit error, held-out error)}, each the
    mean per-sample RMS distance to the teacher's endpoint relative to the teacher's RMS."""
    sigmas: torch.Tensor
    chosen: str                      # CALIBRATED or the name of the candidate that won the guard
    shift: float                     # the sampler's shift μ the schedule was made for
    model_calls: int
    teacher_calls: int
    errors: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)   # candidate name -> why it was not used
    shifts: dict = field(default_factory=dict)    # shift tried on the start schedule -> (fit, held-out) errors

    def summary(self) -> str:
        fit, held = self.errors[self.chosen]
        best_stock = min((n for n in self.errors if n != CALIBRATED), key=lambda n: self.errors[n][1])
        return (f"EVODiff calibration: returned the {self.chosen} schedule ({len(self.sigmas) - 1} steps, "
                f"shift {self.shift:g}), "
                f"held-out error {held:.4g} vs the best stock one ({best_stock}) {self.errors[best_stock][1]:.4g}; "
                f"{self.model_calls} model calls ({self.teacher_calls} for the teacher)")


def default_max_calls(steps: int) -> int:
    return max(DEFAULT_MAX_CALLS, 60 * steps)


def calibrate_schedule(model, noise, steps, sigma_max, sigma_min, noise_schedule="ve", extra_args=None,
                       variant=VARIANTS[0], shift=DEFAULT_SHIFT, progress=None, **options) -> torch.Tensor:
    """``steps + 1`` sigmas (σ_max first, strictly decreasing, the last nonzero ≥ σ_min, then 0) on
    which ``sample_evodiff`` with this variant and shift makes ``steps`` model calls. ``options``:
    see :func:`calibrate`, which also says what it found and what it cost."""
    result = calibrate(model, noise, steps, sigma_max, sigma_min, noise_schedule, extra_args, variant, shift,
                       progress, **options)
    log.info(result.summary())
    return result.sigmas


class _CountingModel:
    """The model, counting its calls and reporting each to ``progress`` (which may raise to stop)."""

    def __init__(self, model, progress, total):
        self.model, self.progress, self.total, self.calls = model, progress, total, 0

    def __call__(self, x, sigma, **kwargs):
        out = self.model(x, sigma, **kwargs)
        self.calls += 1
        if self.progress is not None:
            self.progress(min(self.calls, self.total), self.total)
        return out


def calibrate(model, noise, steps, sigma_max, sigma_min, noise_schedule="ve", extra_args=None,
              variant=VARIANTS[0], shift=DEFAULT_SHIFT, progress=None, candidates=None, max_calls=None,
              teacher_steps=TEACHER_STEPS, shifts=()) -> Calibration:
    """The schedule and its report. ``model(x, sigma, **extra_args)`` is the (guided) denoiser a
    ComfyUI sampler gets; ``noise`` [B, ...] unit Gaussian (the start is σ_max·noise).
    ``candidates``: {name: sigma list} of stock schedules (``steps + 1`` long, ending in 0, inside
    [σ_min, σ_max]); the others are skipped and listed in ``skipped``. ``progress(done, total)``
    is called after every model call; an exception it raises stops the calibration. ``shifts``:
    other shifts to try (step 2b); the candidates are judged at ``shift``."""
    sigma_max, sigma_min = float(sigma_max), float(sigma_min)
    _check_arguments(noise, steps, sigma_max, sigma_min)
    max_calls = default_max_calls(steps) if max_calls is None else int(max_calls)
    least = 4 * teacher_steps + 1 + steps   # the teacher and one few-step run
    if max_calls < least:
        raise ValueError(f"EVODiff calibration: max_calls={max_calls} is too small for a {teacher_steps}-step "
                         f"teacher and one {steps}-step run; allow at least {least}.")
    counted = _CountingModel(model, progress, max_calls)
    noise = noise.to(torch.float32) if noise.dtype not in (torch.float32, torch.float64) else noise
    x_start = noise * sigma_max
    fit_rows = (noise.shape[0] + 1) // 2
    held_rows = slice(fit_rows, None) if noise.shape[0] > 1 else slice(0, 1)

    def run(sigma_list, mu):
        return sample_evodiff(counted, x_start, torch.tensor(sigma_list, dtype=torch.float64), extra_args,
                              disable=True, shift=mu, variant=variant, noise_schedule=noise_schedule)

    teacher = teacher_solution(counted, x_start, sigma_max, sigma_min, teacher_steps, extra_args or {}).double()
    teacher_calls = counted.calls
    if not torch.isfinite(teacher).all():
        raise FloatingPointError("EVODiff calibration: the model returned NaN/inf on the teacher run; check the "
                                 "model (an fp16 overflow, a too high cfg, a broken LoRA/patch).")
    scale = teacher.pow(2).mean().sqrt().clamp_min(1e-12)

    def errors(sigma_list, mu=shift):
        """(fit, held-out) distance to the teacher; inf where the run breaks."""
        try:
            x = run(sigma_list, mu).double()
        except FloatingPointError:
            return math.inf, math.inf
        if not torch.isfinite(x).all():
            return math.inf, math.inf
        return distance(x[:fit_rows], teacher[:fit_rows], scale), distance(x[held_rows], teacher[held_rows], scale)

    own = {LOG_UNIFORM: _log_uniform(sigma_max, sigma_min, steps - 1) + [0.0],
           KARRAS_RHO7: _karras(sigma_max, sigma_min, steps - 1, 7.0) + [0.0]}
    usable, skipped = _usable_candidates(candidates or {}, steps, sigma_max, sigma_min)
    starts = dict(usable)
    for name, sigma_list in own.items():
        # ComfyUI's 'exponential' and 'karras' are these lists: one run each is enough
        twin = next((other for other, given in starts.items() if _same_sigmas(sigma_list, given)), None)
        if twin is not None:
            skipped[name] = f"the same list as {twin}"
        elif name not in starts:
            starts[name] = sigma_list
    table = {}
    for name, sigma_list in starts.items():
        if counted.calls + steps > max_calls:
            skipped[name] = "over the model-call budget"
            continue
        table[name] = errors(sigma_list)
    start = min(table, key=lambda name: table[name][0])
    by_shift = {shift: table[start]}
    for mu in dict.fromkeys(float(m) for m in shifts):
        if mu not in by_shift and counted.calls + 2 * steps <= max_calls:   # leave room for a polish move
            by_shift[mu] = errors(starts[start], mu)
    tuned = min(by_shift, key=lambda mu: by_shift[mu][0])
    knots, best = _polish([math.log(s) for s in starts[start][1:-1]], math.log(sigma_max), math.log(sigma_min),
                          by_shift[tuned], lambda u: errors(_to_sigmas(u, sigma_max), tuned), steps,
                          lambda: max_calls - counted.calls)
    table[CALIBRATED] = best
    stock = min((n for n in table if n != CALIBRATED), key=lambda n: table[n][1])
    chosen = CALIBRATED if best[1] < table[stock][1] else stock
    sigma_list = _to_sigmas(knots, sigma_max) if chosen == CALIBRATED else starts[chosen]
    if progress is not None:
        progress(max_calls, max_calls)
    return Calibration(sigmas=_as_sigmas_tensor(sigma_list, sigma_max, sigma_min), chosen=chosen,
                       shift=tuned if chosen == CALIBRATED else shift, model_calls=counted.calls,
                       teacher_calls=teacher_calls, errors=table, skipped=skipped,
                       shifts={mu: by_shift[mu] for mu in sorted(by_shift)})


def teacher_solution(model, x, sigma_max, sigma_min, steps, extra_args) -> torch.Tensor:
    """x(0) of the probability-flow ODE from x at σ_max: classic RK4 on dx/du = x − D(x, e^u),
    u = log σ (VE) or log t (flow, where dx/dt = (x − D)/t too), uniform in u down to σ_min, then
    D(x, σ_min). 4 calls a step, independent of the sampler being calibrated."""
    work = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    ones = work.new_ones([x.shape[0]])
    slope = lambda state, u: state - model(state.to(x.dtype), math.exp(u) * ones, **extra_args).to(work.dtype)  # noqa: E731
    u, h = math.log(sigma_max), (math.log(sigma_min) - math.log(sigma_max)) / steps
    for _ in range(steps):
        k1 = slope(work, u)
        k2 = slope(work + 0.5 * h * k1, u + 0.5 * h)
        k3 = slope(work + 0.5 * h * k2, u + 0.5 * h)
        k4 = slope(work + h * k3, u + h)
        work, u = work + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), u + h
    return model(work.to(x.dtype), sigma_min * ones, **extra_args)


def distance(x, teacher, scale) -> float:
    """The mean over samples of each one's RMS distance to the teacher, relative to the teacher's
    RMS. Not the RMS over all: a few-step run cannot follow a sample whose path switches modes,
    and squared errors would let those few samples bend the schedule against all the others."""
    return float((x - teacher).pow(2).flatten(1).mean(1).sqrt().mean() / scale)


def _check_arguments(noise, steps, sigma_max, sigma_min):
    if not isinstance(noise, torch.Tensor) or noise.dim() < 2 or noise.shape[0] < 1:
        raise ValueError("EVODiff calibration: noise must be a tensor [batch, channels, ...] with at least one sample.")
    if not (isinstance(steps, int) and MIN_STEPS <= steps <= MAX_STEPS):
        raise ValueError(f"EVODiff calibration: steps must be an integer in [{MIN_STEPS}, {MAX_STEPS}], got {steps!r}.")
    if not (math.isfinite(sigma_max) and math.isfinite(sigma_min) and 0 < sigma_min < sigma_max):
        raise ValueError(f"EVODiff calibration: need 0 < sigma_min < sigma_max (finite), got sigma_min={sigma_min}, "
                         f"sigma_max={sigma_max}.")


def _log_uniform(sigma_max, sigma_min, n):
    """n + 1 sigmas from σ_max to σ_min, uniform in log sigma (no trailing 0)."""
    a, b = math.log(sigma_max), math.log(sigma_min)
    return [math.exp(a + (b - a) * k / n) for k in range(n + 1)]


def _karras(sigma_max, sigma_min, n, rho):
    """n + 1 sigmas uniform in σ^(1/ρ) (Karras et al. 2022), without the trailing 0."""
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(hi + (lo - hi) * k / n) ** rho for k in range(n + 1)]


def _same_sigmas(a, b) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=FLOAT32_TOLERANCE) for x, y in zip(a, b))


def _to_sigmas(knots, sigma_max):
    return [sigma_max] + [math.exp(u) for u in knots] + [0.0]


def _usable_candidates(candidates, steps, sigma_max, sigma_min):
    """The candidates the sampler can run in ``steps`` calls inside the range; the rest with why."""
    usable, skipped = {}, {}
    tolerance = FLOAT32_TOLERANCE
    for name, sigmas in candidates.items():
        s = [float(v) for v in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
        if len(s) != steps + 1 or s[-1] != 0.0:
            skipped[name] = f"not {steps + 1} sigmas ending in 0"
        elif any(b >= a for a, b in zip(s[:-1], s[1:])):
            skipped[name] = "not strictly decreasing"
        elif s[0] > sigma_max * (1 + tolerance) or s[-2] < sigma_min * (1 - tolerance):
            skipped[name] = "outside the model's sigma range"
        else:
            usable[name] = [sigma_max] + [min(max(v, sigma_min), sigma_max) for v in s[1:-1]] + [0.0]
    return usable, skipped


def _polish(knots, u_max, u_min, start_errors, errors, steps, calls_left):
    """Compass search on the interior log-sigma knots; returns (knots, their (fit, held) errors)."""
    knots, best = list(knots), start_errors
    bounds = lambda k: (knots[k + 1] if k + 1 < len(knots) else u_min, knots[k - 1] if k > 0 else u_max)  # noqa: E731
    moves = [START_STEP * (bounds(k)[1] - bounds(k)[0]) / 2 for k in range(len(knots))]
    while calls_left() >= steps and max(moves, default=0.0) >= SMALLEST_STEP:
        for k in range(len(knots)):
            if moves[k] < SMALLEST_STEP:
                continue
            improved = False
            for direction in (1.0, -1.0):
                if calls_left() < steps:
                    return knots, best
                lo, hi = bounds(k)
                trial_u = min(max(knots[k] + direction * moves[k], lo + MIN_LOG_GAP), hi - MIN_LOG_GAP)
                if lo + MIN_LOG_GAP > hi - MIN_LOG_GAP or abs(trial_u - knots[k]) < 1e-9:
                    continue
                trial = knots[:k] + [trial_u] + knots[k + 1:]
                result = errors(trial)
                if result[0] < best[0]:
                    knots, best, improved = trial, result, True
                    break
            moves[k] *= 1.5 if improved else 0.5
    return knots, best


def _as_sigmas_tensor(sigma_list, sigma_max, sigma_min) -> torch.Tensor:
    """float32, as ComfyUI's SIGMAS are, with σ_max first and the last nonzero one not rounded
    below σ_min (the knots keep MIN_LOG_GAP apart, far above float32's resolution)."""
    out = torch.tensor(sigma_list, dtype=torch.float32)
    bottom = torch.tensor(sigma_min, dtype=torch.float32)
    if float(bottom) < sigma_min:
        bottom = torch.nextafter(bottom, torch.tensor(math.inf))
    out[0] = sigma_max
    out[-2] = torch.maximum(out[-2], bottom)
    return out
