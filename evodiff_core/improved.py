"""EVODiff "improved": the reference's step made consistent and model-sampling aware, with its
variance control kept as a bounded correction. Derivations and measurements: docs/variants.md.

General schedule x = α·x0 + σ·ε (VE / EPS / V: α = 1; ComfyUI CONST / flow: α = 1 − σ),
κ = σ/α, log-SNR λ = log(α/σ) = −log κ. The exact probability-flow ODE solution in data
prediction is

  (V1)  x_t = (σ_t/σ_s)·x_s + σ_t ∫_{λ_s}^{λ_t} e^{λ} D(λ) dλ,

the reference's x_t = (σ_t/σ_s)·x_s + σ_t·h·D (h = 1/κ_t − 1/κ_s) being its D = const case.
Replacing D by a polynomial in an interpolation variable u(λ) through the outputs at hand and
integrating exactly gives host weights, computed once per sampler call:

  (V2)  x_t = ρ·x_s + Σ_a W_a·D_a,   ρ = σ_t/σ_s,   Σ_a W_a = α_t − ρ·α_s = 1 − ρ.

u is the log of the marginal std (u = λ for VE, u = −log t = log(1 + e^λ) for flow) in the
order-2 steps, and the noise variance u = κ² in the last step of a VE list (Tweedie: D moves
like κ² at low noise, where the last steps are long). Flow's σ = 1 (λ = −∞) is u = −log t = 0: kept.

The order-2 step, one model call (the reference's (10)–(22)), slopes in u:
  (V3)  probe  x̃ = x_E + a1·g−,        g− = (D_{i−1} − D_{i−2})/Δu_prev,  a1 = σ_t ∫ e^λ (u − u_s) dλ
  (V4)  D_i = D(x̃, σ_i),                g+ = (D_i − D_{i−1})/Δu
  (V5)  η_var = clamp(−⟨g−, g+ − g−⟩/‖g+ − g−‖², 0, 1): the blend (1 − η)·g− + η·g+ of least
        variance, per (sample, channel) (the paper's η*: η_var = ½ − η*)
  (V6)  ν = (1 − δ)^μ·c,  δ = ‖g+ − g−‖/(‖g−‖ + ‖g+‖): the trust in the second-order terms falls
        as the slopes disagree (the paper's ζ, with μ the shift); (V6') c = 1/(1 + (q/4)⁴),
        q = Δu/Δu_prev, phases out a backward slope measured over a much shorter step
  (V7)  η = ν·η_quad + (1 − ν)·η_var, η_quad the weight that integrates the parabola through
        D_{i−2}, D_{i−1}, D_i exactly
  (V8)  x_i = x_E + a1·ν·((1 − η)·g− + η·g+)
δ = O(Δu) on a smooth path, so ν → 1 and η → η_quad as steps shrink: the deviations are bounded
and vanish, and the step keeps its order. μ = 0 gives the pure interpolation rule.
  (V9)  last step (no call; also the hand-off of split lists): (V2) through D_{N−2}, D_{N−1}, gated by ν.
  (V10) lists ending in 0 whose last step is long (κ_N ≤ κ_{N−1}/4): the last step is an order-2 step (in κ² for VE) whose probe takes the
        final call, and x_0 = D_N + (x_N − x̃_N)/α_N: no call is spent where D(x, σ_N) ≈ x/α.
  (V11) VE lists ending in 0 that keep the final call: σ_N → 0 is (V2) in u = κ² over
        [λ_N, ∞), where ρ → 0 and the weights become the Lagrange basis at κ² = 0 (Tweedie: D
        along the path is x(0) + O(κ²)), gated by ν:
        x_0 = D_N + ν·c(ω)·ω·(D_N − D_{N−1}),  ω = κ_N²/(κ_{N−1}² − κ_N²), c of (V6').
  (V12) the warm-up's corrector: step 1 is an Euler step (one output). Its correction by (V2)
        through D_0, D_1 (the trapezoid, W_1 its weight on D_1), W_1·(D_1 − D_0), is carried
        through step 2 (×ρ_2) and added to x_2 with step 2's trust ν, as every later step's
        corrector is trusted. Not from flow's t = 1 (λ_0 = −∞: that integral is kept Euler).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .schedule import Plan
from .steps import SolverSteps, alpha_sigma, channel_dot, euler_step

# A backward slope measured over a step this many times shorter than the step it is extrapolated
# over is mostly the offset between the probe and the state, not slope: (V6') phases it out.
SLOPE_BASELINE_RATIO = 4.0
# (V10) applies where the last solver step is long, κ_N ≤ κ_{N−1}/4 (log-SNR step ≥ log 4): the
# call-free step would extrapolate over it, and the final call sits at κ_N² ≤ κ_{N−1}²/16, next to
# the end κ² = 0 of that step's interpolation. Scale-free; SD1.5 'normal' (2.7–3.2), 'karras' up
# to 6 steps and flow 'normal' lists qualify, flow 'simple' ones (0.5–0.9) keep the final denoise.
PROBE_ENDING_MIN_LOG_SNR_STEP = math.log(4.0)
_QUADRATURE_NODES = 24   # Gauss–Legendre on one step: exact to ~1e-15 for these smooth integrands
# u for (order-2 steps, last step) per noise schedule; see the module docstring and docs/variants.md
INTERPOLATION = {"ve": ("lambda", "kappa2"), "flow": ("logsigma_flow", "logsigma_flow")}


def log_snr(s: float, noise_schedule: str) -> float:
    """λ = log(α/σ) = −log κ; −∞ at flow's σ = 1 (pure noise)."""
    alpha, sigma = alpha_sigma(s, noise_schedule)
    return -math.inf if alpha <= 0 else math.log(alpha / sigma)


def interpolation_variable(lam: float, variable: str) -> float:
    """u(λ), up to an affine map (which leaves the weights unchanged).

    "lambda": λ.  "logsigma_flow": −log t = log(1 + e^λ) for flow (for VE −log σ is λ itself).
    "kappa2": κ² = e^{−2λ}, the noise variance relative to the data."""
    if variable == "lambda":
        return lam
    if variable == "logsigma_flow":
        return lam + math.log1p(math.exp(-lam)) if lam > 0 else math.log1p(math.exp(lam))
    if variable == "kappa2":
        return math.exp(-2 * lam)
    raise ValueError(variable)


@lru_cache(maxsize=1)
def _gauss_legendre() -> tuple[list[float], list[float]]:
    import numpy as np  # ComfyUI and torch ship numpy; only used on the host, once per call

    x, w = np.polynomial.legendre.leggauss(_QUADRATURE_NODES)
    return [(float(a) + 1) / 2 for a in x], [float(b) / 2 for b in w]   # mapped to [0, 1]


def integral_weights(node_lams, lam_s: float, lam_t: float, alpha_t: float, variable: str) -> list[float]:
    """(V2): W_a = σ_t ∫_{λ_s}^{λ_t} e^{λ} L_a(u(λ)) dλ = α_t ∫_0^h e^{−(h−τ)} L_a(u(λ_s + τ)) dτ,
    L_a the Lagrange basis over the nodes u(λ_a). Every node has a finite u: flow's pure-noise
    node t = 1 (λ = −∞) is u = −log t = 0."""
    us = [interpolation_variable(lam, variable) for lam in node_lams]
    h = lam_t - lam_s
    weights = [0.0] * len(node_lams)
    for x, w in zip(*_gauss_legendre()):
        tau = x * h
        u = interpolation_variable(lam_s + tau, variable)
        kernel = w * h * math.exp(tau - h)
        for a, ua in enumerate(us):
            basis = math.prod((u - ub) / (ua - ub) for ub in us if ub != ua)
            weights[a] += alpha_t * kernel * basis
    return weights


@dataclass(frozen=True)
class StepWeights:
    """Host constants of the step σ_{i−1} → σ_i (grid index i ≥ 2)."""

    sigma_prev: float   # σ_{i−1}
    sigma: float        # σ_i
    du_prev: float      # Δu of the previous step
    du: float           # Δu of this step
    a1: float           # σ_t ∫ e^λ (u(λ) − u_s) dλ: the weight of a slope in u, (V3) and (V8)
    eta_quad: float     # (V7) the blend weight of the exact parabola integral
    last: tuple[float, float]   # (V9) on (D_{N−2}, D_{N−1})
    warmup: float = 0.0  # (V12), i = 2 only: ρ_2·W_1, the weight on D_1 − D_0 carried into x_2


def step_weights(grid: list[float], noise_schedule: str) -> dict[int, StepWeights]:
    """StepWeights for every grid index i ≥ 2 (the steps that have two earlier model outputs).

    Cached per (grid, schedule): a workflow samples the same sigma list run after run, and the
    quadrature (~0.1 ms a step on the host) is then paid once."""
    return _step_weights(tuple(grid), noise_schedule, *INTERPOLATION[noise_schedule])


@lru_cache(maxsize=64)
def _step_weights(grid: tuple[float, ...], noise_schedule: str, variable: str,
                  last_variable: str) -> dict[int, StepWeights]:
    return {i: weights_of_step(grid, i, noise_schedule, variable, last_variable) for i in range(2, len(grid))}


def weights_of_step(grid, i: int, noise_schedule: str, variable: str, last_variable: str) -> StepWeights:
    """StepWeights of σ_{i−1} → σ_i, interpolating in ``variable`` (and ``last_variable`` for (V9))."""
    lam = [log_snr(s, noise_schedule) for s in grid[i - 2:i + 1]]
    # flow's t = 1 (λ = −∞) is u = −log t = 0, a node like any other
    u = [interpolation_variable(v, variable) for v in lam]
    alpha_t = alpha_sigma(grid[i], noise_schedule)[0]
    du = u[2] - u[1]
    # the slope weight: linear interpolation through (u_s, 0) and (u_t, Δu) integrated
    a1 = integral_weights(lam[1:], lam[1], lam[2], alpha_t, variable)[1] * du
    # the parabola's weight on D_i, W_D, is a1·η_quad/Δu, since (V8) puts a1·η/Δu on D_i
    w_d = integral_weights(lam, lam[1], lam[2], alpha_t, variable)[2]
    warmup = 0.0
    if i == 2 and math.isfinite(lam[0]):
        # (V12) a correction of x_1 reaches x_2 multiplied by ρ_2 = σ_2/σ_1
        w_1 = integral_weights(lam[:2], lam[0], lam[1], alpha_sigma(grid[1], noise_schedule)[0], variable)[1]
        warmup = grid[2] / grid[1] * w_1
    return StepWeights(sigma_prev=grid[i - 1], sigma=grid[i], du_prev=u[1] - u[0], du=du, a1=a1,
                       eta_quad=w_d * du / a1,
                       last=tuple(integral_weights(lam[:2], lam[1], lam[2], alpha_t, last_variable)),
                       warmup=warmup)


def slope_conditioning(q: float) -> float:
    """(V6') c: 1 for comparable steps, → (Q/q)⁴ when the slope was measured over a step q ≫ Q
    times shorter than the one it is carried over, so a near-duplicate sigma (q → ∞) changes the
    result boundedly."""
    return 1.0 / (1.0 + (q / SLOPE_BASELINE_RATIO) ** 4)


@dataclass(frozen=True)
class OutputChange:
    """The change of the model output between two grid points, d = D_{i−1} − D_{i−2} ([B, C, L]),
    with ⟨d, d⟩ per (sample, channel) ([B, C, 1]). A step's own change a = D_i − D_{i−1} is the
    next step's d, so it is carried rather than formed again from D_{i−2}, which is not kept."""

    value: torch.Tensor
    norm_sq: torch.Tensor

    @classmethod
    def between(cls, denoised, denoised_prev) -> OutputChange:
        value = denoised - denoised_prev
        return cls(value, channel_dot(value, value))


def order2_step(x, denoised_prev, change_prev: OutputChange, weights: StepWeights, shift: float, trust_prev,
                denoise, state_is_ours: bool = False):
    """(V3)–(V8): one step σ_{i−1} → σ_i with one model call at the probe point.

    ``denoised_prev`` is D_{i−1}, ``change_prev`` d = D_{i−1} − D_{i−2}. ``trust_prev`` is the
    previous step's ν ([B, C, 1]), or None where no step has measured the slopes' agreement yet
    (then the probe is the Euler point). Returns ``(x_i, D_i, a, ν)``; D_i belongs to the probe
    point and is reused by the next step, as is a = D_i − D_{i−1} (its d). Slopes are kept
    unscaled: g− = d/Δu_prev and g+ = a/Δu. ``state_is_ours``: x was never handed to the model or
    the callback, so the Euler step may overwrite it (no tensor handed out is ever changed)."""
    diff, dd = change_prev.value, change_prev.norm_sq
    x_euler = euler_step(x, denoised_prev, weights.sigma_prev, weights.sigma, out=x if state_is_ours else None)
    q = weights.du / weights.du_prev
    conditioning = slope_conditioning(q)
    # (V3) probe x̃ = x_E + a1·θ·g−, θ = the previous step's trust (0 before any was measured)
    if trust_prev is None:
        theta = 0.0
        denoised = denoise(x_euler)
        x_euler = x_euler.clone()   # the model saw it: the corrector writes into a copy
    else:
        theta = trust_prev * conditioning
        denoised = denoise(torch.addcmul(x_euler, theta * (weights.a1 / weights.du_prev), diff))
    # (V4) the output's change a = D_i − D_{i−1} = Δu·g+; the slope change is ẽ = Δu·(g+ − g−) = a − q·d
    change = OutputChange.between(denoised, denoised_prev)
    output_change, aa = change.value, change.norm_sq
    da = channel_dot(diff, output_change)
    dc = da - q * dd                              # ⟨d, ẽ⟩
    cc = (aa - (2 * q) * da + (q * q) * dd).clamp_min(0)   # ⟨ẽ, ẽ⟩
    tiny = torch.finfo(aa.dtype).tiny
    # (V5) η_var = −⟨g−, g+ − g−⟩/‖g+ − g−‖² = −q·⟨d,ẽ⟩/⟨ẽ,ẽ⟩; 0 where ẽ = 0 (the slopes agree)
    eta_var = ((dc / cc.clamp_min(tiny)) * -q).clamp(0.0, 1.0)
    # (V6) δ = ‖g+ − g−‖/(‖g−‖ + ‖g+‖) = ‖ẽ‖/(q·‖d‖ + ‖a‖) ∈ [0, 1], ν = (1 − δ)^μ·c
    disagreement = cc.sqrt() / (q * dd.sqrt() + aa.sqrt()).clamp_min(tiny)
    trust = (1 - disagreement).clamp(0.0, 1.0).pow(shift) * conditioning
    # (V7) η = ν·η_quad + (1 − ν)·η_var
    eta = trust * weights.eta_quad + (1 - trust) * eta_var
    # (V8) x_i = x̃ + ν·(x_C − x̃), x_C = x_E + a1·((1 − η)·g− + η·g+):
    #      on d: a1/Δu_prev·(θ + ν(1 − θ)), on ẽ: a1/Δu·ν·η; with ẽ = a − q·d, on a: a1/Δu·ν·η and
    #      on d: a1/Δu_prev·(θ + ν(1 − θ) − ν·η)
    on_diff = theta + trust * (1 - theta) - trust * eta
    x_next = x_euler.addcmul_(on_diff, diff, value=weights.a1 / weights.du_prev)
    if weights.warmup:   # (V12) the warm-up's trapezoid correction, carried here and trusted by ν
        x_next.addcmul_(trust, diff, value=weights.warmup)
    return x_next.addcmul_(trust * eta, output_change, value=weights.a1 / weights.du), denoised, change, trust


def last_step(x, denoised_prev, change_prev: OutputChange, weights: StepWeights, trust_prev) -> torch.Tensor:
    """(V9): the last solver step, no model call (ends in D(x_N, σ_N) or hands x_N over).

    x_N = x_E + ν·(x_V9 − x_E), x_V9 = ρ·x + W_1·D_{N−2} + W_0·D_{N−1}; as W_1 + W_0 = 1 − ρ the
    difference is W_1·(D_{N−2} − D_{N−1}) = −W_1·d. ν = the last measured trust; Euler where none
    was measured."""
    x_euler = euler_step(x, denoised_prev, weights.sigma_prev, weights.sigma)
    if trust_prev is None:
        return x_euler
    return x_euler.addcmul_(trust_prev, change_prev.value, value=-weights.last[0])


class Steps(SolverSteps):
    """The improved order-2 and last steps over a planned grid (driven by sampler.py).

    ``probe_ending`` (lists that end in 0 with a long last step, N ≥ 2): the last solver step
    σ_{N−1} → σ_N is an order-2 step too, in the last step's variable (V10), whose probe takes the
    call the reference spends on the final denoise D(x_N, σ_N); the trailing σ_N → 0 then
    subtracts the noise the probe saw (``to_zero``)."""

    def __init__(self, plan: Plan, shift: float, noise_schedule: str):
        super().__init__(plan, shift, noise_schedule)
        self.noise_schedule = noise_schedule
        self.weights = step_weights(plan.grid, noise_schedule)
        self.shift = shift
        self.trust = None   # ν of the last order-2 step, [B, C, 1]; None until one is measured
        n = plan.steps
        self.probe_ending = (plan.denoise_to_zero and n >= 2 and log_snr(plan.grid[n], noise_schedule)
                             - log_snr(plan.grid[n - 1], noise_schedule) >= PROBE_ENDING_MIN_LOG_SNR_STEP)
        if self.probe_ending:
            self.plan = plan.with_probe_ending()
            # the last step's weights in the variable (V9) uses for it (κ² for VE)
            last_variable = INTERPOLATION[noise_schedule][1]
            self.weights = {**self.weights, n: weights_of_step(plan.grid, n, noise_schedule, last_variable,
                                                               last_variable)}
        self.last_index = n
        self.alpha_last = alpha_sigma(plan.grid[-1], noise_schedule)[0] if plan.grid else 1.0
        self.noise_at_probe = None
        self.change = None   # d = D_{i−1} − D_{i−2} (an OutputChange), from D_1 on

    def remember(self, denoised):
        # d = D_1 − D_0 once D_1 is in; D_0 itself is not kept
        if self.denoised_prev is not None:
            self.change = OutputChange.between(denoised, self.denoised_prev)
        self.denoised_prev = denoised

    def order2(self, i, x, denoise):
        if self.probe_ending and i == self.last_index:
            denoise = self._keeping_the_noise(denoise)
        # from step 3 on the state is an earlier corrector output, which the model never saw;
        # a callback may have kept it, though
        x_next, denoised, self.change, self.trust = order2_step(
            x, self.denoised_prev, self.change, self.weights[i], self.shift, self.trust, denoise,
            state_is_ours=i >= 3 and self.may_overwrite_state)
        self.denoised_prev = denoised
        return x_next, denoised

    def _keeping_the_noise(self, denoise):
        def at_probe(x_probe):
            denoised = denoise(x_probe)
            # σ_N·ε̂ = x̃_N − α_N·D_N at the probe, kept before x_E moves on
            self.noise_at_probe = torch.add(x_probe, denoised, alpha=-self.alpha_last)
            return denoised
        return at_probe

    def to_zero(self, x):
        """(V10) σ_N → 0 without a call: x_0 = (x_N − σ_N·ε̂(x̃_N))/α_N = D_N + (x_N − x̃_N)/α_N, the
        first-order Taylor step of D around the probe with ∂D/∂x = (1 + O(κ_N²/Var x0))/α_N."""
        return (x - self.noise_at_probe).div_(self.alpha_last)

    def last(self, i, x):
        return last_step(x, self.denoised_prev, self.change, self.weights[i], self.trust)

    def final_denoised(self, denoised):
        """(V11): the final call's D_N extrapolated to κ² = 0 through D_{N−1}, by the last trust ν.

        Where the last step interpolates in κ² (VE): the trailing σ_N → 0 is then the same
        interpolation carried to its end. Flow's last step interpolates in u = −log t, which has
        no value at t = 0, and keeps D_N (docs/variants.md §5c). D_N where no trust was measured."""
        if self.trust is None or INTERPOLATION[self.noise_schedule][1] != "kappa2":
            return denoised
        kappa2_last, kappa2_prev = (interpolation_variable(log_snr(s, self.noise_schedule), "kappa2")
                                    for s in self.plan.grid[-1:-3:-1])
        # ω = the extrapolation's reach over the nodes' spacing, i.e. (V6')'s q for this step
        omega = kappa2_last / (kappa2_prev - kappa2_last)
        return torch.addcmul(denoised, self.trust * (omega * slope_conditioning(omega)), denoised - self.denoised_prev)
