"""A small learned denoiser (EDM preconditioning) on scikit-learn's 8x8 digits, plus a feature net.

The data ships inside scikit-learn, so nothing is downloaded. The nets are tiny MLPs with weights in
``bench/weights``, retrained deterministically by ``python -m bench.learned`` (a couple of minutes;
``--conditional``: the class-conditional denoiser only, about five minutes on 2 idle cores). That one
is trained with label dropout, so one net gives both D_c and D_u, as classifier-free guidance needs.

Noise convention: ``x = alpha * x0 + s * eps``. EDM preconditioning (Karras et al. 2022) is written for
the VE state ``x / alpha`` at ``kappa = s / alpha``; in (alpha, s) the flow case stays finite at t = 1.
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
CONDITIONAL_FILE = WEIGHTS / "digits_cond_edm_denoiser.safetensors"
# A second class-conditional denoiser, trained from another seed with fewer steps: a validation
# problem the step rule is never tuned on (python -m bench.learned --conditional --validation).
VALIDATION_CONDITIONAL_FILE = WEIGHTS / "digits_cond_edm_denoiser_seed1.safetensors"
VALIDATION_SEED, VALIDATION_STEPS = 1, 8000
SIGMA_DATA = 0.5
EVENT_SHAPE = (1, 8, 8)
# The denoiser is trained for kappa in this range; beyond it the network's noise embedding is
# clamped (at kappa > 80 the output is the data mean to within the training error anyway).
KAPPA_RANGE = (2e-4, 80.0)
CLASSES = 10
NULL_LABEL = CLASSES      # the extra label the conditional net reads as "no label"
# Labels are replaced by NULL_LABEL at this rate in training, so D_u is learned by the same net.
LABEL_DROPOUT = 0.15


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
    """D(x; alpha, s[, label]) = c_skip x + c_out F(c_in x, c_noise[, label]) with F a residual MLP; with
    ``classes`` a label embedding (label ``classes``: none) joins the noise embedding at every layer."""

    def __init__(self, dim: int = 64, hidden: int = 256, depth: int = 3, embed: int = 32,
                 classes: int = 0):
        super().__init__()
        self.classes = classes
        conditioning = 2 * embed if classes else embed
        self.embedding = NoiseEmbedding(embed)
        self.input = nn.Linear(dim + conditioning, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden + conditioning, hidden) for _ in range(depth))
        self.output = nn.Linear(hidden, dim)
        # created last, so an unconditional net initialises exactly as before from the same seed
        self.label_embedding = nn.Embedding(classes + 1, embed) if classes else None

    def network(self, x_in: torch.Tensor, c_noise: torch.Tensor, labels=None) -> torch.Tensor:
        emb = self.embedding(c_noise)
        if self.label_embedding is not None:
            emb = torch.cat([emb, self.label_embedding(labels)], 1)
        h = nn.functional.silu(self.input(torch.cat([x_in.flatten(1), emb], 1)))
        for block in self.blocks:
            h = h + nn.functional.silu(block(torch.cat([h, emb], 1)))
        return self.output(h).reshape(x_in.shape)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, s: torch.Tensor, labels=None) -> torch.Tensor:
        alpha, s = _per_sample(alpha, x), _per_sample(s, x)
        # EDM coefficients for y = x / alpha at kappa = s / alpha, multiplied through by alpha
        norm = torch.sqrt(s ** 2 + (SIGMA_DATA * alpha) ** 2)
        c_in = 1 / norm
        c_skip = SIGMA_DATA ** 2 * alpha / norm ** 2
        c_out = s * SIGMA_DATA / norm
        kappa = (s / alpha.clamp_min(1e-12)).clamp(*KAPPA_RANGE)
        # the noise embedding needs one c_noise per row, also when sigma is one shared value
        c_noise = (kappa.log() / 4).flatten().expand(x.shape[0])
        out = self.network((c_in * x).to(torch.float32), c_noise.to(torch.float32), self._labels(labels, x))
        return c_skip * x + c_out * out.to(x.dtype)

    def _labels(self, labels, x):
        """One label per row; a conditional net given none is asked for D_u (the null label)."""
        if not self.classes:
            if labels is not None:
                raise ValueError("this denoiser is unconditional; it takes no labels")
            return None
        if labels is None:
            labels = self.classes
        return torch.as_tensor(labels, dtype=torch.long, device=x.device).expand(x.shape[0])

    def denoise_ve(self, x, sigma, labels=None):
        return self(x, torch.ones_like(torch.as_tensor(sigma, dtype=x.dtype)), sigma, labels)

    def denoise_flow(self, x, t, labels=None):
        t = torch.as_tensor(t, dtype=x.dtype)
        return self(x, 1 - t, t, labels)


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


@lru_cache(maxsize=None)
def load_conditional(path: Path = CONDITIONAL_FILE) -> EDMDenoiser:
    """A shipped class-conditional denoiser (eval mode, no grad); labels 0..9 or NULL_LABEL."""
    from safetensors.torch import load_file

    if not path.is_file():
        flags = " --validation" if path == VALIDATION_CONDITIONAL_FILE else ""
        raise FileNotFoundError(f"missing {path}; run `python -m bench.learned --conditional{flags}`")
    denoiser = EDMDenoiser(classes=CLASSES)
    denoiser.load_state_dict(load_file(path))
    return denoiser.eval().requires_grad_(False)


def guided_denoiser(family: str, labels: torch.Tensor, cfg: float, path: Path = CONDITIONAL_FILE):
    """fn(x, sigma) -> D_u + cfg (D_c - D_u), row b for labels[b]: classifier-free guidance as ComfyUI
    computes it, cond and uncond in one batch, and D_c alone at cfg = 1. ``family``: "eps" or "ve"
    (x = x0 + sigma eps), or "flow" (x = (1 - sigma) x0 + sigma eps); ``path``: which conditional net.
    """
    if family not in ("eps", "ve", "flow"):
        raise ValueError(f"unknown family {family!r}; expected 'eps', 've' or 'flow'")
    net = load_conditional(path)
    denoise = net.denoise_flow if family == "flow" else net.denoise_ve
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    both = torch.cat([labels, torch.full_like(labels, NULL_LABEL)])
    skip_uncond = math.isclose(cfg, 1.0)

    @torch.no_grad()
    def guided(x: torch.Tensor, sigma) -> torch.Tensor:
        if x.shape[0] != len(labels):
            raise ValueError(f"batch of {x.shape[0]} rows for {len(labels)} labels")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).flatten().expand(x.shape[0])
        if skip_uncond:
            return denoise(x, sigma, labels.to(x.device))
        cond, uncond = denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), both.to(x.device)).chunk(2)
        return uncond + (cond - uncond) * cfg

    return guided


def train_denoiser(steps: int = 12000, batch: int = 512, seed: int = 0,
                   label_dropout: float | None = None) -> EDMDenoiser:
    """EDM loss with log-kappa half uniform over KAPPA_RANGE, half EDM's N(-1.2, 1.2^2); ``label_dropout``:
    class-conditional, its draws last in each step, so the unconditional run draws what it always did."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data, labels = digits_data()
    conditional = label_dropout is not None
    net = EDMDenoiser(classes=CLASSES if conditional else 0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    lo, hi = (math.log(k) for k in KAPPA_RANGE)
    name = "conditional" if conditional else "denoiser"
    for step in range(steps):
        idx = torch.randint(len(data), (batch,), generator=gen)
        x0 = data[idx]
        uniform = lo + (hi - lo) * torch.rand(batch, generator=gen)
        normal = -1.2 + 1.2 * torch.randn(batch, generator=gen)
        log_sigma = torch.where(torch.rand(batch, generator=gen) < 0.5, uniform, normal)
        sigma = log_sigma.exp().reshape(-1, 1, 1, 1)
        noisy = x0 + sigma * torch.randn(x0.shape, generator=gen)
        cond = torch.where(torch.rand(batch, generator=gen) < label_dropout, NULL_LABEL, labels[idx]) \
            if conditional else None
        weight = (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2
        loss = _step(opt, (weight * (net(noisy, torch.ones_like(sigma), sigma, cond) - x0) ** 2).mean())
        sched.step()
        if step % 2000 == 0 or step == steps - 1:
            print(f"[{name}] step {step} loss {loss.item():.4f}", flush=True)
    return net.eval()


def _step(opt, loss: torch.Tensor) -> torch.Tensor:
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


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
        loss = _step(opt, nn.functional.cross_entropy(net(x), labels[idx]))
    accuracy = (net(data).argmax(1) == labels).float().mean().item()
    print(f"[features] loss {loss.item():.4f} train accuracy {accuracy:.4f}", flush=True)
    return net.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the digits denoisers and feature net.")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoiser training steps (default 12000; --conditional: 20000)")
    parser.add_argument("--conditional", action="store_true",
                        help=f"train only the class-conditional denoiser -> {CONDITIONAL_FILE.name}")
    parser.add_argument("--validation", action="store_true",
                        help=f"with --conditional: the validation model (seed {VALIDATION_SEED}, "
                             f"{VALIDATION_STEPS} steps) -> {VALIDATION_CONDITIONAL_FILE.name}")
    args = parser.parse_args(argv)
    WEIGHTS.mkdir(exist_ok=True)
    start = time.time()
    if args.conditional:   # (threads, seed, steps, file)
        threads, seed, steps, path = ((1, VALIDATION_SEED, VALIDATION_STEPS, VALIDATION_CONDITIONAL_FILE)
                                      if args.validation else (2, 0, 20000, CONDITIONAL_FILE))
        torch.set_num_threads(threads)
        _save(train_denoiser(args.steps or steps, seed=seed, label_dropout=LABEL_DROPOUT), path)
    else:
        torch.set_num_threads(1)
        _save(train_feature_net(), FEATURES_FILE)
        _save(train_denoiser(args.steps or 12000), DENOISER_FILE)
    print(f"trained in {time.time() - start:.0f} s -> {WEIGHTS}")


def _save(net: nn.Module, path: Path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)


if __name__ == "__main__":
    main()
