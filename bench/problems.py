"""The benchmark problems and their exact (or converged) probability-flow ODE solutions.

* ``mixture``: a 10-component anisotropic Gaussian mixture in 64 dims, variances 0.01 to 1, unequal
  weights. Its posterior-mean denoiser is exact, so every error is solver error.
* ``digits``: ``bench.learned``'s denoiser on 8x8 digits; the "exact" answer is the same model solved
  to convergence, and model error shows against the data.
* ``*-cfg``: class-conditional versions for classifier-free guidance (``guided_denoiser``); the
  mixture's classes are groups of its components, so D_c and D_u are both exact.
* ``*-b``, ``*-b-cfg``: the validation problems, which no rule of the solver is tuned on.

Denoisers speak ComfyUI's convention for the family: x = x0 + sigma eps (eps, edm), x = (1 - sigma) x0
+ sigma eps (flow, any shift).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from tools.analytic import (ClassConditionalMixture, anisotropic_mixture, probability_flow_ode_flow,
                            probability_flow_ode_ve)

from . import learned
from .common import core_noise_schedule, is_flow
from .metrics import FrechetTarget, moments

# The ODE is integrated to this sigma (t for flow), then the denoiser gives the sigma = 0 limit;
# the difference D(x(s), s) - x(0) is O(s^2 / smallest variance), far below every error reported.
ODE_STOP = 1e-4
# Labels of a guided problem come from seed + this, so they are independent of the noise.
LABEL_SEED_OFFSET = 7_000_003


class MixtureProblem:
    name = "mixture"
    # 64 dims: enough to be hard, few enough that Fréchet distances from 2048 samples are stable
    event_shape = (4, 4, 4)
    n_components, seed = 10, 20251126

    def __init__(self):
        self.mixture = anisotropic_mixture(self.n_components, self.event_shape, self.seed)
        self.data_target = FrechetTarget(*self.mixture.moments())

    def denoiser(self, family: str):
        return self.mixture.denoise_flow if is_flow(family) else self.mixture.denoise_ve

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
        with torch.no_grad():   # one digit a sample, whatever the latent a subclass samples
            self.data_target = FrechetTarget(*moments(self.feature_net.features(data)))

    def denoiser(self, family: str):
        net = self.net.denoise_flow if is_flow(family) else self.net.denoise_ve
        return torch.no_grad()(net)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_net.features(x)

    def components(self, x: torch.Tensor):
        return None


class GuidedMixtureProblem(MixtureProblem):
    """The mixture with its components split into classes (component k is in class k mod n_classes)."""
    name = "mixture-cfg"
    n_classes = 5

    def __init__(self):
        super().__init__()
        classes = torch.arange(len(self.mixture.weights)) % self.n_classes
        self.conditional = ClassConditionalMixture(self.mixture, classes)

    def draw_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.conditional.sample_labels(n, generator)

    def guided_denoiser(self, family: str, labels: torch.Tensor, cfg: float):
        """fn(x, sigma) = D_u + cfg (D_c - D_u), exact; row b is conditioned on labels[b]."""
        denoise = self.conditional.denoise_flow if is_flow(family) else self.conditional.denoise_ve
        return lambda x, sigma: denoise(x, sigma, labels, cfg)


class GuidedDigitsProblem(DigitsProblem):
    """The digits with ``bench.learned``'s class-conditional (label-dropout) denoiser."""
    name = "digits-cfg"
    weights = learned.CONDITIONAL_FILE

    def __init__(self):
        learned.load_conditional(self.weights)   # a missing net fails here, saying how to train it
        super().__init__()

    def draw_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(learned.CLASSES, (n,), generator=generator)

    def guided_denoiser(self, family: str, labels: torch.Tensor, cfg: float):
        return learned.guided_denoiser(core_noise_schedule(family), labels, cfg, self.weights)


class ValidationMixtureProblem(MixtureProblem):
    """Another mixture geometry: 6 components from another seed."""
    name = "mixture-b"
    n_components, seed = 6, 31


class ValidationGuidedMixtureProblem(GuidedMixtureProblem):
    name = "mixture-b-cfg"
    n_components, seed, n_classes = 6, 31, 3


class WideDigitsProblem(DigitsProblem):
    """Two digits side by side, [1, 8, 16]: the same net on each half, as a convolutional model runs
    at a larger resolution. EVODiff's statistics pool over the whole latent, so its steps differ
    from the 8x8 problem's; the features are each half's, as two samples."""
    name = "digits-wide"
    event_shape = (1, 8, 16)

    def denoiser(self, family: str):
        half = super().denoiser(family)
        return lambda x, sigma: torch.cat([half(part, sigma) for part in x.chunk(2, dim=-1)], dim=-1)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.feature_net.features(part.contiguous()) for part in x.chunk(2, dim=-1)])


class ValidationGuidedDigitsProblem(GuidedDigitsProblem):
    """A second conditional digits net, trained from another seed."""
    name = "digits-b-cfg"
    weights = learned.VALIDATION_CONDITIONAL_FILE


PROBLEMS = {p.name: p for p in (MixtureProblem, DigitsProblem, GuidedMixtureProblem, GuidedDigitsProblem,
                                ValidationMixtureProblem, ValidationGuidedMixtureProblem,
                                ValidationGuidedDigitsProblem, WideDigitsProblem)}


@lru_cache(maxsize=None)
def problem(name: str):
    return PROBLEMS[name]()


def labels_for(prob, seeds: tuple[int, ...], n_per_seed: int) -> torch.Tensor:
    """Class labels [N] for a guided problem, one block per seed, aligned with noise_for's samples."""
    return torch.cat([prob.draw_labels(n_per_seed, torch.Generator().manual_seed(LABEL_SEED_OFFSET + seed))
                      for seed in seeds])


def noise_for(prob, seeds: tuple[int, ...], n_per_seed: int) -> torch.Tensor:
    """Unit Gaussian noise [N, *shape], float64; one independent block of samples per seed."""
    return torch.cat([torch.randn((n_per_seed, *prob.event_shape), dtype=torch.float64,
                                  generator=torch.Generator().manual_seed(seed)) for seed in seeds])


def exact_solution(prob, family: str, x_start: torch.Tensor, sigma_start: float,
                   steps: int, denoise=None) -> torch.Tensor:
    """x(0) of the probability-flow ODE from x_start at sigma_start (RK4 in log sigma or log t);
    ``denoise``: another denoiser than the problem's own (a guided one)."""
    denoise = denoise or prob.denoiser(family)
    solve = probability_flow_ode_flow if is_flow(family) else probability_flow_ode_ve
    with torch.no_grad():
        x_stop = solve(denoise, x_start, sigma_start, ODE_STOP, steps)
        return denoise(x_stop, torch.full((x_stop.shape[0],), ODE_STOP, dtype=x_stop.dtype))
