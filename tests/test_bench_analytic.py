"""The exact denoisers and ODE solvers the benchmark measures against (tools/analytic.py)."""
import math

import pytest
import torch

from bench.problems import MixtureProblem
from tools.analytic import GaussianMixture, probability_flow_ode_flow, probability_flow_ode_ve


@pytest.fixture(scope="module")
def mixture() -> GaussianMixture:
    return MixtureProblem().mixture


def test_benchmark_mixture_is_hard_enough(mixture):
    mean, cov = mixture.moments()
    assert mean.numel() >= 64 and mixture.means.shape[0] >= 8
    assert 0.8 < cov.diagonal().mean() < 1.2                       # about unit variance
    v = mixture.variances.expand_as(mixture.means)
    assert v.max() / v.min() > 50                                   # anisotropic


def test_posterior_mean_matches_a_monte_carlo_estimate(mixture):
    # E[x0 | x] by self-normalised importance sampling from the prior
    gen = torch.Generator().manual_seed(4)
    x0 = mixture.sample(100_000, gen)
    sigma = 3.0
    x = mixture.sample(1, gen) + sigma * torch.randn((1, *mixture.event_shape), generator=gen, dtype=torch.float64)
    w = torch.softmax(-0.5 * ((x - x0) ** 2).flatten(1).sum(1) / sigma ** 2, 0)
    estimate = (w[:, None] * x0.flatten(1)).sum(0)
    assert 1 / (w ** 2).sum() > 1000                                  # effective sample size
    standard_error = (w[:, None] ** 2 * (x0.flatten(1) - estimate) ** 2).sum(0).sqrt()
    exact = mixture.denoise_ve(x, torch.tensor([sigma])).flatten()
    # within 4.5 standard errors in all 64 coordinates (sigma 5% off fails this by far)
    assert ((estimate - exact).abs() / standard_error).max() < 4.5


def test_moments_match_samples(mixture):
    x = mixture.sample(200_000, torch.Generator().manual_seed(4)).flatten(1)
    mean, cov = mixture.moments()
    assert (x.mean(0) - mean).abs().max() < 0.02
    assert (torch.cov(x.T) - cov).abs().max() < 0.03


def test_flow_denoiser_is_the_ve_one_rescaled_and_finite_at_pure_noise(mixture):
    x = torch.randn((3, *mixture.event_shape), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    ve = mixture.denoise_ve(x / (1 - t)[:, None, None, None], t / (1 - t))
    assert torch.allclose(mixture.denoise_flow(x, t), ve, atol=1e-12)
    at_noise = mixture.denoise_flow(x, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(at_noise, (mixture.weights[:, None, None, None] * mixture.means).sum(0).expand_as(x))


def test_ode_solvers_match_the_gaussian_closed_form():
    # x0 ~ N(0, I): VE solution x(s) = x(S) sqrt(1 + s^2) / sqrt(1 + S^2); flow x(t) scales with sqrt((1-t)^2 + t^2)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ve = probability_flow_ode_ve(lambda y, s: y / (1 + s[:, None] ** 2), x, 14.6, 0.03, steps=200)
    assert torch.allclose(ve, x * math.sqrt(1 + 0.03 ** 2) / math.sqrt(1 + 14.6 ** 2), rtol=1e-8)
    flow_denoiser = lambda y, t: (1 - t[:, None]) * y / ((1 - t[:, None]) ** 2 + t[:, None] ** 2)  # noqa: E731
    flow = probability_flow_ode_flow(flow_denoiser, x, 1.0, 1e-3, steps=200)
    assert torch.allclose(flow, x * math.sqrt((1 - 1e-3) ** 2 + 1e-6), rtol=1e-8)
