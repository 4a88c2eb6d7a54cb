"""The benchmark problems and their exact (or converged) probability-flow ODE solutions.

* ``mixture``: a 10-component Gaussian mixture on [4, 4, 4] latents (64 dims), anisotropic
  diagonal covariances (variances from 0.01 to 1 per dimension), unequal weights, about unit
  variance overall. Its posterior-mean denoiser is exact, so every error is solver error.
* ``digits``: the learned EDM denoiser of ``bench.learned`` on 8x8 digits; here the "exact"
  answer is the same model solved to convergence, and model error shows against the data.

A denoiser is given in ComfyUI's sigma convention for the family: ``eps`` means
x = x0 + sigma * eps, ``flow`` means x = (1 - sigma) * x0 + sigma * eps.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from tools.analytic import GaussianMixture, probability_flow_ode_flow, probability_flow_ode_ve

from . import learned
from .metrics import FrechetTarget, moments

# The ODE is integrated to this sigma (t for flow), then the denoiser gives the sigma = 0 limit;
# the difference D(x(s), s) - x(0) is O(s^2 / smallest variance), far below every error reported.
ODE_STOP = 1e-4


class MixtureProblem:
    name = "mixture"
    # 64 dims: enough to be hard, few enough that Fréchet distances from 2048 samples are stable
    event_shape = (4, 4, 4)

    def __init__(self, components: int = 10, seed: int = 20251126):
        gen = torch.Generator().manual_seed(seed)
        shape = (components, *self.event_shape)
        log_var = torch.empty(shape, dtype=torch.float64).uniform_(-4.6, 0.0, generator=gen)
        variances = log_var.exp()                      # 0.01 .. 1, a different value per dimension
        spread = (1 - variances.mean()).sqrt()          # total variance about 1 per dimension
        means = spread * torch.randn(shape, generator=gen, dtype=torch.float64)
        weights = torch.softmax(torch.empty(components, dtype=torch.float64).uniform_(-1, 1, generator=gen), 0)
        self.mixture = GaussianMixture(means, variances, weights)
        self.data_target = FrechetTarget(*self.mixture.moments())

    def denoiser(self, family: str):
        return self.mixture.denoise_flow if family == "flow" else self.mixture.denoise_ve

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def components(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixture.component(x)


class DigitsProblem:
    name = "digits"
    event_shape = learned.EVENT_SHAPE

    def __init__(self):
        self.net, self.feature_net = learned.load()
        data, _ = learned.digits_data(torch.float64)
        self.data_target = FrechetTarget(*moments(self.features(data)))

    def denoiser(self, family: str):
        net = self.net.denoise_flow if family == "flow" else self.net.denoise_ve
        return torch.no_grad()(net)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_net.features(x)

    def components(self, x: torch.Tensor):
        return None


@lru_cache(maxsize=None)
def problem(name: str):
    return {"mixture": MixtureProblem, "digits": DigitsProblem}[name]()


def noise_for(prob, seeds: tuple[int, ...], n_per_seed: int) -> torch.Tensor:
    """Unit Gaussian noise [N, *shape], float64; one independent block of samples per seed."""
    blocks = [torch.randn((n_per_seed, *prob.event_shape), dtype=torch.float64,
                          generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    return torch.cat(blocks)


def exact_solution(prob, family: str, x_start: torch.Tensor, sigma_start: float,
                   steps: int) -> torch.Tensor:
    """x(0) of the probability-flow ODE from x_start at sigma_start (RK4 in log sigma or log t)."""
    denoise = prob.denoiser(family)
    solve = probability_flow_ode_flow if family == "flow" else probability_flow_ode_ve
    with torch.no_grad():
        x_stop = solve(denoise, x_start, sigma_start, ODE_STOP, steps)
        return denoise(x_stop, torch.full((x_stop.shape[0],), ODE_STOP, dtype=x_stop.dtype))
