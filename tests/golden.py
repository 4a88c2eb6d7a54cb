"""The official reference's golden vectors (tests/data/golden; its README says how they were
made) and the analytic denoisers they were made with, rebuilt from the manifest."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from tools.analytic import GaussianMixture, linear_gaussian_denoiser

GOLDEN_DIR = Path(__file__).parent / "data" / "golden"


@lru_cache(maxsize=1)
def manifest() -> dict:
    return json.loads((GOLDEN_DIR / "evodiff_reference_v1.json").read_text())


@lru_cache(maxsize=1)
def tensors() -> dict:
    return load_file(GOLDEN_DIR / "evodiff_reference_v1.safetensors")


def cases() -> list[dict]:
    return manifest()["cases"]


def case(name: str) -> dict:
    return next(c for c in cases() if c["name"] == name)


def tensor(name: str, key: str) -> torch.Tensor:
    return tensors()[f"{name}/{key}"]


def denoiser(c: dict):
    """D(x, sigma) for a case, evaluated in float64 whatever the input dtype, returned in it."""
    if c["denoiser"]["type"] == "linear":
        fn = linear_gaussian_denoiser
    else:
        prefix = c["denoiser"]["params"]
        t = tensors()
        fn = GaussianMixture.per_channel(t[f"{prefix}/means"], t[f"{prefix}/variances"],
                                         t[f"{prefix}/weights"]).denoise_ve
    return lambda x, sigma: fn(x.double(), sigma.double()).to(x.dtype)


class RecordingModel:
    """A k-diffusion model ``model(x, sigma * s_in)`` that records every call."""

    def __init__(self, fn):
        self.fn = fn
        self.calls_x, self.calls_sigma = [], []

    def __call__(self, x, sigma, **extra_args):
        self.calls_x.append(x.clone())
        self.calls_sigma.append(sigma.clone())
        return self.fn(x, sigma)
