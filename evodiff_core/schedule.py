"""From a ComfyUI sigma list to EVODiff's solver grid and its per-step scalars (host side).

Everything here is plain Python floats, computed once per sampler call from ``sigmas.tolist()``,
so the step loop never reads a device tensor back (docs/algorithm.md §9, "Mapping to ComfyUI").

Notation of docs/algorithm.md §1: the solver grid is ``σ_0 > σ_1 > … > σ_N > 0``;
``Z`` means "denoise to zero", one extra model call at ``σ_N`` when the list ends in 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

# The reference switches its ζ rule on for more than this many solver steps (docs/algorithm.md
# (21) and §5).
CONSISTENCY_RULE_MIN_STEPS = 20


@dataclass(frozen=True)
class Order2Scalars:
    """Per-step constants of order-2 step i, σ_{i-1} → σ_i (docs/algorithm.md (1)–(5))."""

    rho: float        # (1)  ρ  = σ_i / σ_{i-1}
    rho_prev: float   # (1)  ρ' = σ_{i-1} / σ_{i-2}
    h: float          # (2)  h  = 1/σ_i − 1/σ_{i-1}
    sigma_h: float    #      σ_i·h = 1 − ρ, the weight of the data term in the Euler step
    r: float          # (3)  r  = ln(σ_{i-2}/σ_{i-1}) / ln(σ_{i-1}/σ_i), ratio of log-sigma steps
    w: float          # (4)  w  = ½(1 − τ²), τ = (σ_i + σ_end)/(σ_T + σ_end)
    beta: float       # (5)  β  = sqrt(ρ/ρ')


@dataclass(frozen=True)
class Interval:
    """One entry of the ComfyUI sigma list's intervals ``sigmas[k] → sigmas[k+1]``.

    ``kind`` is one of:
      ``"skip"``    zero-length interval (equal sigmas, or zeros after the final denoise): the
                    state is left as it is;
      ``"warmup"``  solver step 1, first order (docs/algorithm.md §3.1);
      ``"order2"``  solver steps 2 … N−1 (§3.2); with a probe ending also step N;
      ``"final"``   the last solver step N (§3.3, or the hand-off step for lists without 0);
      ``"euler"``   the only solver step of a one-step grid (fallback, no reference behaviour);
      ``"to_zero"`` the trailing σ_N → 0 interval: output the final denoised sample (§3.5).
    ``start``, ``end``: the grid indices of the interval's two sigmas, so it takes solver step
    i = ``end`` (σ_{i−1} → σ_i); ``end`` is None for ``"to_zero"`` (0 is no grid point), both
    are None for skips.
    ``calls_model``: the model is evaluated at the state at ``start``: D_0, D_1 and the final
    denoise. Every later D_i is the output of an order-2 step's probe.
    """

    k: int
    kind: str
    start: int | None = None
    end: int | None = None
    calls_model: bool = False


@dataclass(frozen=True)
class Plan:
    grid: list[float]            # σ_0 > … > σ_N > 0, the solver grid (duplicates removed)
    grid_index: list[int]        # position of each grid sigma in the input list
    denoise_to_zero: bool        # Z
    intervals: list[Interval] = field(default_factory=list)
    sigmas: tuple[float, ...] = ()   # the list it was planned from, so a variant can plan it again

    @property
    def steps(self) -> int:      # N, the reference's ``steps`` argument
        return len(self.grid) - 1

    @property
    def nfe(self) -> int:
        """Model calls: one per grid point except the last, plus the final denoise."""
        return max(self.steps, 0) + int(self.denoise_to_zero) if self.grid else 0

    @property
    def consistency_rule(self) -> bool:
        return self.steps > CONSISTENCY_RULE_MIN_STEPS

    def with_probe_ending(self) -> Plan:
        """The same plan for a probe ending (improved.py (V10)): the last solver step is an
        order-2 step whose probe takes the final model call, so σ_N → 0 makes none."""
        relabel = {"final": dict(kind="order2"), "to_zero": dict(calls_model=False)}
        return replace(self, intervals=[replace(iv, **relabel.get(iv.kind, {})) for iv in self.intervals])


def check_sigmas(sigmas: list[float]) -> None:
    """Reject what EVODiff cannot sample, saying what to change."""
    if not all(math.isfinite(s) for s in sigmas):
        raise ValueError(f"EVODiff: sigmas must be finite, got {sigmas}. Check the scheduler node.")
    if any(s < 0 for s in sigmas):
        raise ValueError(f"EVODiff: sigmas must be >= 0, got {sigmas}. Check the scheduler node.")
    rising = [k for k in range(len(sigmas) - 1) if sigmas[k + 1] > sigmas[k]]
    if rising:
        k = rising[0]
        raise ValueError(
            "EVODiff: sigmas must not increase (it samples from high noise to low noise), but "
            f"sigmas[{k}] = {sigmas[k]:.6g} < sigmas[{k + 1}] = {sigmas[k + 1]:.6g}. "
            "For unsampling / inversion use a sampler made for it (e.g. euler with flipped sigmas); "
            "otherwise check the scheduler or the FlipSigmas/SplitSigmas nodes feeding this sampler."
        )


def order2_scalars(s_prev2: float, s_prev: float, s: float, s_start: float, s_end: float) -> Order2Scalars:
    """Equations (1)–(5) for the step ``s_prev → s``, given the grid start σ_T and end σ_end."""
    rho = s / s_prev
    rho_prev = s_prev / s_prev2
    h = 1.0 / s - 1.0 / s_prev
    r = math.log(s_prev2 / s_prev) / math.log(s_prev / s)
    tau = (s + s_end) / (s_start + s_end)   # the reference uses plus signs: τ never reaches 0 or 1
    return Order2Scalars(
        rho=rho, rho_prev=rho_prev, h=h, sigma_h=s * h, r=r,
        w=0.5 * (1.0 - tau * tau), beta=math.sqrt(rho / rho_prev),
    )


def plan(sigmas: list[float], merged: frozenset[int] = frozenset()) -> Plan:
    """Map a ComfyUI sigma list onto EVODiff's grid (docs/algorithm.md §9), label every interval.

    * A trailing 0 means a final denoise (Z): the grid is the list without it.
    * A list without a trailing 0 ends at ``sigmas[-1]`` (split schedules).
    * Equal consecutive sigmas are zero-length steps: they are skipped, so the grid is strictly
      decreasing (the reference would divide by zero there, docs/algorithm.md §8).
    * ``merged``: positions in the list that are no grid points although their sigma differs
      from the next one (the reference variant merges near-equal sigmas this way); the step
      before them goes on to the next grid point and their own interval is skipped.
    """
    check_sigmas(sigmas)
    grid, grid_index = [], []
    for k, s in enumerate(sigmas):
        # A grid point starts a strictly decreasing interval (or ends the list): of a run of
        # equal sigmas only the last one counts, so the interval after it is the real step.
        if s > 0 and k not in merged and (k == len(sigmas) - 1 or sigmas[k + 1] < s):
            grid.append(s)
            grid_index.append(k)
    denoise_to_zero = bool(grid) and sigmas[-1] == 0
    n = len(grid) - 1

    step_of = {k: j for j, k in enumerate(grid_index)}
    intervals = []
    for k in range(len(sigmas) - 1):
        j = step_of.get(k)
        if j is None or (j == n and not denoise_to_zero):
            intervals.append(Interval(k, "skip"))        # equal sigmas, or zeros after the final denoise
            continue
        if j == n:
            kind = "to_zero"
        elif n == 1:
            kind = "euler"     # N = 1: the reference refuses; one DDIM step
        elif j == 0:
            kind = "warmup"
        elif j == n - 1:
            kind = "final"
        else:
            kind = "order2"
        # D_0 and D_1 are evaluated at the state itself, and so is the final denoise
        intervals.append(Interval(k, kind, start=j, end=None if kind == "to_zero" else j + 1,
                                  calls_model=kind == "to_zero" or j <= 1))
    return Plan(grid, grid_index, denoise_to_zero, intervals, tuple(sigmas))
