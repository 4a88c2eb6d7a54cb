"""The reference variant's order-2 steps, equation by equation, against the per-step internals
the official code recorded in the golden file (``<case>/dbg/*``, row j = step i = j + 2).

Each quantity is checked twice: as the production path computes it (reference.order2_step,
where (14)–(15) and (18)–(19) go through Gram-matrix identities), recorded through
``reference.Steps(record=...)``; and by the direct formula of docs/algorithm.md §3.2, written
out here on latent-sized tensors, from the golden inputs of that equation alone."""
import functools

import pytest
import torch

import golden
from evodiff_core import reference, sample_evodiff, sampler
from evodiff_core.schedule import plan

CASES = [c["name"] for c in golden.cases() if c["n_order2_steps"] > 0]
PER_CHANNEL = ("r1", "r_i", "r2", "eta_star", "eta", "zeta_star", "zeta")
TOL = dict(atol=1e-9, rtol=1e-9)


def dbg(name, key):
    return golden.tensor(name, f"dbg/{key}")


def dot(a, b):
    """⟨a, b⟩ per (sample, channel) over H, W, kept as [B, C, 1, 1]."""
    return (a * b).sum((-2, -1), keepdim=True)


def proj(a, b):
    return (dot(a, b) / dot(b, b)).clamp(-2, 2)


def per_channel(name, key, row):
    return dbg(name, key)[row][..., None, None]


@functools.lru_cache(maxsize=None)
def recorded(name):
    """The production path's internals of every order-2 step of a golden case."""
    record = []
    steps = functools.partial(reference.Steps, record=record)
    original = sampler._STEPS["reference"]
    sampler._STEPS["reference"] = steps
    try:
        sample_evodiff(golden.RecordingModel(golden.denoiser(golden.case(name))), golden.tensor(name, "x_init"),
                       golden.tensor(name, "sigmas"), disable=True, variant="reference")
    finally:
        sampler._STEPS["reference"] = original
    return record


@pytest.mark.parametrize("name", CASES)
def test_production_internals_match_the_golden_ones(name):
    c = golden.case(name)
    record = recorded(name)
    assert len(record) == c["n_order2_steps"] == len(dbg(name, "r1"))
    shape = golden.tensor(name, "x_init").shape
    for row, internals in enumerate(record):
        for key in PER_CHANNEL:
            torch.testing.assert_close(internals[key].squeeze(-1), dbg(name, key)[row], **TOL,
                                       msg=f"{key}, step {row + 2}")
        torch.testing.assert_close(internals["x_euler"].view(shape), dbg(name, "x_euler")[row], **TOL)


@pytest.mark.parametrize("name", CASES)
def test_step_scalars_match_the_golden_ones(name):
    """(3)–(5): r, w, β of every order-2 step i, keyed by i as the Steps classes key them."""
    steps = reference.Steps(plan(golden.case(name)["sigmas"]), 0.5, "ve")
    for row, i in enumerate(sorted(steps.scalars)):
        sc = steps.scalars[i]
        assert i == row + 2
        for value, key in ((sc.r, "r_logh"), (sc.w, "w"), (sc.beta, "beta")):
            assert value == pytest.approx(dbg(name, key)[row].item(), rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize("name", CASES)
def test_direct_formulas_match_the_golden_internals(name):
    c = golden.case(name)
    g = plan(c["sigmas"]).grid
    n = len(g) - 1
    traj, calls_x, calls_d = (golden.tensor(name, k) for k in ("traj", "calls_x", "calls_denoised"))
    for row in range(c["n_order2_steps"]):
        i = row + 2
        s_prev2, s_prev, s = g[i - 2], g[i - 1], g[i]
        sigma_h, h, rho = 1 - s / s_prev, 1 / s - 1 / s_prev, s / s_prev
        r, w, beta = (dbg(name, k)[row].item() for k in ("r_logh", "w", "beta"))
        m0, m1, d_i, x_probe = calls_d[i - 1], calls_d[i - 2], calls_d[i], calls_x[i]
        x_euler = dbg(name, "x_euler")[row]
        r1, r_i, r2, eta_star, eta, zeta_star, zeta = (per_channel(name, k, row) for k in PER_CHANNEL)

        def check(equation, value, expected):
            torch.testing.assert_close(value, expected, **TOL, msg=f"{equation}, step {i} of {name}")

        check("(6)", rho * traj[i - 1] + sigma_h * m0, x_euler)
        check("(7)", (1 - w) * beta + w * proj(m0, m1), r1)
        check("(9)", (torch.sigmoid(0.25 * r1.abs()) * r).clamp(0.25 * r, 1.5 * r), r_i)
        delta1 = m0 - r1 * m1                                                   # (8)
        check("(10)", x_euler + (0.5 * sigma_h / r_i) * delta1, x_probe)
        check("(12)", (1 - w) * beta + w * proj(d_i, m0), r2)
        delta2 = d_i - r2 * m0                                                  # (13)
        b_minus, b_plus = delta1 / (r * h), r * delta2 / h                      # (14)
        check("(15)", 0.5 * proj(b_plus + b_minus, b_plus - b_minus), eta_star)
        check("(16)", 0.5 * torch.sigmoid(eta_star.abs()), eta)
        b_theta = (-eta / r) * delta1 + r * (1 - eta) * delta2                 # (17)
        p = x_probe - x_euler - (0.5 * sigma_h / r_i) * b_theta                 # (18)
        check("(19)", proj(p, delta1) / sigma_h, zeta_star)
        z = zeta_star.abs() - 0.5                                               # (20)
        if n > 20:                                                              # (21)
            consistency = torch.sigmoid(proj(m0, (m0 - m1) / h) * (2 - rho ** 2))
            check("(21)", torch.sigmoid(-z * consistency), zeta)
        else:
            check("(21)", torch.sigmoid(z), zeta)
        check("(22)", x_euler + (0.5 * sigma_h / zeta) * b_theta, traj[i])


def test_the_gram_identities_equal_the_direct_formulas_off_the_golden_grid():
    """(14)–(15) and (18)–(19) through the Gram matrix equal the direct formulas on random
    inputs too, where the η* clamp does not fire (the golden cases clamp most entries)."""
    gen = torch.Generator().manual_seed(0)
    m0, m1, d_i = (torch.randn((3, 4, 8, 8), generator=gen, dtype=torch.float64) for _ in range(3))
    m1, d_i = m0 + 0.1 * m1, m0 + 0.1 * d_i          # nearby outputs, as along a trajectory
    x = torch.randn((3, 4, 8, 8), generator=gen, dtype=torch.float64)
    steps = reference.Steps(plan([14.6, 6.0, 2.0, 0.5, 0.0]), 0.5, "ve")
    sc = steps.scalars[2]
    record = []
    flat = lambda t: t.flatten(2)  # noqa: E731
    x_next, _, _ = reference.order2_step(flat(x), flat(m0), flat(m1), reference.InnerProducts(flat(m0), flat(m1)),
                                         sc, 0.5, False, lambda x_probe: flat(d_i), reference.Workspace(flat(x)),
                                         record)
    (internals,) = record
    r1, r_i, r2, eta = (internals[k].unsqueeze(-1) for k in ("r1", "r_i", "r2", "eta"))
    delta1, delta2 = m0 - r1 * m1, d_i - r2 * m0
    b_minus, b_plus = delta1 / (sc.r * sc.h), sc.r * delta2 / sc.h
    eta_star = 0.5 * proj(b_plus + b_minus, b_plus - b_minus)
    assert (eta_star.abs() < 0.99).any()
    torch.testing.assert_close(internals["eta_star"].unsqueeze(-1), eta_star, atol=1e-12, rtol=1e-12)
    x_euler = sc.rho * x + sc.sigma_h * m0
    b_theta = (-eta / sc.r) * delta1 + sc.r * (1 - eta) * delta2
    x_probe = x_euler + (0.5 * sc.sigma_h / r_i) * delta1
    p = x_probe - x_euler - (0.5 * sc.sigma_h / r_i) * b_theta
    torch.testing.assert_close(internals["zeta_star"].unsqueeze(-1), proj(p, delta1) / sc.sigma_h,
                               atol=1e-12, rtol=1e-12)
    zeta = internals["zeta"].unsqueeze(-1)
    torch.testing.assert_close(x_next.view_as(x), x_euler + (0.5 * sc.sigma_h / zeta) * b_theta,
                               atol=1e-12, rtol=1e-12)
