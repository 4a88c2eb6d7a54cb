"""The shipped learned denoiser and feature net (bench/weights)."""
import torch

from bench import learned


def test_weights_are_small_and_load():
    assert learned.DENOISER_FILE.stat().st_size + learned.FEATURES_FILE.stat().st_size < 5e6
    denoiser, feature_net = learned.load()
    data, labels = learned.digits_data()
    assert (feature_net(data).argmax(1) == labels).float().mean() > 0.95


def test_denoiser_limits_and_quality():
    denoiser, _ = learned.load()
    data, _ = learned.digits_data(torch.float64)
    gen = torch.Generator().manual_seed(0)
    x0 = data[:256]
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        # almost no noise: the identity; pure noise (flow t = 1): close to the data mean
        assert (denoiser.denoise_ve(x0 + 1e-3 * noise, torch.full((256,), 1e-3)) - x0).abs().max() < 0.02
        at_noise = denoiser.denoise_flow(noise, torch.ones(256, dtype=torch.float64))
        assert (at_noise - data.mean(0)).pow(2).mean().sqrt() < 0.1
        # a real denoiser at sigma = 0.5: far better than returning the noisy input or the mean
        sigma = torch.full((256,), 0.5, dtype=torch.float64)
        err = (denoiser.denoise_ve(x0 + 0.5 * noise, sigma) - x0).pow(2).mean().sqrt()
        assert err < 0.5 * min(0.5, (x0 - data.mean(0)).pow(2).mean().sqrt())
