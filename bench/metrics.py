"""Metrics: RMS error against the exact solution, Fréchet distance, component changes, noise."""
from __future__ import annotations

import torch


def rms_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Over every element of every sample."""
    return (x.double() - reference.double()).pow(2).mean().sqrt().item()


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """‖x − reference‖ / ‖reference‖ over every element."""
    reference = reference.double()
    return ((x.double() - reference).norm() / reference.norm()).item()


def moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean [F] and unbiased covariance [F, F] of features [N, F]."""
    f = features.double().flatten(1)
    return f.mean(0), torch.cov(f.T)


class FrechetTarget:
    """Fréchet distance to a fixed Gaussian N(mean, cov): |m - mean|^2 + tr(C) + tr(cov) - 2 tr((cov^1/2 C
    cov^1/2)^1/2), the symmetric form of tr((C cov)^1/2); cov^1/2 once, then one eigenproblem a distance."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        self.mean = mean.double()
        self.cov = cov.double()
        eigval, eigvec = torch.linalg.eigh((self.cov + self.cov.T) / 2)
        self.cov_sqrt = (eigvec * eigval.clamp_min(0).sqrt()) @ eigvec.T

    def distance(self, mean: torch.Tensor, cov: torch.Tensor) -> float:
        mean, cov = mean.double(), cov.double()
        middle = self.cov_sqrt @ cov @ self.cov_sqrt
        cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
        fd = (mean - self.mean).pow(2).sum() + cov.trace() + self.cov.trace() - 2 * cross
        return fd.item()

    def __call__(self, features: torch.Tensor) -> float:
        return self.distance(*moments(features))


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """Fréchet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2)."""
    return FrechetTarget(mean2, cov2).distance(mean1, cov1)


def changed_component(labels: torch.Tensor, reference_labels: torch.Tensor) -> int:
    return int((labels != reference_labels).sum())


def split_half_noise(metric, *paired: torch.Tensor) -> float:
    """Run-to-run noise (standard error) of ``metric(*paired)`` on all N samples: each half has variance
    2 s^2 when the full estimate has s^2, so s ~ |A - B| / 2 for the metric A, B on the two halves."""
    n = paired[0].shape[0] // 2
    return abs(metric(*(p[:n] for p in paired)) - metric(*(p[n:2 * n] for p in paired))) / 2


def metric_score(metric: str, value: float) -> float:
    """What a sampler is ranked by (lower is better): excess FD can be negative by chance, so by |value|."""
    return abs(value) if metric == "excess_fd" else value
