"""Randomised property-based tests (hypothesis) of ``sample_evodiff``.

Strategies: latent shapes (rank 2-5, batch 1-3, channels 1-4, small spatial sizes), latent
dtypes, every scheduler of the running ComfyUI (``comfy.samplers.SCHEDULER_NAMES``) for SD1.5 EPS
and SD3 flow model sampling (``bench.comfy_samplers`` families "eps" and "flow", the flow lists
sampled with ``noise_schedule="flow"``), split schedules (a prefix ``sigmas[:k+1]`` without the
trailing 0 and the suffix ``sigmas[k:]``), near-duplicate sigmas (σ·(1 − ε) inserted after σ),
and a CFG-like linear Gaussian problem whose exact probability-flow ODE solution is cheap.

Every test is derandomised (fixed examples, no example database), so CI sees the same cases on
every run of the same code. The measurements behind the bounds are quoted in each docstring;
they come from wider random runs of these same strategies (and the bounds hold on those).
"""
from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, assume, event, given, note, settings
from hypothesis import strategies as st

from bench.metrics import rms_error
from evodiff_core import VARIANTS, reference, sample_evodiff
from evodiff_core.schedule import plan
from tools.analytic import GaussianMixture, one_sample_at_a_time, probability_flow_ode_flow, probability_flow_ode_ve

pytestmark = pytest.mark.comfy   # every strategy draws real ComfyUI sigma lists
# Hypothesis caches the constants it finds in local modules under its storage directory
# (./.hypothesis by default, i.e. tests/.hypothesis): keep that out of the working tree.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "evodiff-hypothesis"))

FAMILIES = ("eps", "flow")       # SD1.5 EPS (VE sigmas) and SD3 flow (CONST, shift 3)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
F64 = torch.float64
ZERO = torch.zeros((), dtype=F64)   # rms_error(x, ZERO) is the RMS of x itself


def derandomized(max_examples: int, **kw):
    """Fixed examples, no example database. (Hypothesis also mixes in constants it finds in the
    source of local modules, so an edit to evodiff_core/, tools/ or bench/ may change them.)"""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    print_blob=False, suppress_health_check=[HealthCheck.too_slow], **kw)


# ---------------------------------------------------------------- ComfyUI sigma lists

@pytest.fixture(scope="module", autouse=True)
def comfy_schedules():
    """Boot ComfyUI's model sampling once, before hypothesis times the first draw."""
    names = scheduler_names()
    comfy_sigmas("eps", names[0], 2)
    return names


@lru_cache(maxsize=1)
def scheduler_names() -> tuple[str, ...]:
    from bench.comfy_samplers import comfyui

    return tuple(comfyui().samplers.SCHEDULER_NAMES)


@lru_cache(maxsize=None)
def comfy_sigmas(family: str, scheduler: str, steps: int) -> tuple[float, ...]:
    """The list KSampler makes for ``steps`` steps (float32 values, as ComfyUI hands them)."""
    from bench.comfy_samplers import sigmas_for

    return tuple(sigmas_for("euler", family, scheduler, steps).tolist())


@dataclass(frozen=True)
class Schedule:
    family: str
    scheduler: str
    steps: int
    part: str                 # "full", "prefix" (sigmas[:k+1], no trailing 0) or "suffix" (sigmas[k:])
    sigmas: tuple[float, ...]
    inserted: tuple[int, float] | None = None   # (index, ε) of a near-duplicate σ·(1 − ε)

    @property
    def noise_schedule(self) -> str:
        return "flow" if self.family == "flow" else "ve"

    def tensor(self, dtype=torch.float32) -> torch.Tensor:
        return torch.tensor(self.sigmas, dtype=dtype)


@st.composite
def schedules(draw, families=FAMILIES, min_steps=2, max_steps=30, parts=("full", "prefix", "suffix"),
              min_intervals=1):
    """A KSampler list, or a split part of it with at least ``min_intervals`` steps (the full
    list where the part would be shorter)."""
    family = draw(st.sampled_from(families))
    scheduler = draw(st.sampled_from(scheduler_names()))
    steps = draw(st.integers(min_steps, max_steps))
    sigmas = comfy_sigmas(family, scheduler, steps)
    part = draw(st.sampled_from(parts))
    last = len(sigmas) - 2            # sigmas[-1] is the 0: a part keeps at least one interval
    if part == "prefix" and last >= min_intervals:     # KSamplerAdvanced's end_at_step, SplitSigmas' high part
        sigmas = sigmas[:draw(st.integers(min_intervals, last)) + 1]
    elif part == "suffix" and last - min_intervals + 1 >= 1:   # ... and the low part, from sigmas[k]
        sigmas = sigmas[draw(st.integers(1, last - min_intervals + 1)):]
    else:
        part = "full"
    return Schedule(family, scheduler, steps, part, tuple(sigmas))


def epsilons(low=1e-7, high=1e-3):
    """ε log-uniform in [low, high]."""
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0 ** e)


def with_near_duplicate(schedule: Schedule, index: int, eps: float) -> Schedule:
    """Insert σ_index·(1 − ε) right after σ_index (sorted, so a smaller gap stays in order)."""
    assert schedule.sigmas[index] > 0
    sigmas = sorted(schedule.sigmas + (schedule.sigmas[index] * (1.0 - eps),), reverse=True)
    return Schedule(schedule.family, schedule.scheduler, schedule.steps, schedule.part, tuple(sigmas),
                    inserted=(index, eps))


@st.composite
def near_duplicates(draw, schedule_strategy, low=1e-7, high=1e-3):
    schedule = draw(schedule_strategy)
    positive = [i for i, s in enumerate(schedule.sigmas) if s > 0]
    return with_near_duplicate(schedule, draw(st.sampled_from(positive)), draw(epsilons(low, high)))


@st.composite
def latent_shapes(draw, min_batch=1, max_batch=3):
    """[B, C, *spatial]: rank 2 (no spatial dim) to 5 (video), small sizes."""
    rank = draw(st.integers(2, 5))
    batch = draw(st.integers(min_batch, max_batch))
    channels = draw(st.integers(1, 4))
    side = {2: 1, 3: 12, 4: 6, 5: 4}[rank]
    return (batch, channels, *(draw(st.integers(1, side)) for _ in range(rank - 2)))


# ---------------------------------------------------------------- analytic problems

def noise(shape, seed, dtype=F64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class LinearCFG:
    """Classifier-free guidance on per-channel Gaussians, exactly: the class-conditional data is
    x0 ~ N(μ_c, v_c), the unconditional N(μ_u, v_u) (per channel), and the model returns
    D = D_u + w·(D_c − D_u), each D the exact posterior mean for x = α·x0 + σ·ε (α = 1 for VE,
    1 − σ for flow). D = a(σ)·x + b(σ) is linear in x, so the probability-flow ODE
    dx/dlog σ = x − D is linear too and its solution an affine map per channel (see ``exact``).
    At w > 1, a(σ) goes negative at mid noise (down to 1 − w): the stiff regime of strong cfg."""

    def __init__(self, mu_c, v_c, mu_u, v_u, w: float, flow: bool):
        self.params = [np.asarray(p, dtype=np.float64) for p in (mu_c, v_c, mu_u, v_u)]
        self.w, self.flow = float(w), flow
        self.channels = len(self.params[0])

    def coefficients(self, sigma, mu_c, v_c, mu_u, v_u):
        """(a, b) of D = a·x + b; works on numpy arrays and torch tensors alike."""
        alpha = 1 - sigma if self.flow else sigma * 0 + 1

        def posterior_mean(mu, v):       # E[x0 | x] = μ + g·(x − α·μ), g = Cov(x0, x)/Var(x)
            g = alpha * v / (alpha * alpha * v + sigma * sigma)
            return g, mu * (1 - g * alpha)

        a_c, b_c = posterior_mean(mu_c, v_c)
        a_u, b_u = posterior_mean(mu_u, v_u)
        return a_u + self.w * (a_c - a_u), b_u + self.w * (b_c - b_u)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x, σ) in float64, σ one value per sample (or a scalar)."""
        view = (1, -1, *([1] * (x.dim() - 2)))
        s = torch.as_tensor(sigma, dtype=F64).reshape(-1, *([1] * (x.dim() - 1)))
        a, b = self.coefficients(s, *(torch.from_numpy(p).reshape(view) for p in self.params))
        return a * x.to(F64) + b

    def model(self, x, sigma, **extra_args):
        """A model in the latent's precision: exact maths, handed back in x's dtype."""
        return self.denoise(x, sigma).to(x.dtype)

    def affine_flow_map(self, sigma_from: float, sigma_to: float, steps_per_unit: int = 128):
        """(A, B) per channel with x(σ_to) = A·x(σ_from) + B: classic RK4 in s = log σ on
        dx/ds = (1 − a)·x − b, uniform in s like tools.analytic's. The ODE is linear, so each RK4
        step is x ↦ M_n·x + N_n with M_n, N_n from a, b at the step's nodes and midpoint, and the
        composition is formed with one cumulative product (exactly the RK4 result, vectorised)."""
        n = max(16, math.ceil(steps_per_unit * abs(math.log(sigma_from / sigma_to))))
        s = np.linspace(math.log(sigma_from), math.log(sigma_to), 2 * n + 1)   # nodes and midpoints
        h = s[2] - s[0]
        a, b = self.coefficients(np.exp(s)[:, None], *(p[None] for p in self.params))
        p, q = 1 - a, -b
        (p0, pm, p1), (q0, qm, q1) = (p[0:-1:2], p[1::2], p[2::2]), (q[0:-1:2], q[1::2], q[2::2])
        c1, d1 = p0, q0                                   # each RK4 stage k = c·x + d
        c2, d2 = pm * (1 + h / 2 * c1), pm * (h / 2) * d1 + qm
        c3, d3 = pm * (1 + h / 2 * c2), pm * (h / 2) * d2 + qm
        c4, d4 = p1 * (1 + h * c3), p1 * h * d3 + q1
        m = 1 + h / 6 * (c1 + 2 * c2 + 2 * c3 + c4)
        n_ = h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
        later = np.cumprod(m[::-1], axis=0)[::-1]         # later[i] = M_i·M_{i+1}·…
        after = np.vstack([later[1:], np.ones((1, self.channels))])
        return later[0], (after * n_).sum(0)

    def exact(self, x: torch.Tensor, sigmas) -> torch.Tensor:
        """The exact ODE solution from sigmas[0] to sigmas[-1] (0 allowed: the integration stops
        at 1e-6 of the smallest positive sigma, where x − D is O(σ) or smaller)."""
        start, end = float(sigmas[0]), float(sigmas[-1])
        if end == 0:
            end = min(s for s in sigmas if s > 0) * 1e-6
        a, b = self.affine_flow_map(start, end)
        view = (1, self.channels, *([1] * (x.dim() - 2)))
        return torch.from_numpy(a).reshape(view) * x.to(F64) + torch.from_numpy(b).reshape(view)

    def start_latent(self, shape, sigma: float, seed: int) -> torch.Tensor:
        """x = α·x0 + σ·ε with x0 from the class-conditional data."""
        view = (1, self.channels, *([1] * (len(shape) - 2)))
        mu_c, v_c = (torch.from_numpy(p).reshape(view) for p in self.params[:2])
        x0 = mu_c + v_c.sqrt() * noise(shape, seed)
        alpha = 1 - sigma if self.flow else 1.0
        return alpha * x0 + sigma * noise(shape, seed + 1)


@st.composite
def cfg_problems(draw, channels: int, flow: bool):
    """A class-conditional pair per channel: the class narrower than the unconditional data
    (v_u = v_c + spread, as the mixture over classes is), cfg w in [1, 8]."""
    floats = lambda lo, hi: st.lists(st.floats(lo, hi), min_size=channels, max_size=channels)
    mu_c, mu_u = draw(floats(-2.0, 2.0)), draw(floats(-1.0, 1.0))
    v_c = [math.exp(v) for v in draw(floats(math.log(0.02), math.log(1.5)))]
    v_u = [v + d for v, d in zip(v_c, draw(floats(0.0, 2.0)))]
    return LinearCFG(mu_c, v_c, mu_u, v_u, draw(st.floats(1.0, 8.0)), flow)


def mixture(event_shape, seed: int, components: int = 3) -> GaussianMixture:
    """A nonlinear analytic model: an anisotropic Gaussian mixture over the whole event, about
    unit scale (per-element means, per-channel variances)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn((components, *event_shape), generator=g, dtype=F64)
    variances = torch.empty((components, event_shape[0]), dtype=F64).uniform_(0.05, 0.5, generator=g)
    weights = torch.softmax(torch.randn(components, generator=g, dtype=F64), 0)
    return GaussianMixture.per_channel(means, variances, weights)


def mixture_model(gm: GaussianMixture, flow: bool):
    """The mixture's exact denoiser in float64, handed back in the latent's dtype."""
    denoise = gm.denoise_flow if flow else gm.denoise_ve
    return lambda x, sigma, **kw: denoise(x.to(F64), sigma.to(F64)).to(x.dtype)


def start_latent(schedule: Schedule, shape, seed: int) -> torch.Tensor:
    """Unit-scale data plus noise at the list's first sigma (x = α·x0 + σ·ε)."""
    s = schedule.sigmas[0]
    alpha = 1 - s if schedule.family == "flow" else 1.0
    return alpha * noise(shape, seed) + s * noise(shape, seed + 1)


def sample(model, x, schedule: Schedule, variant: str, sigma_dtype=torch.float32, **kw):
    return sample_evodiff(model, x, schedule.tensor(sigma_dtype), disable=True, variant=variant,
                          noise_schedule=schedule.noise_schedule, **kw)


# ---------------------------------------------------------------- the exact-solution helper

@derandomized(4)
@given(problem=st.booleans().flatmap(lambda flow: cfg_problems(2, flow)), seed=st.integers(0, 2 ** 16))
def test_affine_flow_map_matches_tools_analytic_rk4(problem, seed):
    """The vectorised affine RK4 equals tools.analytic's RK4 on the same ODE (which integrates
    the latent itself, step by step): the reference solution of the no-garbage test is right.
    (Both are RK4 in log σ at different step counts; they agree to ~1e-9 where converged.)"""
    sigmas = (1.0, 0.002) if problem.flow else (14.6, 0.03)
    x = problem.start_latent((3, 2, 2), sigmas[0], seed)
    ode = probability_flow_ode_flow if problem.flow else probability_flow_ode_ve
    slow = ode(problem.denoise, x, sigmas[0], sigmas[1], steps=500)
    assert rms_error(problem.exact(x, sigmas), slow) <= 1e-7 * (1 + rms_error(slow, ZERO))


# ---------------------------------------------------------------- 1. no garbage

# The worst measured ratio is 113 (docstring below); K leaves a margin over it. That makes this a
# guard against garbage (NaN/inf, blow-ups), not an accuracy benchmark: the improved variant
# is within 2.3x of DPM++(2M) in 90% of cases, but some families are 10-110x worse.
NO_GARBAGE_K = 250.0
NO_GARBAGE_FLOOR = 1e-5      # relative to 1 + RMS of the exact solution: float32 round-off


@dataclass
class NoGarbageCase:
    schedule: Schedule
    problem: LinearCFG
    shape: tuple
    seed: int


@st.composite
def no_garbage_cases(draw):
    schedule = draw(schedules(min_steps=5, max_steps=30, min_intervals=5))
    shape = draw(latent_shapes())
    problem = draw(cfg_problems(shape[1], schedule.family == "flow"))
    return NoGarbageCase(schedule, problem, shape, draw(st.integers(0, 2 ** 16)))


NO_GARBAGE_DRAWS = 16   # independent latents side by side in the batch (rows are independent)


def no_garbage_errors(case: NoGarbageCase, k_sampling):
    """(improved's output, its RMS error, DPM++(2M)'s RMS error, RMS of the exact solution) on
    fp32 latents, both against the exact ODE solution. The latent holds NO_GARBAGE_DRAWS draws
    of the case's shape in its batch: each error is affine in the start latent per channel, and
    on one or two values either RMS can be ~0 by chance (single-draw runs gave ratios up to 180)."""
    sig = case.schedule.tensor()
    shape = (case.shape[0] * NO_GARBAGE_DRAWS, *case.shape[1:])
    x = case.problem.start_latent(shape, case.schedule.sigmas[0], case.seed).float()
    exact = case.problem.exact(x, case.schedule.sigmas)
    out = sample(case.problem.model, x, case.schedule, "improved")
    dpm = k_sampling.sample_dpmpp_2m(case.problem.model, x, sig, disable=True)
    return out, rms_error(out, exact), rms_error(dpm, exact), rms_error(exact, ZERO)


@derandomized(300)
@given(case=no_garbage_cases())
def test_no_garbage_on_the_exact_cfg_problem(case, k_sampling):
    """The improved variant, fp32 latents, 5-30 steps of every scheduler (full and split lists),
    cfg 1-8 on the linear Gaussian problem: the output is finite and its RMS error against the
    exact ODE solution is at most K times DPM-Solver++(2M)'s on the same list (plus a float32
    floor).

    Measured, ratio = improved's error / (DPM++(2M)'s + floor):
    * this strategy, 6400 random hypothesis cases: median 0.90, 90% 2.3, 99% 11.7, worst 113
      (flow karras 18 steps, full list, w = 1: improved 0.079, DPM++ 6.7e-4); 75 cases above
      10, 14 above 30; never non-finite;
    * the 300 fixed examples below: worst 68.3, median 1.02.
    Far worse than DPM++(2M): flow lists of the karras and exponential schedulers, even without
    guidance (N(0, 1) data, where the exact ODE leaves x unchanged: 4.8x, 49x, 7.0x at 6, 12, 24
    karras steps). Their long first step is an Euler step for both; DPM++(2M)'s next steps
    cancel most of its error, the improved variant carries it to the end (with a short first
    step 1 -> 0.98 prepended, improved 0.019 vs DPM++ 0.086 at 12 karras steps). Some other
    large ratios are DPM++(2M) being accurate by chance at one step count (eps karras 5 steps,
    w = 3: 84x; at 10 steps the improved variant is ahead).
    """
    out, ours, theirs, scale = no_garbage_errors(case, k_sampling)
    note(f"improved {ours:.4g}, dpmpp_2m {theirs:.4g}, exact RMS {scale:.4g}")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert ours <= NO_GARBAGE_K * theirs + NO_GARBAGE_FLOOR * (1 + scale)


# ---------------------------------------------------------------- 1b. the reference variant never returns garbage silently

# "Far": the output's RMS distance to DPM-Solver++(2M)'s on the same list and latent is more than
# twice the RMS of the exact solution (farther from the answer than twice the answer's own size;
# the reference's ordinary first-order error stays below one RMS) and more than 10x DPM++(2M)'s own
# error (where DPM++(2M) fails as well the list is too coarse for the problem, not the reference
# broken).
FAR_OF_THE_OUTPUT, FAR_OF_DPM_ERROR = 2.0, 10.0
REFERENCE_CASES = int(os.environ.get("EVODIFF_REFERENCE_CASES", "1000"))
REFERENCE_DRAWS = 4     # latents [4, 4, 4, 4]: per-sample checks, a small problem


class WarningsOf(logging.Handler):
    """The evodiff_core warnings logged inside the block (caplog is function-scoped)."""

    def __enter__(self):
        super().__init__(logging.WARNING)
        self.messages = []
        self.logger = logging.getLogger("evodiff_core")
        self.logger.addHandler(self)
        return self

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


@st.composite
def reference_cases(draw):
    schedule = draw(schedules(min_steps=2, max_steps=60))
    if draw(st.booleans()):
        positive = [i for i, s in enumerate(schedule.sigmas) if s > 0]
        schedule = with_near_duplicate(schedule, draw(st.sampled_from(positive)), draw(epsilons(1e-7, 1e-1)))
    problem = draw(cfg_problems(4, schedule.family == "flow"))
    return schedule, problem, draw(st.sampled_from(DTYPES)), draw(st.integers(0, 2 ** 16))


@derandomized(REFERENCE_CASES)
@given(case=reference_cases())
def test_the_reference_variant_warns_when_its_output_is_far_from_dpmpp_2m(case, k_sampling):
    """For the reference variant, "output far from DPM++(2M)'s on the same ODE problem" implies
    "a warning was logged", and an error raised comes with one. Every ComfyUI scheduler (EPS and
    flow, full and split lists, 2-60 steps), half the lists with a near-duplicate sigma
    σ·(1 − ε), ε in [1e-7, 0.1], all four dtypes, the guided linear problem at cfg 1-8.

    Measured over 3000 random cases of this kind (before the watches: 98 far, 24 of them silent
    at N <= 20 and 119 clean lists under the N > 20 rule, 45 silent): 0 far without a warning;
    at a stricter "far" (one RMS instead of two) 2 of 2151 clean cases. The cost: warnings on
    about 10% of cases that are not far, mostly cfg > 5 runs whose probes left the noise level
    (median error 0.7 of the output there), besides the merge warnings of the near-duplicates.
    1000 cases take about 15 s on one CPU core (EVODIFF_REFERENCE_CASES sets the count)."""
    schedule, problem, dtype, seed = case
    shape = (REFERENCE_DRAWS, 4, 4, 4)
    x = problem.start_latent(shape, schedule.sigmas[0], seed).to(dtype)
    with WarningsOf() as logged:
        try:
            out = sample(problem.model, x, schedule, "reference")
        except FloatingPointError as error:
            note(str(error))
            event("raised")
            assert logged.messages, f"raised without a warning: {error}"
            if "the model returned" not in str(error):
                assert "reference variant" in str(error), str(error)
            return
    exact = problem.exact(x, schedule.sigmas)
    dpm = k_sampling.sample_dpmpp_2m(problem.model, x.double(), schedule.tensor(F64), disable=True)
    distance = rms_error(out.double(), dpm) if torch.isfinite(out).all() else math.inf
    far = distance > max(FAR_OF_THE_OUTPUT * rms_error(exact, ZERO), FAR_OF_DPM_ERROR * rms_error(dpm, exact))
    note(f"distance {distance:.3g}, exact RMS {rms_error(exact, ZERO):.3g}, dpm error {rms_error(dpm, exact):.3g}")
    event(("far" if far else "not far") + (", warned" if logged.messages else ""))
    assert not far or logged.messages


def test_no_comfyui_schedule_is_merged_by_the_reference():
    """Every scheduler, EPS/EDM/flow, 2-60 steps: r of (3) stays inside [1/32, 32] (measured:
    [0.068, 4.2], linear_quadratic's seam and kl_optimal at 6 EDM steps), so nothing is merged."""
    from bench.comfy_samplers import sigmas_for

    for family in ("eps", "edm", "flow"):
        for name in scheduler_names():
            for steps in range(2, 61):
                sigmas = sigmas_for("euler", family, name, steps).tolist()
                assert reference.near_equal_merged(plan(sigmas))[1] == [], (family, name, steps)


def test_a_rule_divergence_names_the_rule_in_the_error():
    """Found by the sweep behind the test above: eps exponential, 28 solver steps, cfg 7.25, fp32:
    the N > 20 rule runs away and the state overflows. The error says so (it used to say "use more
    steps", which keeps the rule on)."""
    problem = LinearCFG([0.255, 0.368, -1.179, 0.042], [0.032, 0.306, 0.033, 0.917],
                        [0.191, 0.096, 0.172, 0.792], [1.024, 0.839, 1.402, 1.912], 7.25, False)
    schedule = Schedule("eps", "exponential", 29, "full", comfy_sigmas("eps", "exponential", 29))
    x = problem.start_latent((8, 4, 4, 4), schedule.sigmas[0], 0).float()
    with WarningsOf() as logged, pytest.raises(FloatingPointError) as raised:
        sample(problem.model, x, schedule, "reference")
    assert "consistency rule" in str(raised.value) and "at most 20 solver steps" in str(raised.value)
    assert "more steps" not in str(raised.value) and any("ran away" in m for m in logged.messages)


# ---------------------------------------------------------------- 2. continuity in the sigma list

@dataclass
class InsertionCase:
    schedule: Schedule          # the list as KSampler makes it
    index: int                  # σ_index·(1 − ε) goes in right after σ_index
    eps: float
    shape: tuple
    seed: int

    @property
    def perturbed(self) -> Schedule:
        return with_near_duplicate(self.schedule, self.index, self.eps)


@st.composite
def insertion_cases(draw):
    schedule = draw(schedules(families=("eps",), min_steps=10, max_steps=30, parts=("full",)))
    index = draw(st.integers(0, len(schedule.sigmas) - 2))       # every positive sigma
    return InsertionCase(schedule, index, draw(epsilons()), draw(latent_shapes()), draw(st.integers(0, 2 ** 16)))


def insertion_change(case: InsertionCase, run) -> tuple[float, float]:
    """(RMS change of the output when σ·(1 − ε) is inserted, RMS of the output), float64."""
    gm = mixture(case.shape[1:], case.seed)
    model = mixture_model(gm, flow=False)
    x = start_latent(case.schedule, case.shape, case.seed + 7)
    base = run(model, x, case.schedule.tensor(F64))
    moved = run(model, x, case.perturbed.tensor(F64))
    return rms_error(moved, base), rms_error(base, ZERO)


def sample_or_reject(model, x, sigmas, variant):
    """The output, or the case rejected where the variant raises (it names the cause)."""
    try:
        return sample_evodiff(model, x, sigmas, disable=True, variant=variant)
    except FloatingPointError as error:
        note(str(error))
        assume(False)


# Measured on SD1.5 karras-20 with the golden mixture gmm_A (tests/data/golden), relative RMS change
# of the output, worst insert position, at eps = 1e-3 / 1e-5 / 1e-7 (DPM-Solver++(2M): 1.8e-3 at
# all three: bounded, not continuous either). Over this file's strategy (150 cases, every
# scheduler, 10-30 steps) DPM++(2M)'s change is eps-independent (median 3.4e-4, worst 0.069).
CONTINUITY_XFAIL = {
    "improved": (
        "bounded but not continuous, like DPM-Solver++(2M): the inserted sigma's model call is a "
        "fresh evaluation that later steps use. Since (V6') the change is eps-independent: karras-20 "
        "(bench mixture) 8.2e-3 at eps = 1e-3, 1e-5 and 1e-7, DPM++(2M) 3.1e-3 (before: 8.0e-3 / "
        "1.0e-1 / 1.1, growing like eps^-1/2)"),
}


@pytest.mark.parametrize("variant", [
    pytest.param("improved", marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                     reason=CONTINUITY_XFAIL["improved"])),
    "reference"])
@derandomized(25, phases=(Phase.explicit, Phase.generate))   # no shrinking: improved is expected to fail
@given(case=insertion_cases())
def test_a_near_duplicate_sigma_changes_the_output_continuously(case, variant):
    """Inserting σ·(1 − ε) right after σ (ε in [1e-7, 1e-3]) moves the output by at most
    sqrt(ε) of its RMS: the output depends continuously on the list, and ε → 0 tends to the
    list without the duplicate (an exactly equal sigma is skipped). A generous modulus: any
    Lipschitz dependence with constant up to 30 meets it. SD1.5 EPS lists, mixture model.

    The reference variant meets it because it merges such sigmas (reference.near_equal_merged):
    before, its change grew like 1/eps (karras-20 7.8 / 780 / 7.9e4 at eps = 1e-3 / 1e-5 / 1e-7;
    strategy-wide median 0.23 / 18 / 1.7e3), with no warning. Lists on which it fails without
    the insertion (its N > 20 rule on linear_quadratic, say) are left to the garbage tests."""
    change, scale = insertion_change(case, lambda m, x, s: sample_or_reject(m, x, s, variant))
    note(f"relative change {change / scale:.3g} at eps {case.eps:.3g}")
    assert change <= math.sqrt(case.eps) * scale


@pytest.mark.parametrize("variant", [
    pytest.param("improved", marks=pytest.mark.xfail(strict=False, raises=AssertionError, reason=(
        "found when the drawn examples changed: eps beta-11, sigma 9 of 11 (index=9), seed 12745, "
        "shape (3, 4, 8): relative change 0.28 at eps 9.1e-6 against 0.028 at 1e-3; the phase-out "
        "(V6') does not cover this insert position"))),
    "reference"])
@derandomized(25, phases=(Phase.explicit, Phase.generate))
@given(case=insertion_cases(), eps=epsilons(1e-7, 1e-5))
def test_a_near_duplicate_sigma_does_not_blow_up_as_it_approaches(case, eps, variant):
    """Weaker than continuity: the change a near-duplicate makes stays bounded as ε → 0, i.e.
    at ε in [1e-7, 1e-5] it is at most 3x the change at ε = 1e-3 (plus 1e-6 of the output: on
    linear_quadratic's tiny first steps both changes can be ~1e-8, far below anything visible).
    DPM-Solver++(2M) meets this (its change tends to a constant, measured)."""
    run = lambda m, x, s: sample_or_reject(m, x, s, variant)
    near, scale = insertion_change(InsertionCase(case.schedule, case.index, eps, case.shape, case.seed), run)
    mild, _ = insertion_change(InsertionCase(case.schedule, case.index, 1e-3, case.shape, case.seed), run)
    note(f"relative change {near / scale:.3g} at eps {eps:.3g}, {mild / scale:.3g} at 1e-3")
    assert near <= 3 * mild + 1e-6 * scale


@derandomized(100)
@given(case=insertion_cases(), family=st.sampled_from(FAMILIES))
def test_near_duplicate_sigmas_keep_the_improved_output_finite(case, family):
    """What does hold for the improved variant: near-duplicates in a float32 list (as ComfyUI
    hands them; σ·(1 − 1e-7) may round to σ itself there, then it is skipped) never make an fp32
    output non-finite, for EPS and flow lists (measured: 174 of 174 random cases finite; the
    reference variant raised 'diverged' on 16 of 126)."""
    sched = Schedule(family, case.schedule.scheduler, case.schedule.steps, "full",
                     comfy_sigmas(family, case.schedule.scheduler, case.schedule.steps))
    perturbed = with_near_duplicate(sched, min(case.index, len(sched.sigmas) - 2), case.eps)
    x = start_latent(sched, case.shape, case.seed).float()
    out = sample(mixture_model(mixture(case.shape[1:], case.seed), family == "flow"), x, perturbed, "improved")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ---------------------------------------------------------------- 3. correct blame

POISONS = (math.nan, math.inf, -math.inf)


class RecordingModel:
    """Wraps a model (``replace(call, output)`` may change its output); records whether each
    input it was handed and each output it returned was finite, every element."""

    def __init__(self, model, replace=None):
        self.model, self.replace = model, replace
        self.inputs_finite, self.outputs_finite = [], []

    def __call__(self, x, sigma, **kw):
        self.inputs_finite.append(bool(torch.isfinite(x).all()))
        out = self.model(x, sigma)
        out = out if self.replace is None else self.replace(len(self.inputs_finite), out)
        self.outputs_finite.append(bool(torch.isfinite(out).all()))
        return out

    @property
    def calls(self) -> int:
        return len(self.inputs_finite)

    def culprit(self) -> tuple[str, int] | None:
        """The first non-finite thing in call order, as the sampler must name it: ("state", j)
        for a non-finite input of call j, ("model", j) for a non-finite output; None if all
        were finite."""
        for j, (inp, out) in enumerate(zip(self.inputs_finite, self.outputs_finite), 1):
            if not inp:
                return "state", j
            if not out:
                return "model", j
        return None


def sampler_alone_is_finite(model, x, schedule, variant) -> tuple[bool, int]:
    """(whether the unpoisoned run raised nothing, its number of model calls)."""
    clean = RecordingModel(model)
    try:
        sample(clean, x, schedule, variant)
        return True, clean.calls
    except FloatingPointError:   # a variant that diverges on its own (the reference's N > 20 rule)
        return False, clean.calls


def called_at(message: str) -> int:
    return int(re.search(r"model call (\d+) of \d+", message).group(1))


def assert_blames(message: str, culprit: tuple[str, int] | None, n: int):
    """The error names the culprit, by call, and nothing else."""
    if culprit is None:
        assert "the sampler's result is NaN/inf" in message, message
    elif culprit[0] == "model":
        assert f"the model returned NaN/inf at model call {culprit[1]} of {n} " in message, message
        assert "diverged" not in message and "sampler's result" not in message, message
    else:
        assert "sampler state diverged" in message and called_at(message) == culprit[1], message
        assert "the model returned" not in message, message


@derandomized(200)
@given(schedule=schedules(), variant=st.sampled_from(VARIANTS), dtype=st.sampled_from(DTYPES),
       shape=latent_shapes(), seed=st.integers(0, 2 ** 16), poison=st.sampled_from(POISONS),
       whole=st.booleans(), data=st.data())
def test_a_model_returning_nan_at_call_k_is_blamed_on_the_model_at_call_k(
        schedule, variant, dtype, shape, seed, poison, whole, data):
    """Whatever the list, variant, dtype and call, a NaN/inf from the model at call k (in all of
    its output or one element) is reported as the model's, at call k, never as the sampler's.
    (Where the variant diverges on its own before call k, the error must name that instead.)"""
    model = mixture_model(mixture(shape[1:], seed), schedule.family == "flow")
    x = start_latent(schedule, shape, seed).to(dtype)
    alone_finite, n = sampler_alone_is_finite(model, x, schedule, variant)
    k = data.draw(st.integers(1, n), label="k")
    where = data.draw(st.integers(0, math.prod(shape) - 1), label="element")

    def poisoned(call, out):
        if call != k:
            return out
        out = out.clone()
        if whole:
            out.fill_(poison)
        else:
            out.view(-1)[where] = poison
        return out

    bad = RecordingModel(model, poisoned)
    with pytest.raises(FloatingPointError) as raised:
        sample(bad, x, schedule, variant)
    if alone_finite:
        assert bad.culprit() == ("model", k)
    assert_blames(str(raised.value), bad.culprit(), n)


@derandomized(150)
@given(schedule=schedules(parts=("full", "suffix")), variant=st.sampled_from(VARIANTS), shape=latent_shapes(),
       seed=st.integers(0, 2 ** 16), magnitude=st.floats(1e5, 1e7), data=st.data())
def test_finite_model_outputs_that_overflow_the_state_are_blamed_on_the_sampler(
        schedule, variant, shape, seed, magnitude, data):
    """fp16 latents, a model whose float32 outputs turn huge (±1e5 to 1e7, finite) from call k
    on: the state leaves fp16's range, and the error says "sampler state diverged" before the
    first call that was handed a non-finite state (one after k), or, when no call is left, that
    the sampler's result is not finite; never that the model returned NaN/inf."""
    model = mixture_model(mixture(shape[1:], seed), schedule.family == "flow")
    x = start_latent(schedule, shape, seed).half()
    alone_finite, n = sampler_alone_is_finite(model, x, schedule, variant)
    k = data.draw(st.integers(1, n), label="k")
    signs = torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0

    def huge(call, out):   # a float32 output, as an fp32 model hands an fp16 latent
        return out.float() if call < k else (magnitude * signs).float()

    bad = RecordingModel(model, huge)
    with pytest.raises(FloatingPointError) as raised:   # the list ends in 0: the result is ±magnitude
        sample(bad, x, schedule, variant)
    culprit = bad.culprit()
    assert culprit is None or culprit[0] == "state"
    if alone_finite and culprit is not None:
        assert culprit[1] > k
    assert_blames(str(raised.value), culprit, n)


@derandomized(6)
@given(schedule=schedules(parts=("full",)), variant=st.sampled_from(VARIANTS), mean=st.floats(1.0, 4.0),
       seed=st.integers(0, 2 ** 16))
def test_finite_fp16_sampling_of_a_large_latent_raises_nothing(schedule, variant, mean, seed):
    """No false blame: an fp16 SDXL-sized latent (1x4x128x128) of data around a channel mean
    of 1 to 4, with an exact model: every state and output is finite, so nothing may raise.
    (Until 069421a the checks summed in the latent's dtype; an fp16 sum of 65536 such elements
    is inf, and it raised 'sampler state diverged ... before model call 1'.)"""
    shape = (1, 4, 128, 128)
    problem = LinearCFG([mean] * 4, [0.1] * 4, [0.0] * 4, [1.0] * 4, 1.0, schedule.family == "flow")
    x = problem.start_latent(shape, schedule.sigmas[0], seed).half()
    recording = RecordingModel(problem.model)
    out = sample(recording, x, schedule, variant)
    assert all(recording.inputs_finite)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


# ---------------------------------------------------------------- 4. bitwise batch independence

@derandomized(150)
@given(schedule=st.one_of(schedules(), near_duplicates(schedules())), variant=st.sampled_from(VARIANTS),
       dtype=st.sampled_from((torch.float32, torch.float64)), shape=latent_shapes(min_batch=2),
       seed=st.integers(0, 2 ** 16))
def test_each_sample_alone_equals_its_row_of_the_batch_bit_for_bit(schedule, variant, dtype, shape, seed):
    """The model sees one sample at a time, so any batch effect is the sampler's: each sample
    sampled alone equals its row of the batched run exactly (torch.equal). Near-duplicate
    sigmas (a float64 list) included; if the batch raises, some sample alone raises too."""
    model = one_sample_at_a_time(mixture_model(mixture(shape[1:], seed), schedule.family == "flow"))
    x = start_latent(schedule, shape, seed).to(dtype)
    sigma_dtype = F64 if schedule.inserted else torch.float32
    run = lambda latent: sample(model, latent, schedule, variant, sigma_dtype=sigma_dtype)
    singles = []
    for b in range(shape[0]):
        try:
            singles.append(run(x[b:b + 1]))
        except FloatingPointError:
            singles.append(None)
    try:
        batch = run(x)
    except FloatingPointError:
        assert any(s is None for s in singles)
        return
    for b, single in enumerate(singles):
        assert single is not None and torch.equal(single, batch[b:b + 1]), f"sample {b}"


# ---------------------------------------------------------------- 5. dtypes

# RMS distance to the float64 run, relative to max(RMS of that run, 1) (the data are about unit
# scale; a latent of one element whose output is near 0 would make a plain ratio meaningless)
DTYPE_RELATIVE_RMS = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 2e-5}


@derandomized(200)
@given(schedule=schedules(), variant=st.sampled_from(VARIANTS),
       dtype=st.sampled_from((torch.float16, torch.bfloat16, torch.float32)), shape=latent_shapes(),
       seed=st.integers(0, 2 ** 16))
def test_low_precision_latents_keep_their_dtype_and_track_the_float64_run(schedule, variant, dtype, shape, seed):
    """fp16/bf16/fp32 latents with a model in the same precision (exact maths, output rounded to
    the latent's dtype): the output has the latent's dtype, is finite, and its RMS distance to
    the float64 run from the same (rounded) start, relative to max(that run's RMS, 1), is below
    a per-dtype bound.

    Measured over this strategy (1800 random cases, both variants): fp16 median 2e-4, worst
    2.0e-3; bf16 median 1.7e-3, worst 1.3e-2; fp32 median 3e-8, worst 5.0e-6. Never non-finite,
    always the latent's dtype. Bounds: 2.4-4x the worst.
    Left out: the reference variant on lists of more than 20 solver steps, where its
    consistency rule (docs/algorithm.md (21)) can run away (it warns so). There any rounding is amplified
    without bound: a wider run found an fp16 output of -2.28 where float64 gave 0.09 (eps simple
    22 steps, one element), and a bf16 run that raised "diverged" where float64 stayed finite
    (eps linear_quadratic 22 steps).
    """
    assume(variant == "improved" or not plan(list(schedule.sigmas)).consistency_rule)
    model = mixture_model(mixture(shape[1:], seed), schedule.family == "flow")
    x = start_latent(schedule, shape, seed).to(dtype)
    out = sample(model, x, schedule, variant)
    exact = sample(model, x.double(), schedule, variant)
    assert out.dtype == dtype and torch.isfinite(out).all()
    scale = max(rms_error(exact, ZERO), 1.0)
    note(f"relative RMS {rms_error(out, exact) / scale:.3g}")
    assert rms_error(out, exact) <= DTYPE_RELATIVE_RMS[dtype] * scale


# ---------------------------------------------------------------- 6. the callback contract

@derandomized(300)
@given(schedule=schedules(max_steps=20), variant=st.sampled_from(VARIANTS), shape=latent_shapes(),
       seed=st.integers(0, 2 ** 16))
def test_no_tensor_handed_to_the_callback_or_the_model_is_changed_afterwards(schedule, variant, shape, seed):
    """ComfyUI's samplers never change a tensor after handing it out: preview collectors,
    animation nodes and x0 outputs keep what the callback gives them, and a model may cache its
    input. Every x and denoised the callback got, and every model input and output, still holds
    its value when the sampler returns; and the run equals the run without a callback."""
    model = mixture_model(mixture(shape[1:], seed), schedule.family == "flow")
    handed_out = []   # (tensor, the copy taken when it was handed out)

    def keeping(tensor):
        handed_out.append((tensor, tensor.clone()))

    def watched_model(x, sigma, **kw):
        keeping(x)
        out = model(x, sigma, **kw)
        keeping(out)
        return out

    def callback(info):
        keeping(info["x"])
        keeping(info["denoised"])

    x = start_latent(schedule, shape, seed).to(torch.float32)
    out = sample(watched_model, x, schedule, variant, callback=callback)
    changed = [k for k, (tensor, copy) in enumerate(handed_out) if not torch.equal(tensor, copy)]
    assert not changed, f"{len(changed)} of {len(handed_out)} tensors handed out were changed later"
    assert torch.equal(out, sample(model, x, schedule, variant))
