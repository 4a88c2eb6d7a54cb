"""What the two variants share: the first-order step, and the step interface sampler.py drives.

Numbering (docs/algorithm.md §1–3): the solver grid is σ_0 > σ_1 > … > σ_N, and step i goes
σ_{i−1} → σ_i (i = 1 … N), so x_i is the state at σ_i. Step 1 is the warm-up (an Euler step),
steps 2 … N−1 are order-2 steps, step N is the last one. Per-step constants are keyed by i.
"""
from __future__ import annotations

import torch

from .schedule import Plan


def alpha_sigma(s: float, noise_schedule: str) -> tuple[float, float]:
    """(α, σ) of a ComfyUI sigma: VE x = x0 + s·ε, flow (CONST) x = (1 − s)·x0 + s·ε."""
    return (1.0 - s, s) if noise_schedule == "flow" else (1.0, s)


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """(E1)–(E2), also (6) and (F2): the first-order data-prediction step (DDIM / Euler).

    x_next = (σ_next/σ)·x + σ_next·h·D with h = 1/σ_next − 1/σ, i.e. σ_next·h = 1 − σ_next/σ:
    an interpolation between D (at ρ = 0) and x (at ρ = 1). ``out=x`` overwrites x.
    """
    return torch.lerp(denoised, x, sigma_next / sigma, out=out)


def channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ per (sample, channel) of two [B, C, L] tensors → [B, C, 1].

    One [1, L] @ [L, 1] product per (sample, channel), the second operand a transposed row, so
    BLAS takes its dot-product path: no temporary, ~7× faster on CPU than a column operand, and
    bitwise independent of the batch (fp32/fp64, B = 1..4, L up to 16·128·128); einsum is not
    (for B = 1 it hands BLAS a differently strided operand: ~1e-6 relative apart at 2x4x64x64 fp32).
    """
    rows = a.reshape(-1, 1, a.shape[-1])
    columns = b.reshape(-1, 1, b.shape[-1]).transpose(1, 2)
    return torch.bmm(rows, columns).view(*a.shape[:-1], 1)


class SolverSteps:
    """One variant's steps over a planned grid, as sampler.py calls them.

    sampler.py evaluates the model where ``plan.intervals`` say an interval calls it, takes
    the warm-up with :func:`euler_step`, and leaves the rest to these methods. The steps keep
    the earlier model outputs they need themselves: D_{i−1} as ``denoised_prev`` and, here,
    D_{i−2} as ``denoised_prev2`` (a variant may keep their difference instead). Tensors are
    ``[B, C, L]``.
    """

    # False when the caller keeps the states it is handed (a callback): then no step may write
    # into a state in place, as ComfyUI's own samplers never change a tensor they handed out
    may_overwrite_state = True

    def __init__(self, plan: Plan, shift: float, noise_schedule: str):
        self.plan = plan   # a variant may relabel it (improved's probe ending)
        self.denoised_prev = self.denoised_prev2 = None

    def remember(self, denoised):
        """A model output taken at the state itself (D_0, D_1), the newest one from now on."""
        self.denoised_prev2, self.denoised_prev = self.denoised_prev, denoised

    def order2(self, i: int, x, denoise):
        """Order-2 step i. ``denoise(x̃)`` evaluates D(x̃, σ_i), the step's one model call.
        Returns ``(x_i, D_i)``; D_i belongs to the probe x̃ and the next step reuses it."""
        raise NotImplementedError

    def last(self, i: int, x):
        """The last solver step i = N, without a model call. Returns x_N."""
        raise NotImplementedError

    def to_zero(self, x):
        """The final denoised sample where ``plan`` makes the trailing σ_N → 0 interval without
        a model call."""
        raise NotImplementedError

    def final_denoised(self, denoised):
        """The sample at σ = 0 of a list ending in 0, from its final call D_N = D(x_N, σ_N)
        (``denoised``) and D_{N−1}; the reference returns D_N itself. Never changes either tensor
        (both were handed to the callback)."""
        return denoised

    def finish(self, latent_dtype: torch.dtype | None = None, result=None) -> str | None:
        """After the loop: the checks that read the device, once. ``latent_dtype``: the dtype the
        state is handed to the model in; ``result``: the sampler's output, [B, C, L] in the
        working dtype. Returns what to do if the result is not finite, where the variant knows
        the cause (sampler.py puts it into its error), else None."""
        return None
