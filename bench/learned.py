"""A small learned denoiser (EDM preconditioning) on scikit-learn's 8x8 digits, plus a feature net.

The data ships inside scikit-learn (``sklearn.datasets.load_digits`` reads a file in the wheel),
so nothing is downloaded. Both networks are tiny MLPs; their weights live in ``bench/weights``
(``python -m bench.learned`` retrains them deterministically in a couple of minutes).

Noise convention: ``x = alpha * x0 + s * eps``. EDM preconditioning (Karras et al. 2022) is
written for the VE state ``x / alpha`` at ``kappa = s / alpha``; expressing it in (alpha, s)
keeps the flow case finite at t = 1 (alpha = 0).
"""
from __future__ import annotations

import argparse
import math
import time
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).resolve().parent / "weights"
DENOISER_FILE = WEIGHTS / "digits_edm_denoiser.safetensors"
FEATURES_FILE = WEIGHTS / "digits_feature_net.safetensors"
SIGMA_DATA = 0.5
EVENT_SHAPE = (1, 8, 8)
# The denoiser is trained for kappa in this range; beyond it the network's noise embedding is
# clamped (at kappa > 80 the output is the data mean to within the training error anyway).
KAPPA_RANGE = (2e-4, 80.0)


def digits_data(dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as [N, 1, 8, 8] in [-1, 1], and their labels [N]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=dtype) / 8.0 - 1.0
    return images.reshape(-1, *EVENT_SHAPE), torch.as_tensor(digits.target)


class NoiseEmbedding(nn.Module):
    """Fixed Fourier features of c_noise = log(kappa) / 4."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.register_buffer("frequencies", torch.exp(torch.linspace(0.0, math.log(64.0), dim // 2)))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class EDMDenoiser(nn.Module):
    """D(x; alpha, s) = c_skip x + c_out F(c_in x, c_noise) with F a residual MLP."""

    def __init__(self, dim: int = 64, hidden: int = 256, depth: int = 3, embed: int = 32):
        super().__init__()
        self.embedding = NoiseEmbedding(embed)
        self.input = nn.Linear(dim + embed, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden + embed, hidden) for _ in range(depth))
        self.output = nn.Linear(hidden, dim)

    def network(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(c_noise)
        h = nn.functional.silu(self.input(torch.cat([x_in.flatten(1), emb], 1)))
        for block in self.blocks:
            h = h + nn.functional.silu(block(torch.cat([h, emb], 1)))
        return self.output(h).reshape(x_in.shape)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        alpha, s = _per_sample(alpha, x), _per_sample(s, x)
        # EDM coefficients for y = x / alpha at kappa = s / alpha, multiplied through by alpha
        norm = torch.sqrt(s ** 2 + (SIGMA_DATA * alpha) ** 2)
        c_in = 1 / norm
        c_skip = SIGMA_DATA ** 2 * alpha / norm ** 2
        c_out = s * SIGMA_DATA / norm
        kappa = (s / alpha.clamp_min(1e-12)).clamp(*KAPPA_RANGE)
        c_noise = (kappa.log() / 4).flatten()
        out = self.network((c_in * x).to(torch.float32), c_noise.to(torch.float32))
        return c_skip * x + c_out * out.to(x.dtype)

    def denoise_ve(self, x, sigma):
        return self(x, torch.ones_like(torch.as_tensor(sigma, dtype=x.dtype)), sigma)

    def denoise_flow(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype)
        return self(x, 1 - t, t)


class FeatureNet(nn.Module):
    """A digit classifier; its 64-d penultimate layer is the feature space for Fréchet distances."""

    def __init__(self, dim: int = 64, hidden: int = 128, features: int = 64, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, features), nn.Tanh())
        self.head = nn.Linear(features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1).to(torch.float32)).to(torch.float64)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))


def _per_sample(value, x):
    value = torch.as_tensor(value, dtype=x.dtype)
    return value.reshape(-1, *([1] * (x.dim() - 1))) if value.dim() else value


@lru_cache(maxsize=None)
def load() -> tuple[EDMDenoiser, FeatureNet]:
    """The shipped denoiser and feature net (eval mode, no grad)."""
    from safetensors.torch import load_file

    if not (DENOISER_FILE.is_file() and FEATURES_FILE.is_file()):
        raise FileNotFoundError(f"missing weights in {WEIGHTS}; run `python -m bench.learned`")
    denoiser, feature_net = EDMDenoiser(), FeatureNet()
    denoiser.load_state_dict(load_file(DENOISER_FILE))
    feature_net.load_state_dict(load_file(FEATURES_FILE))
    for net in (denoiser, feature_net):
        net.eval().requires_grad_(False)
    return denoiser, feature_net


def train_denoiser(steps: int = 12000, batch: int = 512, seed: int = 0) -> EDMDenoiser:
    """EDM loss with log-kappa half uniform over KAPPA_RANGE, half EDM's N(-1.2, 1.2^2)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data, _ = digits_data()
    net = EDMDenoiser()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    lo, hi = (math.log(k) for k in KAPPA_RANGE)
    for step in range(steps):
        x0 = data[torch.randint(len(data), (batch,), generator=gen)]
        uniform = lo + (hi - lo) * torch.rand(batch, generator=gen)
        normal = -1.2 + 1.2 * torch.randn(batch, generator=gen)
        log_sigma = torch.where(torch.rand(batch, generator=gen) < 0.5, uniform, normal)
        sigma = log_sigma.exp().reshape(-1, 1, 1, 1)
        noisy = x0 + sigma * torch.randn(x0.shape, generator=gen)
        weight = (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2
        loss = (weight * (net(noisy, torch.ones_like(sigma), sigma) - x0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 2000 == 0 or step == steps - 1:
            print(f"[denoiser] step {step} loss {loss.item():.4f}", flush=True)
    return net.eval()


def train_feature_net(steps: int = 3000, seed: int = 0) -> FeatureNet:
    """Cross-entropy on the digits with mild noise augmentation (generated samples are not exact)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data, labels = digits_data()
    net = FeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for step in range(steps):
        idx = torch.randint(len(data), (256,), generator=gen)
        x = data[idx] + 0.1 * torch.randn(data[idx].shape, generator=gen)
        loss = nn.functional.cross_entropy(net(x), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (net(data).argmax(1) == labels).float().mean().item()
    print(f"[features] loss {loss.item():.4f} train accuracy {accuracy:.4f}", flush=True)
    return net.eval()


def main(argv=None):
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description="Train the digits denoiser and feature net.")
    parser.add_argument("--steps", type=int, default=12000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    WEIGHTS.mkdir(exist_ok=True)
    start = time.time()
    feature_net = train_feature_net()
    save_file({k: v.contiguous() for k, v in feature_net.state_dict().items()}, FEATURES_FILE)
    denoiser = train_denoiser(args.steps)
    save_file({k: v.contiguous() for k, v in denoiser.state_dict().items()}, DENOISER_FILE)
    print(f"trained in {time.time() - start:.0f} s -> {WEIGHTS}")


if __name__ == "__main__":
    main()
