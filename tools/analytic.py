"""Analytic test problems: data whose exact denoiser (posterior mean) is known in closed form.

With an exact denoiser every error a sampler makes is solver error. Two noise conventions:

* VE / k-diffusion (ComfyUI EPS and V models): ``x = x0 + sigma * eps``.
* flow (ComfyUI CONST models: SD3, Flux, Wan): ``x = (1 - t) * x0 + t * eps``, t = sigma in [0, 1].
  ``x / (1 - t) = x0 + kappa * eps`` with ``kappa = t / (1 - t)``, so
  ``D_flow(x, t) = D_ve(x / (1 - t), t / (1 - t))``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GaussianMixture:
    """x0 ~ sum_k weights[k] * N(means[k], diag(variances[k])), each batch element independent.

    ``means`` is [K, *shape]; ``variances`` is [K, ...] broadcastable to ``means`` (e.g. [K, C]
    reshaped to [K, C, 1, 1] for per-channel variances); ``weights`` is [K] and sums to 1.
    """

    means: torch.Tensor
    variances: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def per_channel(cls, means, variances_kc, weights):
        """The golden-vector layout: variances given per (component, channel)."""
        extra = means.dim() - 2
        return cls(means, variances_kc.reshape(*variances_kc.shape, *([1] * extra)), weights)

    @property
    def event_shape(self):
        return tuple(self.means.shape[1:])

    def log_responsibilities(self, x: torch.Tensor, sigma: torch.Tensor, alpha=1.0,
                             log_prior: torch.Tensor | None = None) -> torch.Tensor:
        """[B, K] log posterior weight of each component given x = alpha * x0 + sigma * eps.

        ``log_prior`` ([B, K], optional) replaces log(weights) per sample: a sub-mixture per row
        (-inf drops a component), as a class-conditional denoiser needs.
        """
        alpha = _per_sample(alpha, x.dim() + 1)
        var = alpha ** 2 * self.variances.expand_as(self.means).unsqueeze(0) + _per_sample(sigma, x.dim() + 1) ** 2
        diff = x.unsqueeze(1) - alpha * self.means.unsqueeze(0)
        dims = tuple(range(2, diff.dim()))
        log_lik = -0.5 * (torch.log(var).sum(dims) + (diff * diff / var).sum(dims))
        prior = torch.log(self.weights).unsqueeze(0) if log_prior is None else log_prior
        return prior + log_lik

    def denoise(self, x: torch.Tensor, alpha, sigma, log_prior: torch.Tensor | None = None) -> torch.Tensor:
        """Exact E[x0 | alpha * x0 + sigma * eps = x]; alpha = 0 (pure noise) gives the data mean.

        ``log_prior``: per-sample component log weights, as in ``log_responsibilities``.
        """
        gamma = torch.softmax(self.log_responsibilities(x, sigma, alpha, log_prior), dim=1)  # [B, K]
        return self.weighted_denoise(x, alpha, sigma, gamma)

    def weighted_denoise(self, x: torch.Tensor, alpha, sigma, gamma: torch.Tensor) -> torch.Tensor:
        """sum_k gamma[b, k] E[x0 | x, component k]: ``denoise`` for given weights gamma [B, K].

        Any linear combination of posterior means (guidance's D_u + w (D_c - D_u)) is one such
        sum, so it costs one pass over the components.
        """
        a = _per_sample(alpha, x.dim() + 1)
        var = self.variances.expand_as(self.means).unsqueeze(0)
        s2 = _per_sample(sigma, x.dim() + 1) ** 2
        diff = x.unsqueeze(1) - a * self.means.unsqueeze(0)
        # per component: mu + Cov(x0, x) Var(x)^-1 (x - E x), all diagonal
        per_component = self.means.unsqueeze(0) + a * var / (a ** 2 * var + s2) * diff
        return (_per_sample(gamma, per_component.dim(), keep=2) * per_component).sum(1)

    def denoise_ve(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Exact E[x0 | x0 + sigma * eps = x]; ``sigma`` is a scalar or one value per sample."""
        return self.denoise(x, 1.0, sigma)

    def denoise_flow(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact E[x0 | (1 - t) * x0 + t * eps = x], t in [0, 1] (t = 1 included)."""
        t = torch.as_tensor(t, dtype=x.dtype)
        return self.denoise(x, 1 - t, t)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean [D] and covariance [D, D] of the flattened data distribution."""
        mu = self.means.flatten(1)                                   # [K, D]
        var = self.variances.expand_as(self.means).flatten(1)        # [K, D]
        w = self.weights.to(mu.dtype)
        mean = w @ mu
        centred = mu - mean
        cov = torch.diag(w @ var) + centred.T @ (w[:, None] * centred)
        return mean, cov

    def component(self, x0: torch.Tensor) -> torch.Tensor:
        """[B] index of the most likely component for clean samples x0 (sigma = 0)."""
        return self.log_responsibilities(x0, torch.zeros(())).argmax(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn((n, *self.event_shape), generator=generator, dtype=self.means.dtype)
        return self.means[k] + self.variances.expand_as(self.means)[k].sqrt() * noise


def anisotropic_mixture(components: int, event_shape: tuple[int, ...], seed: int,
                        scale: float = 1.0) -> GaussianMixture:
    """A float64 mixture like the benchmark's: diagonal variances from 0.01 to 1, a different one
    per dimension, unequal weights, and means spread so that the data have about unit variance
    per dimension (× scale²)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (components, *event_shape)
    variances = torch.empty(shape, dtype=torch.float64).uniform_(-4.6, 0.0, generator=gen).exp()
    spread = (1 - variances.mean()).sqrt()          # the means carry the rest of the unit variance
    means = spread * torch.randn(shape, generator=gen, dtype=torch.float64)
    weights = torch.softmax(torch.empty(components, dtype=torch.float64).uniform_(-1, 1, generator=gen), 0)
    return GaussianMixture(means * scale, variances * scale ** 2, weights)


@dataclass
class ClassConditionalMixture:
    """A GaussianMixture whose components are partitioned into classes, for guidance with exact D.

    p(x0 | c) is the sub-mixture of class c's components (their weights renormalised), p(x0) the
    full mixture, so D_c and D_u are both exact posterior means. The guided denoiser is the one
    classifier-free guidance forms, D = D_u + cfg (D_c - D_u); at cfg > 1 it is no posterior
    mean of any distribution, so only an exact ODE solution of it can serve as the reference.
    """

    mixture: GaussianMixture
    classes: torch.Tensor          # [K] class index of each component, 0 .. n_classes - 1

    @property
    def n_classes(self) -> int:
        return int(self.classes.max()) + 1

    def class_weights(self) -> torch.Tensor:
        """[C] p(c): the total weight of each class's components."""
        return torch.zeros(self.n_classes, dtype=self.mixture.weights.dtype).index_add_(
            0, self.classes, self.mixture.weights)

    def sub_mixture(self, label: int) -> GaussianMixture:
        """p(x0 | c = label) as a GaussianMixture of its own."""
        keep = self.classes == label
        weights = self.mixture.weights[keep]
        variances = self.mixture.variances.expand_as(self.mixture.means)[keep]
        return GaussianMixture(self.mixture.means[keep], variances, weights / weights.sum())

    def log_prior(self, labels: torch.Tensor) -> torch.Tensor:
        """[B, K] log p(k | c = labels[b]): -inf outside the row's class."""
        inside = self.classes.unsqueeze(0) == torch.as_tensor(labels).reshape(-1, 1)
        log_w = torch.log(self.mixture.weights).unsqueeze(0).expand(inside.shape)
        masked = torch.where(inside, log_w, torch.full_like(log_w, -math.inf))
        return masked - torch.logsumexp(masked, dim=1, keepdim=True)

    def denoise(self, x: torch.Tensor, alpha, sigma, labels: torch.Tensor, cfg: float = 1.0) -> torch.Tensor:
        """D_u + cfg (D_c - D_u) for x = alpha * x0 + sigma * eps, row b conditioned on labels[b].

        Both means share the likelihoods; only the priors differ, so the guided mean is one
        weighted sum with weights gamma_u + cfg (gamma_c - gamma_u).
        """
        log_u = self.mixture.log_responsibilities(x, sigma, alpha)
        log_c = log_u - torch.log(self.mixture.weights).unsqueeze(0) + self.log_prior(labels)
        gamma_u, gamma_c = torch.softmax(log_u, dim=1), torch.softmax(log_c, dim=1)
        return self.mixture.weighted_denoise(x, alpha, sigma, gamma_u + (gamma_c - gamma_u) * cfg)

    def denoise_ve(self, x, sigma, labels, cfg: float = 1.0) -> torch.Tensor:
        return self.denoise(x, 1.0, sigma, labels, cfg)

    def denoise_flow(self, x, t, labels, cfg: float = 1.0) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype)
        return self.denoise(x, 1 - t, t, labels, cfg)

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n] class labels drawn from p(c), so that guidance at cfg 1 samples the data."""
        return torch.multinomial(self.class_weights(), n, replacement=True, generator=generator)


def linear_gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact denoiser for x0 ~ N(0, I): D(x, sigma) = x / (1 + sigma^2)."""
    return x / (1 + _per_sample(sigma, x.dim()) ** 2)


def _per_sample(value, ndim: int, keep: int = 1) -> torch.Tensor:
    """Reshape a scalar or a per-sample tensor so it broadcasts against an ndim-D batch tensor."""
    value = torch.as_tensor(value)
    if value.dim() == 0:
        return value
    return value.reshape(*value.shape[:keep], *([1] * (ndim - keep)))


def probability_flow_ode_ve(denoiser, x: torch.Tensor, sigma_from: float, sigma_to: float,
                            steps: int = 2000) -> torch.Tensor:
    """Solve dx/dsigma = (x - D(x, sigma)) / sigma from sigma_from to sigma_to (> 0) accurately.

    Classic RK4 in s = log(sigma) (dx/ds = x - D), uniform in s: smooth and well conditioned for
    a data-prediction denoiser. Check convergence by comparing ``steps`` and ``2 * steps``.
    """
    if sigma_to <= 0:
        raise ValueError("integrate to a positive sigma, then apply the denoiser for sigma = 0")
    return _rk4_in_log_time(denoiser, x, sigma_from, sigma_to, steps)


def probability_flow_ode_flow(denoiser, x: torch.Tensor, t_from: float, t_to: float,
                              steps: int = 2000) -> torch.Tensor:
    """Flow-matching probability-flow ODE, x = (1 - t) x0 + t eps: dx/dt = (x - D(x, t)) / t.

    The same equation as the VE one with t in place of sigma (the velocity is (x - D) / t), so
    the same RK4 uniform in log t applies; t_from = 1 (pure noise) is allowed, t_to must be > 0.
    """
    if not 0 < t_to < t_from <= 1:
        raise ValueError("need 0 < t_to < t_from <= 1; apply the denoiser for t = 0 at the end")
    return _rk4_in_log_time(denoiser, x, t_from, t_to, steps)


def _rk4_in_log_time(denoiser, x, time_from, time_to, steps):
    """RK4 for dx/ds = x - D(x, e^s), uniform in s = log(time); time is sigma (VE) or t (flow)."""
    s_grid = torch.linspace(math.log(time_from), math.log(time_to), steps + 1, dtype=torch.float64)

    def f(x_, s_):
        return x_ - denoiser(x_, torch.full((x_.shape[0],), math.exp(s_), dtype=x_.dtype))

    x = x.clone()
    for s0, s1 in zip(s_grid[:-1].tolist(), s_grid[1:].tolist()):
        ds = s1 - s0
        k1 = f(x, s0)
        k2 = f(x + 0.5 * ds * k1, s0 + 0.5 * ds)
        k3 = f(x + 0.5 * ds * k2, s0 + 0.5 * ds)
        k4 = f(x + ds * k3, s1)
        x = x + ds / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


class CountingModel:
    """A k-diffusion-style model ``model(x, sigma, **extra_args)`` around ``denoise(x, sigma)``
    that counts its calls, so a test or benchmark measures NFE instead of assuming it."""

    def __init__(self, denoise):
        self.denoise, self.calls = denoise, 0

    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        return self.denoise(x, sigma)


def one_sample_at_a_time(model):
    """Calls ``model(x, sigma)`` on every sample alone, so batch effects can only come from the sampler."""
    return lambda x, sigma, **kw: torch.cat([model(x[b:b + 1], sigma[b:b + 1]) for b in range(x.shape[0])])


def gaussian_denoiser(mean, std):
    """E[x0 | x] for x = x0 + σε, x0 ~ N(mean, std²) per channel (VE / EPS convention)."""
    def denoise(x, sigma):
        s2 = sigma.reshape(-1, *([1] * (x.dim() - 1))) ** 2
        return mean + std ** 2 / (std ** 2 + s2) * (x - mean)
    return denoise


def gaussian_ode_solution(x, sigma_from, sigma_to, mean, std):
    """The probability-flow ODE for x0 ~ N(mean, std²) from σ_from to σ_to, in closed form:
    x − mean scales by sqrt((std² + σ_to²)/(std² + σ_from²))."""
    return mean + (x - mean) * torch.sqrt((std ** 2 + sigma_to ** 2) / (std ** 2 + sigma_from ** 2))
