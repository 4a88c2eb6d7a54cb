"""EVODiff's steps, equation by equation (docs/algorithm.md §3; the paper's Algorithm 1).

Sigma form (k-diffusion / ComfyUI): ``x = x0 + σ·ε`` and the model returns ``D(x, σ) ≈ x0``.
Latents are handled as ``[B, C, L]`` views (every dim after the channel flattened), so one
code path serves audio (3-D), image (4-D) and video (5-D) latents. Per-(sample, channel)
quantities have shape ``[B, C, 1]``; per-step scalars (ρ, h, r, w, β) are host floats from
:mod:`evodiff_core.schedule`.

Cost: an order-2 step reads or writes each latent-sized tensor about 9 times. The inner
products the step needs are taken from two Gram matrices instead of forming the reference's
intermediate vectors B±, P (the identities are in :func:`order2_step`'s docstring).

Where the reference divides 0 by 0 (a projection onto an all-zero channel, docs/algorithm.md
§8) the projection coefficient is 0 (the pseudo-inverse); everywhere else the values are the
reference's.

Every sample's numbers are bitwise independent of the batch (its size, the other samples): the
inner products are batched matmuls per (sample, channel) and the logistic goes through
``torch.exp``, whose CPU kernel treats every element alike (``torch.sigmoid``'s does not, see
:func:`logistic`).
"""
from __future__ import annotations

import logging
import math

import torch

from .schedule import Order2Scalars, Plan, order2_scalars, plan as plan_sigmas
from .steps import SolverSteps, alpha_sigma, channel_dot, euler_step

log = logging.getLogger(__name__)

PROJECTION_CLAMP = 2.0    # every projection / balance ratio is clamped to [-2, 2]
PROBE_TEMPERATURE = 0.25  # (9): sig(0.25·|r1|)
RESCALE_WARNING = 0.5     # below this, (F3)'s a = 1 − sqrt(σ_N σ_{N−1}) visibly shrinks (or flips) the latent
# An order-2 step whose r of (3) lies outside [1/32, 32] has a near-zero step next to it: merged
# (docs/variants.md, "The reference variant's failures"). Every ComfyUI scheduler stays inside
# [0.068, 4.2] at 2-60 steps (linear_quadratic's seam and kl_optimal are the extremes).
NEAR_EQUAL_STEP_RATIO = 1 / 32
# RMS of the noise estimate (x − α·D)/σ beyond which a latent is off its noise level: a latent
# x = α·x0 + σ·ε has about 1; the exact guided ODE paths of the test problems reach 10.8.
NOISE_LEVEL_LIMIT = 16.0
# ‖x̃ − x_E‖/‖x_E‖ beyond which the probe (10) is no short extrapolation (largest measured on
# runs that stayed near the ODE: 2.5)
PROBE_REACH_LIMIT = 3.0


def logistic(z: torch.Tensor) -> torch.Tensor:
    """sig(z) = 1/(1 + e^{−z}), the same per element whatever the batch.

    torch.sigmoid on CPU takes a vector path for whole blocks of elements and a scalar one for
    the rest, which round differently; on the [B, C, 1] per-channel tensors which elements fall
    in which depends on B (measured: a third to a half of random [B, 4, 1] inputs differ). torch.exp
    computes every element with the same vector code, and so do the add and the reciprocal.
    """
    return 1 / (1 + torch.exp(-z))


def projection(inner: torch.Tensor, norm2: torch.Tensor) -> torch.Tensor:
    """clamp(⟨a,b⟩ / ⟨b,b⟩, −2, 2).

    ⟨b,b⟩ = 0 only for an all-zero b, and then ⟨a,b⟩ = 0 too: dividing by the smallest normal
    number instead gives 0 there (the reference gets NaN) and changes nothing anywhere else.
    """
    tiny = torch.finfo(norm2.dtype).tiny
    return (inner / norm2.clamp_min(tiny)).clamp(-PROJECTION_CLAMP, PROJECTION_CLAMP)


class Workspace:
    """Latent-sized scratch buffers of one sampler call, never handed to the model or callback."""

    def __init__(self, like: torch.Tensor):
        b, c, n = like.shape
        self.x_euler = torch.empty_like(like)
        # Δ1 and Δ2 side by side, so one batched matmul gives all their inner products.
        self.deltas = like.new_empty((b, c, 2, n))
        self.delta1, self.delta2 = self.deltas[:, :, 0], self.deltas[:, :, 1]
        self.diff = torch.empty_like(like)


class InnerProducts:
    """The cached ⟨·,·⟩ of the last two model outputs m0 = D_{i-1}, m1 = D_{i-2} (§3.4)."""

    def __init__(self, m0: torch.Tensor, m1: torch.Tensor):
        self.m0m0 = channel_dot(m0, m0)
        self.m1m1 = channel_dot(m1, m1)
        self.m0m1 = channel_dot(m0, m1)

    def roll(self, d_new_m0: torch.Tensor, d_new_d_new: torch.Tensor) -> None:
        """After a step D_i becomes m0 and the old m0 becomes m1: pure caching, no recompute."""
        self.m1m1, self.m0m0, self.m0m1 = self.m0m0, d_new_d_new, d_new_m0


def order2_step(x, m0, m1, dots: InnerProducts, sc: Order2Scalars, shift: float,
                consistency_rule: bool, denoise, ws: Workspace, record: list | None = None):
    """One order-2 step σ_{i-1} → σ_i (docs/algorithm.md §3.2); ``denoise(x)`` evaluates D(x, σ_i).

    Returns ``(x_i, D_i, step_scale)``: D_i belongs to the probe point x̃ and the next step uses
    it as is; step_scale = ½σ_i h/ζ ([B, C, 1]) is the weight (22) gave the correction Bθ.

    Two pairs of equations are computed from the Gram matrix of Δ1, Δ2 (g11 = ⟨Δ1,Δ1⟩,
    g12 = ⟨Δ1,Δ2⟩, g22 = ⟨Δ2,Δ2⟩) instead of forming the latent-sized B−, B+ and P. They stand for

      (14)–(15)  B− = Δ1/(r·h),  B+ = r·Δ2/h,  η* = ½·proj(B+ + B−, B+ − B−)
      (18)–(19)  P = x̃ − x_E − (½σ_i h/r_i)·Bθ,  ζ* = proj(P, Δ1)/(σ_i·h)

    With e = r·Δ2 − Δ1/r: B+ − B− = e/h and B+ + B− = (e + 2Δ1/r)/h, the h² cancels, and
      η* = ½·clamp(⟨e + 2Δ1/r, e⟩/⟨e,e⟩, −2, 2),  ⟨e,e⟩ = r²g22 − 2g12 + g11/r²,
           ⟨e + 2Δ1/r, e⟩ = ⟨e,e⟩ + 2g12 − 2g11/r².
    x̃ − x_E = (½σ_i h/r_i)·Δ1 by (10) and Bθ = coef1·Δ1 + coef2·Δ2 by (17), so
      P = (½σ_i h/r_i)·((1 − coef1)·Δ1 − coef2·Δ2),  ⟨P,Δ1⟩ = (½σ_i h/r_i)·((1 − coef1)·g11 − coef2·g12).
    tests/test_core_golden_internals.py checks both forms against the golden internals.

    ``record``: a list that gets this step's internals appended, named as the golden file's
    ``dbg/*`` keys (r1, r_i, r2, eta_star, eta, zeta_star, zeta, x_euler); None records nothing.
    """
    w, r = sc.w, sc.r
    # (6) Euler part x_E = ρ·x + σ_i·h·m0 (euler_step, with the ρ of (1))
    x_euler = torch.lerp(m0, x, sc.rho, out=ws.x_euler)
    # (7)–(8) balanced difference Δ1 = m0 − r1·m1, r1 blending β with ⟨m0,m1⟩/⟨m1,m1⟩
    r1 = (1 - w) * sc.beta + w * projection(dots.m0m1, dots.m1m1)
    delta1 = torch.addcmul(m0, r1, m1, value=-1, out=ws.delta1)
    # (9) probe divisor; the clamp is a no-op for r > 0, kept as in the reference
    r_i = (logistic(PROBE_TEMPERATURE * r1.abs()) * r).clamp(0.25 * r, 1.5 * r)
    # (10)–(11) probe point x̃ = x_E + (½σ_i h/r_i)·Δ1 and the step's only model call
    probe_scale = (0.5 * sc.sigma_h) / r_i
    d_new = denoise(torch.addcmul(x_euler, probe_scale, delta1))
    # (12)–(13) second balanced difference Δ2 = D_i − r2·m0
    d_new_m0 = channel_dot(d_new, m0)
    r2 = (1 - w) * sc.beta + w * projection(d_new_m0, dots.m0m0)
    delta2 = torch.addcmul(d_new, r2, m0, value=-1, out=ws.delta2)
    gram = ws.deltas @ ws.deltas.transpose(-1, -2)          # [B, C, 2, 2] of Δ1, Δ2
    g11, g12, g22 = gram[..., 0, :1], gram[..., 0, 1:], gram[..., 1, 1:]
    # (14)–(15) η* = ½·proj(B+ + B−, B+ − B−) = ½·proj(e + 2Δ1/r, e), e = r·Δ2 − Δ1/r
    e_e = (r * r) * g22 - 2 * g12 + g11 / (r * r)
    eta_star = 0.5 * projection(e_e + 2 * g12 - (2 / (r * r)) * g11, e_e)
    # (16)–(17) η = ½·sig(|η*|) and Bθ = coef1·Δ1 + coef2·Δ2 = (−η/r)·Δ1 + r(1−η)·Δ2
    eta = 0.5 * logistic(eta_star.abs())
    coef1, coef2 = -eta / r, r * (1 - eta)
    # (18)–(19) ζ* = proj(P, Δ1)/(σ_i·h), ⟨P,Δ1⟩ = probe_scale·((1 − coef1)·g11 − coef2·g12):
    # clamp, then divide by σ_i·h
    zeta_star = projection(probe_scale * ((1 - coef1) * g11 - coef2 * g12), g11) / sc.sigma_h
    # (20)–(21) variance-controlled step size: z = |ζ*| − μ
    z = zeta_star.abs() - shift
    zeta = logistic(z)
    if consistency_rule:
        # Δ10 = (m0 − m1)/h (previous difference over the current h): proj(m0, Δ10) = h·⟨m0,d⟩/⟨d,d⟩
        diff = torch.sub(m0, m1, out=ws.diff)
        d_d = channel_dot(diff, diff)
        consistency = logistic(projection(sc.h * channel_dot(m0, diff), d_d) * (2 - sc.rho ** 2))
        # Where m0 = m1 (a step-caching node repeated an output) there is no change to measure
        # the consistency against (the reference gets 0/0): keep the plain rule there.
        zeta = torch.where(d_d > 0, logistic(-z * consistency), zeta)
    if record is not None:
        record.append(dict(r1=r1, r_i=r_i, r2=r2, eta_star=eta_star, eta=eta, zeta_star=zeta_star,
                           zeta=zeta, x_euler=x_euler.clone()))
    # (22) x_i = x_E + (½σ_i h/ζ)·Bθ
    step_scale = (0.5 * sc.sigma_h) / zeta
    x_next = torch.addcmul(x_euler, step_scale * coef1, delta1).addcmul_(step_scale * coef2, delta2)
    dots.roll(d_new_m0, channel_dot(d_new, d_new))
    return x_next, d_new, step_scale


def final_step_reference(x, m0, m1, sigma: float, sigma_next: float) -> torch.Tensor:
    """(F1)–(F5): the reference's "lower-order final" step, no model call.

    Kept for lists that end in 0 (then D(x_N, σ_N) follows). Not a consistent discretisation:
    it rescales by a = 1 − sqrt(σ_N σ_{N−1}), which depends on the absolute sigma scale
    (docs/algorithm.md §8).
    """
    rho = sigma_next / sigma
    half_sigma_h = 0.5 * (1.0 - rho)                                   # ½·σ_N·h
    a = 1.0 - math.sqrt(sigma_next * sigma)                            # (F3)
    r_f = 1.0 - 0.5 * math.sqrt(rho) if rho < 0.5 else 1.0 - 0.5 * math.sqrt(rho - 0.5)  # (F4)
    x_next = euler_step(x, m0, sigma, sigma_next).mul_(a)               # (F2), scaled by a
    return x_next.add_(m0, alpha=half_sigma_h).add_(m1, alpha=-half_sigma_h * r_f)      # (F5)


def final_step_handoff(x, m0, m1, sigma_prev: float, sigma: float, sigma_next: float) -> torch.Tensor:
    """Last step of a list that does not end in 0 (a split schedule), no model call.

    Deviation from the reference, whose (F5) shrinks x by a = 1 − sqrt(σ_N σ_{N−1})
    (docs/algorithm.md §8), so that the output is a valid state at σ_N that another sampler can
    continue from: (22) with the plain difference m0 − m1 in place of Bθ and r in place of ζ,
    i.e. the difference extrapolated linearly in log-sigma (DPM-Solver++(2M)'s multistep update):
    x_N = x_E + (σ_N·h / 2r)·(m0 − m1), r the log-step ratio of (3).
    """
    r = math.log(sigma_prev / sigma) / math.log(sigma / sigma_next)
    half_sigma_h = 0.5 * (1.0 - sigma_next / sigma)
    x_next = euler_step(x, m0, sigma, sigma_next)
    return x_next.add_(m0, alpha=half_sigma_h / r).add_(m1, alpha=-half_sigma_h / r)


def rule_step_scale_limit(shift: float) -> float:
    """½·(1 + e^{2−μ}): the largest weight ½σ_i h/ζ that the N > 20 rule (21) can give the
    correction in (22) while ζ* stays inside the ±2 projection clamp.

    There ζ = sig(−(|ζ*| − μ)·c) with |ζ*| ≤ 2, 0 < c < 1 and μ ≤ 2, so ζ ≥ sig(μ − 2), and
    σ_i·h = 1 − ρ < 1. A larger weight means the division by σ_i·h in (19) pushed |ζ*| past the
    clamp and the rule turned that into a smaller ζ: a bigger step, bigger differences at the
    next step, the runaway. Measured per sample (guided mixtures, cfg 5–7, 25–30 steps, RMS
    error against the exact ODE, unit-variance data; the runs' medians 0.01–0.14): weight 1 to
    4.5, error ≤ 0.32 in 7 of 8 samples; from 6.8 up, 1.8 or more (33 and up: 3.6 to 215).
    Unguided: SD1.5 karras stays below 0.5; EDM karras reached 2.9 in 1 sample of 512 (0.18).
    """
    return 0.5 * (1.0 + math.exp(PROJECTION_CLAMP - shift))


class RuleRunawayWatch:
    """The largest correction weight ½σ_i h/ζ of the N > 20 rule, kept as a device scalar and
    read once, after the loop (no host sync per step)."""

    def __init__(self, shift: float):
        self.limit = rule_step_scale_limit(shift)
        self.largest = None

    def observe(self, step_scale: torch.Tensor) -> None:
        # fmax: the NaN that inf − inf makes after a runaway must not hide the weights before it
        peak = step_scale.nan_to_num(nan=0.0).amax()
        self.largest = peak if self.largest is None else torch.fmax(self.largest, peak)

    def report(self) -> bool:
        """Log once if the rule ran away; True if it did. NaN does not count."""
        if self.largest is None:
            return False
        largest = self.largest.item()
        if largest > self.limit:
            log.warning(
                "EVODiff (reference variant): above 20 solver steps the reference's consistency rule "
                "for the step size zeta (equation (21) of docs/algorithm.md) ran away: it weighted a "
                "correction by %.3g, where its steps stay below %.3g while their projections are in "
                "range, and threw the state off the ODE (it can grow huge and stay finite); the result "
                "is likely garbage. Strong guidance makes this likely. Use the 'improved' variant, at "
                "most 20 solver steps (at most 21 KSampler steps for a schedule ending in 0), where the "
                "rule is off, or a lower cfg.",
                largest, self.limit)
            return True
        return False


RUNAWAY_FIX = ("The reference variant's consistency rule for more than 20 solver steps ran away (see the "
               "warning before this error): use the 'improved' variant, at most 20 solver steps, or a lower cfg.")
RESCALE_FIX = ("The reference variant's last step rescaled the latent beyond its dtype's range (see the warning "
               "before this error): use a schedule that ends at a small sigma, or the 'improved' variant.")
OFF_THE_ODE_FIX = ("The reference variant's steps left the ODE (see the warning before this error): use the "
                   "'improved' variant or a lower cfg.")


class OffTheODEWatch:
    """Did the steps stay near the ODE? Two per-call measures, kept as device scalars and read
    once, after the loop (the largest over the batch of per-sample values):

    * the noise level of the latent the model is handed: the RMS of its noise estimate
      ε̂ = (x − α·D)/σ, α = 1 (VE) or 1 − σ (flow). A latent x = α·x0 + σ·ε at its sigma has
      ε̂ ≈ ε, RMS about 1;
    * the probe's reach: ‖x̃ − x_E‖/‖x_E‖, how far the probe (10) extrapolates from the Euler
      point, relative to the latent. A consistent step moves it by O(h²) of its size.

    The reference reuses the model output of each probe point x̃ as if it belonged to the next
    state (§3.2). Where D contracts faster than the noise is removed (strong guidance: the guided
    slope dD/dx is negative) that mismatch grows from step to step, and the probes and states
    leave the noise level; after a short step, (10) divides by a small r and the probe reaches
    far. Non-finite values are left out: a model that returns NaN/inf is blamed by the sampler."""

    def __init__(self, noise_schedule: str):
        self.noise_schedule = noise_schedule
        self.calls = []   # (grid index, device [noise level, probe reach])

    def observe(self, j: int, sigma: float, x: torch.Tensor, denoised: torch.Tensor,
                x_euler: torch.Tensor | None = None) -> None:
        alpha = alpha_sigma(sigma, self.noise_schedule)[0]
        rms = lambda t: torch.linalg.vector_norm(t.flatten(1), dim=1) / math.sqrt(t[0].numel())  # noqa: E731
        level = rms(torch.add(x, denoised, alpha=-alpha)) / sigma
        reach = torch.zeros_like(level) if x_euler is None else rms(x - x_euler) / rms(x_euler)
        both = torch.stack([level.amax(), reach.amax()])
        self.calls.append((j, both.nan_to_num(nan=0.0, posinf=0.0)))

    def first_off(self) -> tuple[int, float, float] | None:
        """(grid index, noise level, probe reach) of the first call beyond NOISE_LEVEL_LIMIT or
        PROBE_REACH_LIMIT; None if there was none."""
        if not self.calls:
            return None
        values = torch.stack([both for _, both in self.calls]).tolist()
        for (j, _), (level, reach) in zip(self.calls, values):
            if level > NOISE_LEVEL_LIMIT or reach > PROBE_REACH_LIMIT:
                return j, level, reach
        return None


def near_equal_merged(p: Plan) -> tuple[Plan, list[tuple[int, int, float]]]:
    """``p`` without the sigmas of near-zero steps, and (merged list position, the position it
    was merged into, the step's length relative to its neighbour's) for each.

    (3) r = (previous log-sigma step)/(current one) enters the order-2 step as 1/r (the probe
    (10), Bθ (17)) and as r (Bθ (17), and ζ* (19) divides by σ_i·h ∝ the current step): a step of
    length ε between two ordinary ones makes r ≈ ε or 1/ε, and the output moves by ~1/ε (measured,
    docs/variants.md). Where r leaves [1/32, 32], the earlier sigma of the short step is merged
    into the later one (the first sigma, where the latent starts, is kept), as equal sigmas are;
    then r is checked again on the new grid. The hand-off step of a split list divides by r as
    well and is checked too; (F1)–(F5) use no r."""
    merged = {}
    while True:
        g = p.grid
        # the order-2 steps 2 … N−1, and the hand-off step N of a split list, which divides by r too
        for i in range(2, len(g) if not p.denoise_to_zero else len(g) - 1):
            r = order2_scalars(g[i - 2], g[i - 1], g[i], g[0], g[-1]).r
            if NEAR_EQUAL_STEP_RATIO <= r <= 1 / NEAR_EQUAL_STEP_RATIO:
                continue
            # r small: σ_{i−2} → σ_{i−1} is the short step; r large: σ_{i−1} → σ_i
            short = i - 2 if r < 1 else i - 1
            drop = short + 1 if short == 0 else short
            keep = short if short == 0 else short + 1
            merged[p.grid_index[drop]] = (p.grid_index[keep], min(r, 1 / r))
            p = plan_sigmas(list(p.sigmas), merged=frozenset(merged))
            break
        else:
            return p, [(k, into, ratio) for k, (into, ratio) in sorted(merged.items())]


def warn_merged(sigmas, merged) -> None:
    for k, into, ratio in merged:
        log.warning(
            "EVODiff (reference variant): sigmas[%d] = %.6g and sigmas[%d] = %.6g are nearly equal: their "
            "log-sigma step is %.3g of its neighbour's, and the reference's order-2 step divides by that ratio "
            "(r of equation (3) in docs/algorithm.md), which throws the result off by far more than its own size. "
            "Sampled without sigmas[%d], as if the two were equal. Remove the duplicate sigma (check the nodes "
            "that edit or join this sigma list), or use the 'improved' variant, which samples the list as given.",
            k, sigmas[k], into, sigmas[into], ratio, k)


def warn_off_the_ode(sigma: float, level: float, reach: float) -> None:
    what = (f"the model was handed a latent whose noise estimate (x - D)/sigma has an RMS of {level:.3g}, where a "
            "latent at its noise level has about 1" if level > NOISE_LEVEL_LIMIT else
            f"the probe point (equation (10) of docs/algorithm.md) was {reach:.3g} times the latent's own size away "
            "from the Euler point")
    log.warning(
        "EVODiff (reference variant): the steps left the ODE: at sigma %.4g %s. The reference reuses the model "
        "output of each probe point as if it belonged to the next state; where the denoiser contracts faster "
        "than the noise is removed (strong guidance), or after a very short step, that error grows from step "
        "to step. The result is likely garbage. Use the 'improved' variant, or a lower cfg.", sigma, what)


class Steps(SolverSteps):
    """The reference's order-2 and last steps over a planned grid (driven by sampler.py).

    Lists that end in 0 get (F1)–(F5); lists that stop early get the consistent hand-off."""

    def __init__(self, plan: Plan, shift: float, noise_schedule: str, record: list | None = None):
        """``noise_schedule`` only tells the noise-level check how x is scaled: the steps treat
        every list as VE sigmas, like the original. Near-equal sigmas are merged first
        (:func:`near_equal_merged`). ``record``: a list for order2_step's per-step internals
        (tests only)."""
        plan, merged = near_equal_merged(plan)
        warn_merged(plan.sigmas, merged)
        super().__init__(plan, shift, noise_schedule)
        self.record = record
        g = self.grid = plan.grid
        self.shift = shift
        self.consistency_rule, self.denoise_to_zero = plan.consistency_rule, plan.denoise_to_zero
        # (1)–(5) for every order-2 step i = 2 … N−1, σ_{i−1} → σ_i
        self.scalars = {i: order2_scalars(g[i - 2], g[i - 1], g[i], g[0], g[-1]) for i in range(2, len(g) - 1)}
        self.dots = self.workspace = None
        self.runaway = RuleRunawayWatch(shift)
        self.off_the_ode = OffTheODEWatch(noise_schedule)
        self.rescaled = None   # (a, |x_N| as a device scalar) when (F3) rescaled the latent
        self.x_last = None     # x_N, the final denoise's input (lists that end in 0)

    def order2(self, i, x, denoise):
        m0, m1 = self.denoised_prev, self.denoised_prev2
        if self.dots is None:
            self.dots, self.workspace = InnerProducts(m0, m1), Workspace(x)

        def observed(x_probe):
            denoised = denoise(x_probe)
            self.off_the_ode.observe(i, self.grid[i], x_probe, denoised, self.workspace.x_euler)
            return denoised

        x_next, d_new, step_scale = order2_step(x, m0, m1, self.dots, self.scalars[i], self.shift,
                                                self.consistency_rule, observed, self.workspace,
                                                self.record)
        if self.consistency_rule:
            self.runaway.observe(step_scale)
        self.remember(d_new)
        return x_next, d_new

    def last(self, i, x):
        m0, m1, g = self.denoised_prev, self.denoised_prev2, self.grid
        if not self.denoise_to_zero:
            return final_step_handoff(x, m0, m1, g[i - 2], g[i - 1], g[i])
        # in the working dtype (float32 for fp16/bf16 latents), like every step
        x_next = self.x_last = final_step_reference(x, m0, m1, g[i - 1], g[i])
        a = 1.0 - math.sqrt(g[i - 1] * g[i])
        if a < RESCALE_WARNING:
            warn_rescale(g[i - 1], g[i], a)
            low, high = torch.aminmax(x_next)
            self.rescaled = (a, torch.maximum(high, -low))   # read in finish(), not here
        return x_next

    def finish(self, latent_dtype=None, result=None) -> str | None:
        """The runaway report, else the off-the-ODE report (``result``: the final denoise D(x_N),
        checked against its input x_N); and, given ``latent_dtype``, a rescaled final state beyond
        that dtype's range is named as the cause of the inf the model then got. Returns the fix
        for the sampler's error if the steps broke. No-op when nothing happened."""
        if self.x_last is not None and result is not None and self.rescaled is None:
            # (a rescaled x_N is off its noise level by design, and warn_rescale said so)
            self.off_the_ode.observe(len(self.grid) - 1, self.grid[-1], self.x_last, result)
        cause = None
        if self.runaway.report():
            cause = RUNAWAY_FIX
        elif (off := self.off_the_ode.first_off()) is not None:
            j, level, reach = off
            warn_off_the_ode(self.grid[j], level, reach)
            cause = OFF_THE_ODE_FIX
        if self.rescaled is None or latent_dtype is None or not latent_dtype.is_floating_point:
            return cause
        a, peak = self.rescaled
        peak, largest = peak.item(), torch.finfo(latent_dtype).max
        if peak > largest:
            log.warning("EVODiff (reference variant): the last step's rescale a = %.3f took the latent "
                        "to |x| = %.3g, beyond the largest %s (%.6g), so the final model call got inf "
                        "(the cause is this rescale, not the model). Use a schedule that ends at a "
                        "small sigma (this one ends at %.4g), or the improved variant.",
                        a, peak, str(latent_dtype).replace("torch.", ""), largest, self.grid[-1])
            return RESCALE_FIX
        return cause


def warn_rescale(sigma: float, sigma_next: float, a: float) -> None:
    """(F3)'s a = 1 − sqrt(σ_N σ_{N−1}) is ~1 only for last sigmas ≪ 1 (the reference's end at
    0.002); say what it does to this list and how to avoid it."""
    effect = ("shrinks it" if a >= 0 else "flips its sign" if a >= -1.0
              else "flips its sign and magnifies it")
    log.warning("EVODiff (reference variant): this schedule ends at sigma %.4g, and the reference's "
                "last step scales the latent by a = 1 - sqrt(%.4g * %.4g) = %.3f, as the original code "
                "does (made for schedules ending near 0.002, where a is about 1); this %s, so the final "
                "denoise sees a latent off its noise level and the result will be off. Use a schedule "
                "that ends at a small sigma (a full schedule, more steps of this scheduler, or one that "
                "ends at the model's sigma_min such as karras), or the improved variant.",
                sigma_next, sigma, sigma_next, a, effect)
