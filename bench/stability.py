"""Stability tables CLI: amplification per step on the linear test problem D(x, σ) = s·x (docs/variants.md §6).

Guidance scales the slope of D: s = s_u + w·(s_c − s_u), negative where the class is narrower than the
data. For a uniform log-SNR step h (VE) each rule is a linear map of its state, whose spectral radius is
the factor an error grows by per step; the previous `improved` step (trust 1) is taken from the code.

    .venv/bin/python -m bench.stability            # the tables of docs/variants.md §6
"""
from __future__ import annotations

import math

import torch

from evodiff_core import improved

from .common import md_table

SLOPES = (-4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 0.9)


def euler_factor(s: float, h: float) -> float:
    rho = math.exp(-h)
    return abs(rho + (1 - rho) * s)


def dpmpp_2m_radius(s: float, h: float) -> float:
    """DPM-Solver++(2M), equal steps: x' = ρx + (1 − ρ)·(1.5·D_0 − 0.5·D_−1), D = s·x."""
    rho = math.exp(-h)
    step = torch.tensor([[rho + 1.5 * (1 - rho) * s, -0.5 * (1 - rho) * s], [1.0, 0.0]], dtype=torch.float64)
    return torch.linalg.eigvals(step).abs().max().item()


def full_trust_radius(s: float, h: float) -> float:
    """improved.order2_step at μ = 0 with ν = 1 as a map (x, m0, m1) → (x', D_i, m0), on basis vectors."""
    sw = improved.step_weights([10.0 * math.exp(-k * h) for k in range(5)], "ve")[3]
    columns = []
    for k in range(3):
        basis = torch.zeros(3, 1, 1, dtype=torch.float64)
        basis[k] = 1.0
        x, m0, m1 = basis[0:1], basis[1:2], basis[2:3]
        full = torch.ones(1, 1, 1, dtype=torch.float64)
        change = improved.OutputChange.between(m0, m1)
        x_next, d_new, _, _ = improved.order2_step(x, m0, change, sw, 0.0, full, lambda x_probe: s * x_probe)
        columns.append([x_next.item(), d_new.item(), m0.item()])
    step = torch.tensor(columns, dtype=torch.float64).T
    return torch.linalg.eigvals(step).abs().max().item()


def table(h: float) -> str:
    """Trust 0 is the first-order data-prediction step the trust rule falls back to: Euler's."""
    head = [f"h = {h}", "exact e^((s−1)h)", "Euler", "DPM++(2M)", "previous `improved` (trust 1)", "trust 0"]
    return md_table(head,
                    [[f"s = {s:g}", f"{math.exp((s - 1) * h):.3f}", f"{euler_factor(s, h):.2f}",
                      f"{dpmpp_2m_radius(s, h):.2f}", f"{full_trust_radius(s, h):.2f}", f"{euler_factor(s, h):.2f}"]
                     for s in SLOPES], "rrrrrr")


if __name__ == "__main__":
    for h in (1.0, 1.6):
        print(table(h) + "\n")
