"""The benchmark's metric functions on cases with known answers."""
import pytest
import torch

from bench.metrics import (FrechetTarget, changed_component, frechet_distance, moments, rms_error,
                           split_half_noise)


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    # for commuting (diagonal) covariances FD = |m1 - m2|^2 + sum (sqrt a - sqrt b)^2
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 0.25])
    expected = (m1 - m2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()
    assert frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(expected.item(), abs=1e-10)


def test_frechet_distance_is_symmetric_rotation_invariant_and_zero_on_itself():
    gen = torch.Generator().manual_seed(0)
    A, B = torch.randn(6, 6, generator=gen, dtype=torch.float64), torch.randn(6, 6, generator=gen, dtype=torch.float64)
    c1, c2 = A @ A.T + 0.1 * torch.eye(6), B @ B.T + 0.1 * torch.eye(6)
    m1, m2 = torch.randn(6, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    fd = frechet_distance(m1, c1, m2, c2)
    assert frechet_distance(m2, c2, m1, c1) == pytest.approx(fd, rel=1e-8)
    assert frechet_distance(q @ m1, q @ c1 @ q.T, q @ m2, q @ c2 @ q.T) == pytest.approx(fd, rel=1e-8)
    assert abs(frechet_distance(m1, c1, m1, c1)) < 1e-8


def test_frechet_distance_from_samples_approaches_the_exact_value():
    gen = torch.Generator().manual_seed(1)
    target = FrechetTarget(torch.zeros(3, dtype=torch.float64), torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
    samples = torch.randn(200_000, 3, generator=gen, dtype=torch.float64) * torch.tensor([2.0, 1.0, 1.0]) + 0.5
    exact = 3 * 0.25 + (2 - 1) ** 2 + (1 - 2 ** 0.5) ** 2 + (1 - 3 ** 0.5) ** 2
    assert target(samples) == pytest.approx(exact, abs=0.02)


def test_moments_rms_and_component_changes():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    mean, cov = moments(x)
    assert torch.allclose(mean, torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert torch.allclose(cov, torch.tensor([[2.0, 4.0], [4.0, 8.0]], dtype=torch.float64))
    assert rms_error(torch.zeros(2, 2), torch.tensor([[3.0, 0.0], [0.0, 4.0]])) == pytest.approx(2.5)
    assert changed_component(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 1])) == 2


def test_split_half_noise_is_about_the_standard_error_of_a_mean():
    gen = torch.Generator().manual_seed(2)
    estimates = []
    for _ in range(400):
        x = torch.randn(100, generator=gen, dtype=torch.float64)
        estimates.append(split_half_noise(lambda v: v.mean().item(), x))
    # E|A - B| / 2 for two means of 50 unit normals = sqrt(2/50) * sqrt(2/pi) / 2; true SE = 0.1
    assert sum(estimates) / len(estimates) == pytest.approx((2 / 50) ** 0.5 * (2 / torch.pi) ** 0.5 / 2, rel=0.1)
